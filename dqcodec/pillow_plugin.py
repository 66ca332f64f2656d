"""Pillow plugin: after `import dqcodec`, `Image.open("x.dqc")` reads .dqc files and
`im.save("x.dqc", quality=50)` writes them (options: quality, bpp, target, tune, effort, scale,
model, icc_profile, exif, xmp)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageFile

from dqcodec.errors import DQCError, ImageFileError
from dqcodec.format import bitstream


@contextmanager
def _as_oserror() -> Iterator[None]:
    """Pillow's convention: a file it cannot read or write raises OSError."""
    try:
        yield
    except ImageFileError:
        raise
    except DQCError as e:
        raise ImageFileError(str(e)) from e


def _accept(prefix: bytes) -> bool:
    return prefix[: len(bitstream.SIGNATURE)] == bitstream.SIGNATURE


class DqcImageFile(ImageFile.ImageFile):
    format = "DQC"
    format_description = "dqc learned image codec"

    def _open(self) -> None:
        self._dqc_bytes = self.fp.read()
        with _as_oserror():
            header = bitstream.read(self._dqc_bytes).header
        self._size = (header.width, header.height)
        self._mode = "L" if header.color == bitstream.COLOR_GRAY else "RGB"
        self.tile = []
        self._dqc_done = False

    def load(self):  # noqa: ANN201 - Pillow's signature
        if not self._dqc_done:
            from dqcodec.decoding import decode

            with _as_oserror():
                img = decode(self._dqc_bytes)
            self.im = img.im
            self.info.update(img.info)
            self._dqc_done = True
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename: str | bytes) -> None:  # noqa: ANN001 - Pillow's signature
    from dqcodec.encoding import DEFAULT_EFFORT, DEFAULT_MODEL, DEFAULT_QUALITY, DEFAULT_TUNE, encode

    opts = im.encoderinfo
    exif = opts.get("exif")
    with _as_oserror():
        data = encode(
            im,
            quality=opts.get("quality", DEFAULT_QUALITY),
            target_bpp=opts.get("bpp"),
            target=opts.get("target"),
            tune=opts.get("tune", DEFAULT_TUNE),
            effort=opts.get("effort", DEFAULT_EFFORT),
            scale=opts.get("scale"),
            model=opts.get("model", DEFAULT_MODEL),
            icc_profile=opts.get("icc_profile", im.info.get("icc_profile")),
            exif=exif.tobytes() if isinstance(exif, Image.Exif) else exif,
            xmp=opts.get("xmp"),
        )
    fp.write(data)


def register() -> None:
    Image.register_open(DqcImageFile.format, DqcImageFile, _accept)
    Image.register_save(DqcImageFile.format, _save)
    Image.register_extension(DqcImageFile.format, ".dqc")
    Image.register_mime(DqcImageFile.format, "image/x-dqc")
