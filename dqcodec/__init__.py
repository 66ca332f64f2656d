"""dqc: a learned lossy image codec with dynamic-granularity vector quantization."""

from __future__ import annotations

__version__ = "0.4.2"

from typing import TYPE_CHECKING  # noqa: E402

from dqcodec.errors import (  # noqa: E402
    CorruptFileError,
    DQCError,
    DQCWarning,
    FormatError,
    IntegrityError,
    MetadataWarning,
    ModelMismatchError,
    SizeLimitError,
    TargetWarning,
)
from dqcodec.pillow_plugin import register as _register_pillow_plugin  # noqa: E402

if TYPE_CHECKING:
    from dqcodec.decoding import decode
    from dqcodec.encoding import encode

__all__ = [
    "encode",
    "decode",
    "DQCError",
    "FormatError",
    "IntegrityError",
    "CorruptFileError",
    "ModelMismatchError",
    "SizeLimitError",
    "DQCWarning",
    "TargetWarning",
    "MetadataWarning",
    "__version__",
]

_register_pillow_plugin()


def __getattr__(name: str) -> object:
    # encode and decode import torch (seconds); the CLI's help and `info` need neither
    if name == "encode":
        from dqcodec.encoding import encode

        return encode
    if name == "decode":
        from dqcodec.decoding import decode

        return decode
    raise AttributeError(f"module 'dqcodec' has no attribute {name!r}")
