"""A .dqc file decodes to the same symbols on every CPU kind and thread count; at effort 0 it is
also written the same everywhere, and at higher efforts the same on one CPU kind at any thread
count (the refinement runs the float synthesis transform, which each kind rounds its own way).

The installed `dqc` runs in subprocesses under torch's instruction-set dispatch levels
(ATEN_CPU_CAPABILITY: default, avx2, and avx512 where the CPU has it), with oneDNN capped to the
same level (ONEDNN_MAX_CPU_ISA) and the prior's C attention kernel to its portable C, AVX2 or best
path (DQC_NATIVE_ISA), at 1, 2 and 4 threads; and once more with torch's attention instead of the
C kernel ("torch": DQC_NATIVE=0). At effort 0 every combination must write the same bytes; every
combination must decode the other combinations' files (each tile's symbol CRC is checked), and
give the same picture within the conformance tolerance (the synthesis transform is float: float32, or bfloat16
convolutions where the CPU has them).
"""

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

DQC = shutil.which("dqc", path=str(Path(sys.executable).parent)) or "dqc"
# avx512: oneDNN uncapped, so that a CPU with AVX512-BF16 or AMX decodes through bfloat16 convolutions
ISA = {"default": "SSE41", "avx2": "AVX2", "avx512": "ALL", "torch": "SSE41"}
NATIVE = {"default": {"DQC_NATIVE_ISA": "generic"}, "avx2": {"DQC_NATIVE_ISA": "avx2"}, "torch": {"DQC_NATIVE": "0"}}
THREADS = (1, 2, 4)
MAX_PIXEL_DIFF = 2


def cpu_capability() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().lower()


def levels() -> list[str]:
    return ["default", "avx2", "torch"] + (["avx512"] if cpu_capability() == "avx512" else [])


def dqc(*args: str, capability: str, threads: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DQC_NATIVE")}
    aten = "default" if capability == "torch" else capability
    env |= {"ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": ISA[capability], **NATIVE.get(capability, {})}
    r = subprocess.run([DQC, *args, "--threads", str(threads)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{capability} x{threads}: {r.stderr}"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiles of a photo, coded with all three granularities (both tunes mix them at -q 60)."""
    path = tmp_path_factory.mktemp("portability") / "rocket.png"
    Image.fromarray(data.rocket()[120:232, 100:420]).save(path)
    return path


def test_every_cpu_kind_and_thread_count_writes_and_reads_the_same_file(photo: Path, tmp_path: Path) -> None:
    combos = list(itertools.product(levels(), THREADS))
    files = {}
    for capability, threads in combos:
        out = tmp_path / f"{capability}_{threads}.dqc"
        dqc("encode", str(photo), "-o", str(out), "-q", "60", "--tune", "psnr", "-e", "0", capability=capability,
            threads=threads)  # fmt: skip
        files[capability, threads] = out
    digests = {c: hashlib.sha256(f.read_bytes()).hexdigest() for c, f in files.items()}
    assert len(set(digests.values())) == 1, digests
    pictures = {}
    for i, (capability, threads) in enumerate(combos):
        src = files[combos[(i + 1) % len(combos)]]  # another combination's file
        out = tmp_path / f"{capability}_{threads}.png"
        dqc("decode", str(src), "-o", str(out), capability=capability, threads=threads)
        pictures[capability, threads] = np.asarray(Image.open(out), dtype=np.int16)
    first = next(iter(pictures.values()))
    for combo, picture in pictures.items():
        assert np.abs(picture - first).max() <= MAX_PIXEL_DIFF, combo


def test_every_cpu_kind_and_thread_count_estimates_the_same_default_map(photo: Path, tmp_path: Path) -> None:
    # the default tune's map follows the distortion estimate (a float network): the same bytes everywhere
    digests = set()
    for capability, threads in itertools.product(levels(), THREADS):
        out = tmp_path / f"{capability}_{threads}.dqc"
        dqc("encode", str(photo), "-o", str(out), "-q", "60", "-e", "0", capability=capability, threads=threads)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1, digests


def test_refined_files_are_the_same_at_any_thread_count_and_decode_everywhere(photo: Path, tmp_path: Path) -> None:
    """The default effort refines the tokens through the float synthesis: one CPU kind writes the
    same bytes at any thread count, and every kind decodes every other kind's file exactly."""
    files = {}
    for capability in levels():
        digests = set()
        for threads in THREADS:
            out = tmp_path / f"{capability}_{threads}.dqc"
            dqc("encode", str(photo), "-o", str(out), "-q", "60", capability=capability, threads=threads)
            digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
            files[capability] = out
        assert len(digests) == 1, (capability, digests)
    for capability, other in itertools.product(levels(), files):
        dqc(
            "decode",
            str(files[other]),
            "-o",
            str(tmp_path / f"{capability}_{other}.png"),
            capability=capability,
            threads=2,
        )  # fmt: skip  (each tile's symbol CRC is checked)
