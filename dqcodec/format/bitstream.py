"""The .dqc container (specified byte by byte in bitstream_spec/FORMAT.md).

    file   = SIGNATURE version:u8 chunk*
    chunk  = length:u32be type:4 ascii payload:length bytes crc32(type + payload):u32be

Chunks: HEAD (first, once), optional RSMP (coded picture size, before any TILE), TILE (one per
tile, in raster order), optional CCOR (colour correction, version 3) and FLAT (flat blocks,
version 4), ICCP and EXIF, and END
(last, empty). Integers are big-endian. Every failure raises FormatError (or its kin).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from dqcodec.errors import CorruptFileError, FormatError, ModelMismatchError

SIGNATURE = b"\x89DQC\r\n\x1a\n"
# of files with a FLAT chunk; one without is written as version 3 if it has a CCOR chunk (dqc 0.3
# reads it), else as version 2 (dqc 0.2 reads it)
FORMAT_VERSION = 4
READ_VERSIONS = (2, 3, 4)  # 1: dqc 0.1, float prior (files decoded only on machines of the kind that wrote them)
MODEL_ID_BYTES = 16
COLOR_RGB, COLOR_GRAY = 0, 1
_HEAD = struct.Struct(">IIBH16sHH4BB")
_TILE = struct.Struct(">III")
_RSMP = struct.Struct(">II")
MAX_CHUNK = 1 << 30
# Group periods a file may use: 8 gives 64 prior passes per stream (the encoder writes 4); a larger
# period multiplies the passes a decoder runs before a corrupt tile's CRC can refuse it (64: 4096).
MAX_PERIOD = 8
ONCE = (b"HEAD", b"RSMP", b"CCOR", b"FLAT", b"ICCP", b"EXIF", b"xmp ", b"sett")  # chunks a file may hold at most once
_SETT = struct.Struct(">3BBfBBB")
SETTINGS_MODES = ("quality", "bpp", "target")
SETTINGS_METRICS = ("psnr", "ms-ssim", "ssimulacra2")
SETTINGS_TUNES = ("ssim", "psnr")


@dataclass(frozen=True)
class Settings:
    """How the file was made (the ancillary `sett` chunk, informational: decoders may skip it)."""

    dqc: tuple[int, int, int]  # the version of dqc that wrote it
    mode: str  # "quality" (-q), "bpp" (--bpp) or "target" (--target)
    value: float  # the -q, the target rate or the target's value
    metric: str  # of a target ("psnr" otherwise)
    tune: str
    effort: int

    def pack(self) -> bytes:
        mode, metric, tune = (SETTINGS_MODES.index(self.mode), SETTINGS_METRICS.index(self.metric),
                              SETTINGS_TUNES.index(self.tune))  # fmt: skip
        return _SETT.pack(*self.dqc, mode, self.value, metric, tune, self.effort)

    @classmethod
    def unpack(cls, payload: bytes) -> Settings | None:
        """None where the payload is not one this dqc reads (it is informational: never an error)."""
        if len(payload) < _SETT.size:
            return None
        *dqc, mode, value, metric, tune, effort = _SETT.unpack_from(payload)
        if mode >= len(SETTINGS_MODES) or metric >= len(SETTINGS_METRICS) or tune >= len(SETTINGS_TUNES):
            return None
        return cls(tuple(dqc), SETTINGS_MODES[mode], value, SETTINGS_METRICS[metric], SETTINGS_TUNES[tune], effort)

    def __str__(self) -> str:
        how = {"quality": f"-q {self.value:g}", "bpp": f"--bpp {self.value:g}"}.get(
            self.mode, f"--target {self.metric}={self.value:g}"
        )
        return f"{how} --tune {self.tune} --effort {self.effort} (dqc {'.'.join(map(str, self.dqc))})"


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    color: int  # COLOR_RGB or COLOR_GRAY
    tile_size: int  # pixels per tile side
    model_id: bytes  # MODEL_ID_BYTES, hash of the model weights
    share_fine: int  # region shares in 1/65535
    share_medium: int
    periods: tuple[int, int, int, int]  # group schedule of the prior (MAP, C0, C1, C2)
    precision: int  # bits of the integer probabilities

    def pack(self) -> bytes:
        return _HEAD.pack(
            self.width, self.height, self.color, self.tile_size, self.model_id,
            self.share_fine, self.share_medium, *self.periods, self.precision,
        )  # fmt: skip

    @classmethod
    def unpack(cls, payload: bytes) -> Header:
        if len(payload) != _HEAD.size:
            raise FormatError(f"HEAD chunk has {len(payload)} bytes, expected {_HEAD.size}")
        w, h, color, tile, mid, sf, sm, p0, p1, p2, p3, prec = _HEAD.unpack(payload)
        if w == 0 or h == 0:
            raise FormatError("image size in HEAD is zero")
        if color not in (COLOR_RGB, COLOR_GRAY):
            raise FormatError(f"unknown color mode {color} in HEAD")
        if tile == 0 or tile % 16:
            raise FormatError(f"tile size {tile} in HEAD is not a positive multiple of 16")
        check_periods((p0, p1, p2, p3))
        return cls(w, h, color, tile, mid, sf, sm, (p0, p1, p2, p3), prec)


def check_periods(periods: tuple[int, ...]) -> None:
    for p in periods:
        if p == 0 or p & (p - 1) or p > MAX_PERIOD:
            raise FormatError(f"group period {p} is not a power of two up to {MAX_PERIOD}")


def check_coded_size(width: int, height: int, coded: tuple[int, int]) -> None:
    """The RSMP size must come from a scale of 1/4 to 2: per axis 4 * coded >= n - 2 and
    coded <= 2 * n (the encoder rounds n * scale). This bounds what resampling allocates."""
    for n, c, axis in ((width, coded[0], "width"), (height, coded[1], "height")):
        if c == 0 or 4 * c < n - 2 or c > 2 * n:
            raise FormatError(f"coded {axis} {c} in RSMP is not a scale of 1/4 to 2 of the image's {n}")


def num_tiles(width: int, height: int, tile_size: int) -> int:
    """Tiles of a coded picture: ceil(ceil16(height) / tile_size) * ceil(ceil16(width) / tile_size)."""
    return -(-_pad16(height) // tile_size) * -(-_pad16(width) // tile_size)


def _pad16(n: int) -> int:
    return -(-n // 16) * 16


@dataclass(frozen=True)
class Tile:
    index: int
    num_symbols: int
    symbol_crc: int  # CRC-32 of the tile's symbols as little-endian int32, in coding order
    data: bytes  # range-coded 32-bit words, little-endian

    def pack(self) -> bytes:
        return _TILE.pack(self.index, self.num_symbols, self.symbol_crc) + self.data

    @classmethod
    def unpack(cls, payload: bytes) -> Tile:
        if len(payload) < _TILE.size or (len(payload) - _TILE.size) % 4:
            raise FormatError("TILE chunk has a malformed length")
        index, n, crc = _TILE.unpack_from(payload)
        return cls(index, n, crc, payload[_TILE.size :])


@dataclass
class Container:
    header: Header
    tiles: list[Tile]
    icc_profile: bytes | None = None
    exif: bytes | None = None
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)  # unknown ancillary chunks, kept
    coded_size: tuple[int, int] | None = None  # (width, height) of the coded picture when it was resampled
    xmp: bytes | None = None  # XMP packet of the source image (ancillary: readers may skip it)
    colour: bytes | None = None  # CCOR payload: the colour correction (`dqcodec.format.colour`), version 3
    version: int = FORMAT_VERSION
    settings: Settings | None = None  # how the file was made (ancillary)
    flat: bytes | None = None  # FLAT payload: the flat blocks (`dqcodec.format.flat`), version 4

    @property
    def coded_width(self) -> int:
        return self.coded_size[0] if self.coded_size else self.header.width

    @property
    def coded_height(self) -> int:
        return self.coded_size[1] if self.coded_size else self.header.height


def _chunk(kind: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_CHUNK:
        raise FormatError(f"a {_name(kind)} chunk of {len(payload)} bytes is over the format's {MAX_CHUNK}")
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write(container: Container) -> bytes:
    """The file's bytes; a container this format cannot hold (a period, a coded size or a chunk
    out of bounds) raises FormatError, so no file is written that `read` refuses."""
    hd = container.header
    check_periods(hd.periods)
    # a file is written as the oldest version that holds it, so that older dqc read it too
    version = 4 if container.flat else 3 if container.colour else 2
    parts = [SIGNATURE, bytes([version]), _chunk(b"HEAD", hd.pack())]
    if container.coded_size:
        check_coded_size(hd.width, hd.height, container.coded_size)
        parts.append(_chunk(b"RSMP", _RSMP.pack(*container.coded_size)))
    if container.icc_profile:
        parts.append(_chunk(b"ICCP", container.icc_profile))
    if container.exif:
        parts.append(_chunk(b"EXIF", container.exif))
    if container.xmp:
        parts.append(_chunk(b"xmp ", container.xmp))
    if container.settings:
        parts.append(_chunk(b"sett", container.settings.pack()))
    parts += [_chunk(b"TILE", t.pack()) for t in container.tiles]
    if container.colour:
        parts.append(_chunk(b"CCOR", container.colour))
    if container.flat:
        parts.append(_chunk(b"FLAT", container.flat))
    parts.append(_chunk(b"END ", b""))
    return b"".join(parts)


def read(data: bytes, expected_model_id: bytes | None = None) -> Container:
    """Parse and check a whole file. With `expected_model_id`, a file made by other weights is
    refused with ModelMismatchError before any tile is read. Bytes that are not a .dqc file, or a
    version this dqc does not read, raise FormatError; a .dqc file whose chunks do not parse,
    CorruptFileError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("expected the bytes of a .dqc file")
    data = bytes(data)
    if len(data) < len(SIGNATURE) + 1 or not data.startswith(SIGNATURE):
        raise FormatError("not a .dqc file (signature missing)")
    version = data[len(SIGNATURE)]
    if version not in READ_VERSIONS:
        raise FormatError(version_message(version))
    try:
        return _read_chunks(data, version, expected_model_id)
    except (FormatError, ModelMismatchError) as e:
        if type(e) is FormatError:
            raise CorruptFileError(f"{e} (the file is corrupt)" if "corrupt" not in str(e) else str(e)) from None
        raise


