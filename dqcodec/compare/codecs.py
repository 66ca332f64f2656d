"""The codecs `dqc compare` sweeps: dqc's two models and Pillow's JPEG, WebP, AVIF and JPEG XL.

A codec is named as on the command line: a family, then options, "dq", "dq:effort=5",
"dq:tune=psnr", "avif:speed=6". Every point is a real round trip: the file its own encoder
wrote, decoded by its own decoder (dqc's, or the library Pillow links: libjpeg, libwebp,
libavif, libjxl through pillow-jxl-plugin).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dqcodec.errors import DQCError

LEARNED = ("dq", "vqgan")
# family -> (Pillow format, file extension, save options, lowest and highest quality swept)
PILLOW = {
    "jpeg": ("JPEG", "jpg", {"optimize": True}, (1, 99)),
    "webp": ("WEBP", "webp", {"method": 6}, (0, 100)),
    "avif": ("AVIF", "avif", {"speed": 4}, (0, 100)),
    "jxl": ("JXL", "jxl", {"effort": 7}, (0, 99)),  # 100 would be lossless
}
FAMILIES = (*LEARNED, *PILLOW)
LEARNED_OPTIONS = {"effort": int, "tune": str}
DEFAULT_CODECS = ("dq", "vqgan", "jpeg", "webp", "avif", "jxl")


@dataclass(frozen=True)
class Setting:
    """What an encoder is asked for: a quality (`-q`, or a Pillow quality) or a rate (`--bpp`)."""

    kind: str  # "quality" or "bpp"
    value: float

    def __str__(self) -> str:
        return f"q{self.value:g}" if self.kind == "quality" else f"bpp{self.value:.4f}"

    @classmethod
    def parse(cls, text: str) -> Setting:
        """The inverse of str(): 'q40' or 'bpp0.1250'."""
        return cls("quality", float(text[1:])) if text.startswith("q") else cls("bpp", float(text[3:]))


@dataclass(frozen=True)
class Codec:
    name: str  # as the user wrote it
    family: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def learned(self) -> bool:
        return self.family in LEARNED

    @property
    def extension(self) -> str:
        return "dqc" if self.learned else PILLOW[self.family][1]

    @property
    def quality_range(self) -> tuple[int, int]:
        return (0, 100) if self.learned else PILLOW[self.family][3]

    def version(self) -> str:
        """Changes when the codec's output may: part of the cache's key."""
        import PIL

        if self.learned:
            import dqcodec

            return f"dqc {dqcodec.__version__}"
        if self.family == "jxl":
            from importlib.metadata import version

            return f"pillow-jxl-plugin {version('pillow-jxl-plugin')}"
        from PIL import features

        lib = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[self.family]
        return f"Pillow {PIL.__version__} lib{self.family} {features.version(lib)}"

    def encode(self, img: Image.Image, setting: Setting) -> bytes:
        if self.learned:
            import warnings

            import dqcodec

            opts = dict(self.options)
            with warnings.catch_warnings():  # a rate below the image's reach gives its smallest file
                warnings.simplefilter("ignore")
                if setting.kind == "bpp":
                    return dqcodec.encode(img, model=self.family, target_bpp=setting.value, **opts)
                return dqcodec.encode(img, model=self.family, quality=setting.value, **opts)
        fmt, _, save_options, _ = PILLOW[self.family]
        if self.family == "jxl":
            import pillow_jxl  # noqa: F401  registers JPEG XL with Pillow
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=int(setting.value), **(save_options | dict(self.options)))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        if self.learned:
            import dqcodec

            return np.asarray(dqcodec.decode(data).convert("RGB"))
        if self.family == "jxl":
            import pillow_jxl  # noqa: F401
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def parse_codec(name: str) -> Codec:
    """'dq:effort=5' -> Codec('dq:effort=5', 'dq', (('effort', 5),))."""
    family, *parts = name.strip().split(":")
    if family not in FAMILIES:
        raise DQCError(f"--codecs: unknown codec {family!r}; known: {', '.join(FAMILIES)}")
    options: list[tuple[str, object]] = []
    for part in parts:
        key, _, value = part.partition("=")
        if not value:
            raise DQCError(f"--codecs: {name!r}: options are key=value, such as dq:effort=5")
        if family in LEARNED:
            if key not in LEARNED_OPTIONS:
                raise DQCError(f"--codecs: {name!r}: {family} takes {', '.join(LEARNED_OPTIONS)}")
            options.append((key, LEARNED_OPTIONS[key](value)))
        else:
            options.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return Codec(name.strip(), family, tuple(options))


def missing_reason(codec: Codec) -> str | None:
    """Why this codec cannot run here, or None."""
    if codec.learned:
        return None
    if codec.family == "jxl":
        try:
            import pillow_jxl  # noqa: F401
        except ImportError:
            return "needs pillow-jxl-plugin (pip install 'dqcodec[compare]')"
        return None
    from PIL import features

    lib = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[codec.family]
    return None if features.check(lib) else f"this Pillow has no {lib} support"
