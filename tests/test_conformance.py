"""The conformance vectors of bitstream_spec/ decode as specified (or are refused as specified),
by dqc and by the independent numpy reference of the integer prior."""

import hashlib
import importlib.util
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dqcodec
from dqcodec import errors
from dqcodec.decoding import decode_tokens
from dqcodec.format import bitstream, colour, flat
from dqcodec.format.coding import digests
from dqcodec.format.tokens import Schedule

SPEC = Path(__file__).parent.parent / "bitstream_spec"
VECTORS = SPEC / "conformance"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
WEIGHTS = Path(dqcodec.__file__).parent / "weights" / "prior_dq.npz"


def reference_module():
    spec = importlib.util.spec_from_file_location("reference_prior", SPEC / "reference_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("vec", EXPECTED["valid"], ids=lambda v: v["file"])
def test_valid_vector_decodes(vec: dict) -> None:
    blob = (VECTORS / vec["file"]).read_bytes()
    c = bitstream.read(blob)
    assert (c.header.width, c.header.height, c.header.color) == (vec["width"], vec["height"], vec["color"])
    assert (c.coded_width, c.coded_height) == (vec["coded_width"], vec["coded_height"])
    assert [t.symbol_crc for t in c.tiles] == vec["symbol_crcs"]
    # the symbols and tokens are exact on every machine (IntegrityError if a tile's symbols differ)
    c, tokens = decode_tokens(blob)
    got = digests(tokens.levels[0], tuple(i[0] for i in tokens.idx), Schedule(c.header.periods))
    assert got == (vec["symbols_sha256"], vec["tokens_sha256"])
    assert c.version == vec.get("version", 2)
    assert (None if c.settings is None else str(c.settings)) == vec.get("settings")  # the ancillary sett chunk
    if vec.get("flat_sha256"):  # and so are the flat blocks
        found = flat.unpack(c.flat, c.header.width, c.header.height)
        blob_digest = hashlib.sha256(found.flags.astype(np.uint8).tobytes() + found.colours.tobytes()).hexdigest()
        assert blob_digest == vec["flat_sha256"]
    else:
        assert c.flat is None
    if vec.get("colour_sha256"):  # the colour correction's offsets are exact too
        offsets = colour.unpack(c.colour, c.header.width, c.header.height).offsets
        assert hashlib.sha256(offsets.astype("<i2").tobytes()).hexdigest() == vec["colour_sha256"]
    else:
        assert c.colour is None
    # the picture comes from the float synthesis transform: within a stated tolerance
    out = np.asarray(dqcodec.decode(blob), dtype=np.int16)
    ref = np.asarray(Image.open(VECTORS / vec["decoded"]), dtype=np.int16)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= vec["max_pixel_diff"]


@pytest.mark.parametrize(
    "name",
    [
        "rocket_psnr_q60.dqc",
        "astronaut_q75.dqc",
        "chelsea_wide_q50.dqc",
        "v3_astronaut_q50.dqc",
        "v3_flat_red_q50.dqc",
        "v4_flat_chart_q50.dqc",
        "v4_flat_gray_q50.dqc",
    ],
)
def test_reference_implementation_decodes_vector(name: str) -> None:
    """bitstream_spec/reference_prior.py (numpy int64, no torch, no dqcodec) decodes the file to
    the same symbols and tokens: the spec is complete enough for a second implementation."""
    ref = reference_module()
    vec = next(v for v in EXPECTED["valid"] if v["file"] == name)
    symbols, levels, idx = ref.decode_file(ref.ReferencePrior(WEIGHTS), (VECTORS / name).read_bytes())
    assert [zlib.crc32(np.asarray(s, dtype="<i4").tobytes()) for s in symbols] == vec["symbol_crcs"]
    stream = b"".join(np.asarray(s, dtype="<i4").tobytes() for s in symbols)
    assert hashlib.sha256(stream).hexdigest() == vec["symbols_sha256"]
    assert ref.token_digest(levels, idx) == vec["tokens_sha256"]
    offsets = ref.colour_offsets((VECTORS / name).read_bytes())
    assert (offsets is None and not vec.get("colour_sha256")) or ref.colour_digest(offsets) == vec["colour_sha256"]
    found = ref.flat_blocks((VECTORS / name).read_bytes())
    assert (found is None and not vec.get("flat_sha256")) or ref.flat_digest(*found) == vec["flat_sha256"]


@pytest.mark.parametrize("vec", EXPECTED["invalid"], ids=lambda v: v["file"])
def test_invalid_vector_is_refused(vec: dict) -> None:
    with pytest.raises(getattr(errors, vec["error"])):
        dqcodec.decode((VECTORS / vec["file"]).read_bytes())


def test_version_1_file_names_both_versions() -> None:
    with pytest.raises(errors.FormatError, match="format version 1 .*reads format versions 2, 3 and 4"):
        dqcodec.decode((VECTORS / "version1.dqc").read_bytes())
