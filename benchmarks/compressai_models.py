"""CompressAI's models for speed comparisons, installed for the benchmarks only.

CompressAI is not a dependency of dqc. `installed()` puts its wheel (no dependencies) into a
cache folder outside the repo, and `model()` imports only its model, entropy-model and layer
modules: its package `__init__` also imports datasets, transforms and point-cloud code that need
torchvision, torch_geometric and pandas, which this environment lacks. Weights are random (the
zoo's pretrained weights need a download): speed does not depend on them, rates do, so the bytes
CompressAI writes here say nothing about its compression.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VERSION = "1.2.8"
CACHE = Path(os.environ.get("DQC_BENCH_CACHE", Path.home() / ".cache" / "dqc-benchmarks")) / f"compressai-{VERSION}"
# the zoo's names -> class and (N, M) channels at qualities 1-5 and 6-8 (compressai.zoo.image)
MODELS = {
    "bmshj2018-hyperprior": ("google", "ScaleHyperprior", (128, 192), (192, 320)),
    "mbt2018-mean": ("google", "MeanScaleHyperprior", (128, 192), (192, 320)),
    "cheng2020-anchor": ("waseda", "Cheng2020Anchor", (128,), (192,)),
}


def installed() -> Path:
    """The folder holding the compressai package, installed there on first use (pip, no deps)."""
    if not (CACHE / "compressai").is_dir():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(CACHE),
            f"compressai=={VERSION}",
        ]
        subprocess.run(cmd, check=True)
    return CACHE


def _import_models() -> None:
    """Register compressai and compressai.models as bare packages (their __init__ not run)."""
    if "compressai" in sys.modules:
        return
    root = installed() / "compressai"
    package = types.ModuleType("compressai")
    package.__path__ = [str(root)]
    package.get_entropy_coder = lambda: "ans"  # type: ignore[attr-defined]
    package.available_entropy_coders = lambda: ["ans"]  # type: ignore[attr-defined]
    models = types.ModuleType("compressai.models")
    models.__path__ = [str(root / "models")]
    registry = types.ModuleType("compressai.registry")
    registry.__getattr__ = lambda attr: lambda *names: lambda obj: obj  # type: ignore[attr-defined]  # register_*(...)
    sys.modules.update({"compressai": package, "compressai.models": models, "compressai.registry": registry})


def model(name: str, quality: int) -> torch.nn.Module:
    """The zoo's architecture for (name, quality 1-8) with random weights, ready to code."""
    _import_models()
    module, cls, low, high = MODELS[name]
    mod = __import__(f"compressai.models.{module}", fromlist=[cls])
    torch.manual_seed(0)
    net = getattr(mod, cls)(*(low if quality <= 5 else high)).eval()
    net.update(force=True)
    return net


def encode(net: torch.nn.Module, img: Image.Image) -> bytes:
    """The picture's strings (y and z, as compress() makes them) with their lengths and shape."""
    x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    p = 64  # the models downsample by 64: pad to a multiple
    x = torch.nn.functional.pad(x, (0, -w % p, 0, -h % p), mode="replicate")
    with torch.no_grad():
        out = net.compress(x)
    parts = [s[0] for s in out["strings"]]
    head = np.array([h, w, *out["shape"], len(parts), *map(len, parts)], dtype="<u4").tobytes()
    return len(head).to_bytes(4, "little") + head + b"".join(parts)


def decode(net: torch.nn.Module, data: bytes) -> Image.Image:
    n = int.from_bytes(data[:4], "little")
    head = np.frombuffer(data[4 : 4 + n], dtype="<u4").tolist()
    h, w, sh, sw, count, lengths = head[0], head[1], head[2], head[3], head[4], head[5:]
    assert len(lengths) == count
    strings, pos = [], 4 + n
    for length in lengths:
        strings.append([data[pos : pos + length]])
        pos += length
    with torch.no_grad():
        x = net.decompress(strings, [sh, sw])["x_hat"][0, :, :h, :w]
    return Image.fromarray((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


if __name__ == "__main__":  # a round trip, e.g. python -m benchmarks.compressai_models bmshj2018-hyperprior 3
    net = model(sys.argv[1], int(sys.argv[2]))
    blob = encode(net, Image.new("RGB", (100, 70), (90, 140, 200)))
    print(type(net).__name__, len(blob), decode(net, blob).size)
