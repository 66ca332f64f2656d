"""The measures `dqc compare` reports, of a decoded uint8 (H, W, 3) picture against its original.

PSNR, MS-SSIM and SSIMULACRA2 always; Butteraugli (the `butteraugli_main` of Debian's
libjxl-devtools, its 3-norm) and ColorVideoVDP (`pycvvdp`, in JOD) where installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable

import numpy as np

ALWAYS = ("psnr", "ms_ssim", "ssimulacra2")
OPTIONAL = ("butteraugli", "cvvdp")
LOWER_IS_BETTER = {"butteraugli", "lpips"}  # LPIPS: not measured here (its weights download), scored by benchmarks
LABELS = {
    "psnr": "PSNR (dB)",
    "ms_ssim": "MS-SSIM",
    "ssimulacra2": "SSIMULACRA2",
    "butteraugli": "Butteraugli 3-norm",
    "cvvdp": "ColorVideoVDP (JOD)",
}
PYTORCH_MSSSIM_MIN_SIDE = 161  # five scales of an 11-tap window


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    from dqcodec.metrics import psnr_of_pictures

    return psnr_of_pictures(reference, decoded)


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """pytorch-msssim's MS-SSIM; pictures under 161 px a side, which it refuses, get dqcodec.metrics'
    (the same formula with as many scales as fit; the two agree to 4 decimals above that size)."""
    import torch

    r, d = (torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255 for a in (reference, decoded))
    if min(reference.shape[:2]) >= PYTORCH_MSSSIM_MIN_SIDE:
        from pytorch_msssim import ms_ssim as library_ms_ssim

        return float(library_ms_ssim(r, d, data_range=1.0))
    from dqcodec.metrics import ms_ssim as own_ms_ssim

    return float(own_ms_ssim(r, d)[0])


def ssimulacra2(reference: np.ndarray, decoded: np.ndarray) -> float:
    from dqcodec.encoder.qualitytarget import measure

    return measure("ssimulacra2", reference, decoded)


def butteraugli(reference: np.ndarray, decoded: np.ndarray) -> float:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="dqc-butteraugli-") as tmp:
        paths = [os.path.join(tmp, name) for name in ("reference.png", "decoded.png")]
        for path, picture in zip(paths, (reference, decoded), strict=True):
            Image.fromarray(picture).save(path, compress_level=1)
        done = subprocess.run(["butteraugli_main", *paths, "--pnorm", "3"], capture_output=True, text=True, check=True)
    found = re.search(r"3-norm:\s*([0-9.eE+-]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"butteraugli_main printed no 3-norm: {done.stdout.strip()!r}")
    return float(found.group(1))


_cvvdp_model: object = None


def cvvdp(reference: np.ndarray, decoded: np.ndarray) -> float:
    global _cvvdp_model
    import pycvvdp  # type: ignore[import-not-found]

    if _cvvdp_model is None:
        _cvvdp_model = pycvvdp.cvvdp(display_name="standard_4k", quiet=True)
    jod, _ = _cvvdp_model.predict(decoded, reference, dim_order="HWC")  # type: ignore[attr-defined]
    return float(jod)


MEASURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": psnr,
    "ms_ssim": ms_ssim,
    "ssimulacra2": ssimulacra2,
    "butteraugli": butteraugli,
    "cvvdp": cvvdp,
}


def missing_reason(name: str) -> str | None:
    """Why a measure cannot run here, or None."""
    if name == "ms_ssim":
        import importlib.util

        return None if importlib.util.find_spec("pytorch_msssim") else "needs pytorch-msssim"
    if name == "ssimulacra2":
        import importlib.util

        return None if importlib.util.find_spec("ssimulacra2") else "needs the ssimulacra2 package"
    if name == "butteraugli":
        return (
            None if shutil.which("butteraugli_main") else "needs butteraugli_main (Debian: apt install libjxl-devtools)"
        )
    if name == "cvvdp":
        try:  # it needs torchvision, which a CPU-only torch may lack: try it rather than trust its presence
            import pycvvdp  # type: ignore[import-not-found]  # noqa: F401
        except ImportError as e:
            missing = getattr(e, "name", None) == "pycvvdp"
            return "needs ColorVideoVDP (pip install cvvdp)" + ("" if missing else f", which does not import here: {e}")
    return None


def better(metric: str, a: float, b: float) -> bool:
    """Whether score `a` is better than `b`."""
    return a < b if metric in LOWER_IS_BETTER else a > b


def measure_all(names: list[str], reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    return {name: MEASURES[name](reference, decoded) for name in names}


class Measures:
    """Measures by name, callable on (reference, decoded) pictures: the benchmarks' scorer."""

    def __init__(self, names: tuple[str, ...] = ALWAYS) -> None:
        self.names = list(names)

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        return measure_all(self.names, reference, decoded)
