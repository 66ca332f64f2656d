import struct
import zlib

import numpy as np
import pytest

import dqcodec
from dqcodec.errors import DQCError, FormatError, IntegrityError, ModelMismatchError
from dqcodec.format import bitstream


def make_container(num_tiles: int = 2) -> bitstream.Container:
    header = bitstream.Header(300, 200, bitstream.COLOR_RGB, 256, bytes(range(16)), 1000, 30000, (4, 4, 2, 8), 20)
    assert bitstream.num_tiles(header.width, header.height, header.tile_size) == num_tiles
    tiles = [bitstream.Tile(i, 10 + i, 0xDEADBEEF - i, bytes(range(8 * (i + 1)))) for i in range(num_tiles)]
    return bitstream.Container(header, tiles, icc_profile=b"icc-bytes", exif=b"Exif\0\0data")


def test_container_round_trip() -> None:
    c = make_container()
    data = bitstream.write(c)
    assert data.startswith(bitstream.SIGNATURE)
    back = bitstream.read(data)
    assert back.header == c.header
    assert back.tiles == c.tiles
    assert back.icc_profile == c.icc_profile and back.exif == c.exif


def test_future_version_is_named() -> None:
    data = bytearray(bitstream.write(make_container()))
    data[len(bitstream.SIGNATURE)] = 7
    with pytest.raises(FormatError, match=r"version 7; this dqc \d+\.\d+\.\d+ reads format versions 2, 3 and 4"):
        bitstream.read(bytes(data))


def test_version_1_file_names_both_versions() -> None:
    data = bytearray(bitstream.write(make_container()))
    data[len(bitstream.SIGNATURE)] = 1
    expected = r"version 1 \(made by dqc 0\.1.*re-encode.*this dqc \d+\.\d+\.\d+ reads format versions 2, 3 and 4"
    with pytest.raises(FormatError, match=expected):
        bitstream.read(bytes(data))


def test_wrong_model_id_names_both() -> None:
    data = bitstream.write(make_container())
    with pytest.raises(ModelMismatchError, match="000102.*this dqc has model ffff"):
        bitstream.read(data, expected_model_id=b"\xff" * 16)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_unknown_chunks() -> None:
    data = bitstream.write(make_container())
    end = data.rindex(b"END ") - 4
    ancillary = data[:end] + _chunk(b"fUTR", b"later") + data[end:]
    assert bitstream.read(ancillary).extra == [(b"fUTR", b"later")]
    critical = data[:end] + _chunk(b"FUTR", b"later") + data[end:]
    with pytest.raises(FormatError, match="unknown critical chunk"):
        bitstream.read(critical)


def test_not_a_dqc_file() -> None:
    for junk in (b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"hello world"):
        with pytest.raises(FormatError):
            bitstream.read(junk)


def test_every_truncation_is_a_library_error(small_file: bytes) -> None:
    for n in range(len(small_file)):
        with pytest.raises(DQCError):
            dqcodec.decode(small_file[:n])


