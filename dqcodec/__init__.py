"""dqc: a learned lossy image codec with dynamic-granularity vector quantization."""

from dqcodec.codec import decode, encode
from dqcodec.errors import DQCError, FormatError, IntegrityError, ModelMismatchError

__version__ = "0.1.0"
__all__ = ["encode", "decode", "DQCError", "FormatError", "IntegrityError", "ModelMismatchError", "__version__"]

from dqcodec.pillow_plugin import register as _register_pillow_plugin  # noqa: E402

_register_pillow_plugin()