def _read_chunks(data: bytes, version: int, expected_model_id: bytes | None) -> Container:
    pos = len(SIGNATURE) + 1
    header: Header | None = None
    tiles: list[Tile] = []
    icc = exif = xmp = colour = flat = None
    settings: Settings | None = None
    coded_size: tuple[int, int] | None = None
    extra: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    while True:
        if pos + 8 > len(data):
            raise FormatError("file is truncated (no END chunk)")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if length > MAX_CHUNK or pos + 12 + length > len(data):
            raise FormatError(f"file is truncated inside a {_name(kind)} chunk")
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + payload) != crc:
            raise FormatError(f"checksum mismatch in a {_name(kind)} chunk (the file is corrupt)")
        pos += 12 + length
        if header is None and kind != b"HEAD":
            raise FormatError("first chunk is not HEAD")
        if kind in ONCE:
            if kind in seen:
                raise FormatError(f"more than one {_name(kind)} chunk")
            seen.add(kind)
        if kind == b"HEAD":
            header = Header.unpack(payload)
            if expected_model_id is not None and header.model_id != expected_model_id:
                raise ModelMismatchError(
                    f"file was made with model {header.model_id.hex()}, this dqc has model {expected_model_id.hex()}"
                )
        elif kind == b"RSMP":
            if tiles:
                raise FormatError("RSMP chunk after a TILE chunk")
            if len(payload) != _RSMP.size:
                raise FormatError(f"RSMP chunk has {len(payload)} bytes, expected {_RSMP.size}")
            coded_size = _RSMP.unpack(payload)
            assert header is not None
            check_coded_size(header.width, header.height, coded_size)
        elif kind == b"TILE":
            tiles.append(Tile.unpack(payload))
        elif kind == b"CCOR" and version >= 3:
            colour = payload
        elif kind == b"FLAT" and version >= 4:
            flat = payload
        elif kind == b"ICCP":
            icc = payload
        elif kind == b"EXIF":
            exif = payload
        elif kind == b"xmp ":
            xmp = payload
        elif kind == b"sett":
            settings = Settings.unpack(payload)
        elif kind == b"END ":
            if length:
                raise FormatError("END chunk is not empty")
            break
        elif 65 <= kind[0] <= 90:  # upper-case first letter: critical, cannot be skipped
            raise FormatError(f"unknown critical chunk {_name(kind)}")
        else:
            extra.append((kind, payload))
    if pos != len(data):
        raise FormatError("bytes after the END chunk")
    assert header is not None
    c = Container(header, tiles, icc, exif, extra, coded_size, xmp, colour, version, settings, flat)
    expected = num_tiles(c.coded_width, c.coded_height, header.tile_size)
    if len(tiles) != expected:
        raise FormatError(f"file has {len(tiles)} tiles, its header needs {expected}")
    for i, t in enumerate(tiles):
        if t.index != i:
            raise FormatError(f"tile {i} is out of order (index {t.index})")
    return c


def version_message(version: int) -> str:
    from dqcodec import __version__

    made = " (made by dqc 0.1, whose float prior was not portable; re-encode the original)" if version == 1 else ""
    return (
        f"unsupported .dqc format version {version}{made}; this dqc {__version__} reads format versions "
        f"{', '.join(map(str, READ_VERSIONS[:-1]))} and {READ_VERSIONS[-1]}"
    )


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))