def test_random_byte_flips_are_library_errors(small_file: bytes) -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        data = bytearray(small_file)
        for pos in rng.choice(len(data), size=int(rng.integers(1, 4)), replace=False):
            data[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(DQCError):
            dqcodec.decode(bytes(data))


def test_corrupt_tile_with_valid_chunk_crc_is_caught(small_file: bytes) -> None:
    """Damage inside range-coded data that a re-computed chunk CRC hides: the symbol checksum
    must still refuse to show a wrong picture."""
    c = bitstream.read(small_file)
    t = c.tiles[0]
    caught = 0
    for i in range(0, len(t.data), max(1, len(t.data) // 12)):
        bad = bytearray(t.data)
        bad[i] ^= 0x5A
        c.tiles[0] = bitstream.Tile(t.index, t.num_symbols, t.symbol_crc, bytes(bad))
        with pytest.raises(IntegrityError):
            dqcodec.decode(bitstream.write(c))
        caught += 1
    assert caught >= 5


def test_resampled_picture_size_sets_the_tile_count() -> None:
    c = make_container()  # 300x200 shown (2 tiles), 600x400 coded: 3 x 2 tiles of 256 px
    c.coded_size = (600, 400)
    c.tiles = [bitstream.Tile(i, 1, 0, b"") for i in range(6)]
    back = bitstream.read(bitstream.write(c))
    assert back.coded_size == (600, 400) and (back.coded_width, back.header.width) == (600, 300)
    c.tiles = c.tiles[:2]  # the tile count of the shown size is not enough
    with pytest.raises(FormatError, match="tiles"):
        bitstream.read(bitstream.write(c))


def test_rsmp_after_tiles_or_empty_is_refused() -> None:
    data = bitstream.write(make_container())
    end = data.rindex(b"END ") - 4
    with pytest.raises(FormatError, match="after a TILE"):
        bitstream.read(data[:end] + _chunk(b"RSMP", struct.pack(">II", 300, 200)) + data[end:])
    head_end = data.index(b"TILE") - 4
    zero = data[:head_end] + _chunk(b"RSMP", struct.pack(">II", 0, 200)) + data[head_end:]
    with pytest.raises(FormatError, match="coded width 0 in RSMP"):
        bitstream.read(zero)


def _file(header: bytes, *chunks: bytes) -> bytes:
    return bitstream.SIGNATURE + bytes([bitstream.FORMAT_VERSION]) + _chunk(b"HEAD", header) + b"".join(chunks)


def _head(width: int, height: int, periods: tuple[int, int, int, int] = (4, 4, 4, 4)) -> bytes:
    return bitstream.Header(width, height, 0, 256, bytes(16), 0, 0, periods, 20).pack()


def test_rsmp_size_must_come_from_a_scale_of_a_quarter_to_two() -> None:
    def tiles(coded: tuple[int, int]) -> bytes:
        n = bitstream.num_tiles(*coded, 256)
        return b"".join(_chunk(b"TILE", bitstream.Tile(i, 0, 0, b"").pack()) for i in range(n)) + _chunk(b"END ", b"")

    end = tiles((64, 64))
    ok = [((300, 200), (75, 50)), ((300, 200), (600, 400)), ((1, 1), (2, 2)), ((9, 9), (2, 2))]
    for (w, h), coded in ok:
        rsmp = _chunk(b"RSMP", struct.pack(">II", *coded))
        assert bitstream.read(_file(_head(w, h), rsmp, tiles(coded))).coded_size == coded
    # the 121-byte memory bomb: a 4194304x15 picture resampled from 64x64
    for (w, h), coded in [((4194304, 15), (64, 64)), ((300, 200), (601, 400)), ((300, 200), (74, 50))]:
        with pytest.raises(FormatError, match="not a scale of 1/4 to 2"):
            bitstream.read(_file(_head(w, h), _chunk(b"RSMP", struct.pack(">II", *coded)), end))
    c = make_container()
    c.coded_size = (1000, 200)
    with pytest.raises(FormatError, match="not a scale"):  # the writer refuses what the reader would
        bitstream.write(c)


def test_periods_over_eight_are_refused_on_both_sides() -> None:
    end = _chunk(b"TILE", bitstream.Tile(0, 0, 0, b"").pack()) + _chunk(b"END ", b"")
    assert bitstream.read(_file(_head(16, 16, (8, 8, 8, 8)), end)).header.periods == (8, 8, 8, 8)
    with pytest.raises(FormatError, match="group period 16"):
        bitstream.read(_file(_head(16, 16, (4, 4, 4, 16)), end))
    c = make_container()
    c.header = bitstream.Header(300, 200, 0, 256, bytes(16), 0, 0, (4, 64, 4, 4), 20)
    with pytest.raises(FormatError, match="group period 64"):
        bitstream.write(c)
    from dqcodec.format.tokens import Schedule

    with pytest.raises(DQCError, match="group period 16"):
        dqcodec.encode(np.zeros((16, 16, 3), np.uint8), schedule=Schedule((4, 4, 16, 4)))


@pytest.mark.parametrize("kind", [b"ICCP", b"EXIF", b"xmp ", b"RSMP", b"HEAD"])
def test_chunks_allowed_once_are_refused_when_repeated(kind: bytes) -> None:
    data = bitstream.write(make_container())
    head_end = data.index(b"TILE") - 4
    payload = struct.pack(">II", 300, 200) if kind == b"RSMP" else _head(300, 200) if kind == b"HEAD" else b"x"
    twice = data[:head_end] + _chunk(kind, payload) + _chunk(kind, payload) + data[head_end:]
    with pytest.raises(FormatError, match=f"more than one {kind.decode()!r} chunk"):
        bitstream.read(twice)


def test_writer_keeps_to_the_chunk_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bitstream, "MAX_CHUNK", 1000)  # the format's 2**30, scaled down for the test
    c = make_container()
    c.icc_profile = bytes(1001)
    with pytest.raises(FormatError, match="'ICCP' chunk of 1001 bytes is over"):
        bitstream.write(c)
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.warns(dqcodec.MetadataWarning, match="EXIF block .1001 bytes. is over"):
        data = dqcodec.encode(img, exif=bytes(1001), xmp=b"<x/>")
    back = bitstream.read(data)
    assert back.exif is None and back.xmp == b"<x/>"
