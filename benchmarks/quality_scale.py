"""Calibrate the default tune's quality scale (`rdo.STRUCTURAL_SCALE`) on BSDS500 test images.

    python -m benchmarks.quality_scale [--images 30]

Quality sets a slope, and the slope with each image's own error sets lambda. This finds the
slopes at which the default tune's mean rate over the images equals that of the old default (the
gate's fixed shares, `benchmarks.allocation.gate_levels`) at qualities 25 and 75, and fits
slope = mid * ((100 - q) / q) ** spread through them, so a -q keeps about the rate it had on
average while each image's shares now follow its content. Rates are the model's (the mean bits of
a region at its level, `rdo.REGION_BITS`), which ranks maps the same as coding them. Writes
quality_scale.json under --out (the fit, and the mean rate of both rules at every quality).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.allocation import gate_levels
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality, model_bits
from dqcodec.encoder.rdo import STRUCTURAL_SCALE, QualityScale, multiplier, ranked_levels
from dqcodec.encoding import image_to_tensor
from dqcodec.models.loading import load_model

ANCHORS = (25.0, 75.0)
SLOPES = np.geomspace(0.05, 2000, 120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    m = load_model("dq")
    files = sorted(args.data.glob("*.jpg"))
    files = files[:: max(1, len(files) // args.images)][: args.images]
    unit = QualityScale(1.0, 0.0)  # slope 1 at every quality: multiplier(c, q, unit) * s is slope s's
    qualities = list(range(0, 101, 5))
    gate = np.zeros(len(qualities))
    ranked = np.zeros(len(SLOPES))
    analyses = []
    for f in files:
        img = Image.open(f).convert("RGB")
        a = analyze(m, image_to_tensor(img)[0])
        assert a.costs is not None
        pixels = img.width * img.height
        gate += [model_bits(gate_levels(m, a, q)) / pixels for q in qualities]
        lam = multiplier(a.costs, 50, unit)
        ranked += [model_bits(ranked_levels(a.costs, a.score, lam * s)) / pixels for s in SLOPES]
        analyses.append(a)
    gate, ranked = gate / len(files), ranked / len(files)
    # the slope whose mean rate equals the gate's at each anchor (rate falls as the slope grows)
    anchor = {q: float(np.interp(q, qualities, gate)) for q in ANCHORS}
    slope = {q: float(np.exp(np.interp(-anchor[q], -ranked, np.log(SLOPES)))) for q in ANCHORS}
    lo, hi = ANCHORS
    r_lo, r_hi = (100 - lo) / lo, (100 - hi) / hi
    spread = math.log(slope[lo] / slope[hi]) / math.log(r_lo / r_hi)
    mid = slope[lo] / r_lo**spread
    new = [np.mean([model_bits(levels_for_quality(m, a, q)[0]) / a.costs.pixels for a in analyses]) for q in qualities]
    result = {
        "images": len(files),
        "anchors": {str(q): {"gate_bpp": anchor[q], "slope": slope[q]} for q in ANCHORS},
        "fit": {"mid": mid, "spread": spread},
        "shipped": {"mid": STRUCTURAL_SCALE.mid, "spread": STRUCTURAL_SCALE.spread},
        "mean_model_bpp": {"quality": qualities, "gate": gate.tolist(), "default_tune_as_shipped": new},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_scale.json").write_text(json.dumps(result, indent=1))
    print(f"fit: QualityScale({mid:.3f}, {spread:.3f})")
    for q, g, n in zip(qualities, gate, new, strict=True):
        print(f"q{q:3}: gate {g:.4f}  default tune as shipped {n:.4f}")


if __name__ == "__main__":
    main()
