"""The package's layout is its architecture: the decoder never reaches the encoder's choices.

`dqcodec/format/` (what FORMAT.md specifies), `dqcodec/models/` and `dqcodec/decoding.py` make
up the decode path; `dqcodec/encoder/` holds what only the encoder needs (docs/architecture.md)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dqcodec

PACKAGE = Path(dqcodec.__file__).parent
VECTORS = PACKAGE.parent / "bitstream_spec" / "conformance"
DECODE_PATH = [
    PACKAGE / "decoding.py",
    *sorted((PACKAGE / "format").glob("*.py")),
    *sorted((PACKAGE / "models").glob("*.py")),
]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", DECODE_PATH, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_of_the_decode_path_imports_the_encoder(path: Path) -> None:
    reached = {m for m in imported_modules(path) if m == "dqcodec.encoder" or m.startswith("dqcodec.encoder.")}
    assert not reached, f"{path.name} imports {sorted(reached)}"


def test_the_encoder_package_holds_what_the_decode_path_does_not() -> None:
    """The check above must have something to find: the encoder's modules are there, and the
    encode path does import them."""
    assert {"ratecontrol.py", "refine.py", "colour_fit.py"} <= {p.name for p in (PACKAGE / "encoder").glob("*.py")}
    assert any(m.startswith("dqcodec.encoder") for m in imported_modules(PACKAGE / "encoding.py"))


@pytest.mark.parametrize("vector", ["v4_flat_chart_q50.dqc", "v4_chelsea_wide_q50_scale1.5.dqc"])
def test_decoding_loads_nothing_of_the_encoder(vector: str) -> None:
    """Files with every decoder-side chunk (RSMP, CCOR, FLAT), decoded in a fresh interpreter by
    `dqcodec.decode` and by the Pillow plugin: no module of dqcodec.encoder is ever imported
    (python -X importtime lists every import). The `dqc` command itself parses the encoder's
    options too (`--effort`'s levels), so it is not the decoder."""
    path = VECTORS / vector
    script = (
        "import sys, dqcodec; from PIL import Image; "
        f"dqcodec.decode(open({str(path)!r}, 'rb').read()); Image.open({str(path)!r}).load()"
    )
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    imports = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "dqcodec.format.coding" in imports and "dqcodec.models.transform" in imports  # the listing shows dqc's
    assert not [m for m in imports if m.startswith("dqcodec.encoder")]
