"""The library's error class: everything dqc reports to a user is a DQCError."""


class DQCError(Exception):
    """A clear, one-line problem with an input, a file or the installed model."""


class FormatError(DQCError):
    """The bytes are not a valid .dqc file of a version this dqc reads."""


class ModelMismatchError(DQCError):
    """The file was written with other model weights than the ones installed."""


class IntegrityError(DQCError):
    """Decoding did not reproduce what the encoder wrote (corrupt file or prior mismatch)."""


class SizeLimitError(DQCError):
    """The picture is larger than the caller allowed (time and memory grow with its pixels)."""
