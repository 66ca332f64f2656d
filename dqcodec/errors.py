"""The library's error class: everything dqc reports to a user is a DQCError."""


class DQCError(Exception):
    """A clear, one-line problem with an input, a file or the installed model."""


class FormatError(DQCError):
    """The bytes are not a valid .dqc file of a version this dqc reads."""


class ModelMismatchError(DQCError):
    """The file was written with other model weights than the ones installed."""


class IntegrityError(DQCError):
    """Decoding did not reproduce what the encoder wrote (corrupt file or prior mismatch)."""


class CorruptFileError(FormatError, IntegrityError):
    """A .dqc file (its signature and version are right) whose chunks do not parse: damaged, or
    cut short. Both a FormatError and an IntegrityError: `dqc` exits 3 for it, as for a tile whose
    symbols do not match their checksum."""


class SizeLimitError(DQCError):
    """The picture is larger than the caller allowed (time and memory grow with its pixels)."""


class ImageFileError(DQCError, OSError):
    """A DQCError raised through the Pillow plugin: Pillow's callers catch OSError."""


class DQCWarning(UserWarning):
    """The encoder did something other than it was asked, and says so (the CLI prints a note)."""


class TargetWarning(DQCWarning):
    """The encoder could not reach what it was asked for (a rate or a quality) and did the nearest."""


class MetadataWarning(DQCWarning):
    """Metadata the format cannot carry (a chunk over its size limit) was left out."""


class ArgumentError(DQCError, ValueError):
    """An argument of the API that dqc cannot take (wrong type, out of range, unknown device)."""
