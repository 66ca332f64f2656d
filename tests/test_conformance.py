"""The conformance vectors of bitstream_spec/ decode as specified (or are refused as specified)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dqcodec
from dqcodec import bitstream, errors

VECTORS = Path(__file__).parent.parent / "bitstream_spec" / "conformance"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())


@pytest.mark.parametrize("vec", EXPECTED["valid"], ids=lambda v: v["file"])
def test_valid_vector_decodes(vec: dict) -> None:
    blob = (VECTORS / vec["file"]).read_bytes()
    c = bitstream.read(blob)
    assert (c.header.width, c.header.height, c.header.color) == (vec["width"], vec["height"], vec["color"])
    assert (c.coded_width, c.coded_height) == (vec["coded_width"], vec["coded_height"])
    assert [t.symbol_crc for t in c.tiles] == vec["symbol_crcs"]
    out = np.asarray(dqcodec.decode(blob), dtype=np.int16)  # raises if any tile's symbols differ
    ref = np.asarray(Image.open(VECTORS / vec["decoded"]), dtype=np.int16)
    assert out.shape == ref.shape
    # tokens are bit-exact; the transform's floats may differ by rounding on another CPU
    assert np.abs(out - ref).max() <= 2


@pytest.mark.parametrize("vec", EXPECTED["invalid"], ids=lambda v: v["file"])
def test_invalid_vector_is_refused(vec: dict) -> None:
    with pytest.raises(getattr(errors, vec["error"])):
        dqcodec.decode((VECTORS / vec["file"]).read_bytes())
