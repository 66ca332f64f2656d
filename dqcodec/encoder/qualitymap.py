"""`-q` across scales: the path from the smallest file dqc makes to its best picture.

One scale of the coded picture spans about a 9x range of rates (every region coarse to every
region fine), and the model's best picture at scale 1 is far from the best it can make: coding
the picture resampled to 1.5x or 2x of its size (RSMP, `--scale`) goes higher, and 0.5x lower.
`-q` therefore walks through the scales: each stretch of `-q` codes at one scale, over the
within-scale qualities where that scale's rate-distortion curve is the best of all scales (on
BSDS500 test images, `benchmarks/quality_map.py`, never Kodak), so that a higher `-q` gives more
bits and a better picture on average, `-q 0` the smallest file and `-q 100` the best picture.

With `--scale`, `-q` is the within-scale quality (rate control's `levels_for_quality`) at that
scale, as before.
"""

from __future__ import annotations

import bisect

# (-q, scale, within-scale quality) at the start and end of each scale's stretch of -q, per tune;
# within a stretch the within-scale quality is interpolated linearly. Chosen on 8 BSDS500 test
# images (`python -m benchmarks.quality_map --images 8`, benchmarks/results/quality_map.json,
# `suggested_path`): a stretch ends where the next scale's mean curve overtakes (SSIMULACRA2 for
# the default tune, PSNR for --tune psnr), and each stretch's share of -q follows the log-rates it
# spans. The default tune keeps -q 50 at scale 1, near the within-scale quality 50 of dqc 0.2.
PATHS = {
    "ssim": (
        (0.0, 0.5, 0.0),
        (16.0, 0.5, 22.0),
        (16.0, 0.71, 4.0),
        (29.0, 0.71, 21.0),
        (29.0, 1.0, 5.0),
        (72.0, 1.0, 100.0),
        (72.0, 1.5, 39.0),
        (88.0, 1.5, 100.0),
        (88.0, 2.0, 43.0),
        (100.0, 2.0, 100.0),
    ),
    "psnr": (
        (0.0, 0.5, 0.0),
        (25.0, 0.5, 43.0),
        (25.0, 0.71, 20.0),
        (38.0, 0.71, 40.0),
        (38.0, 1.0, 19.0),
        (58.0, 1.0, 50.0),
        (58.0, 1.5, 20.0),
        (76.0, 1.5, 48.0),
        (76.0, 2.0, 25.0),
        (100.0, 2.0, 100.0),
    ),
}


def setting(quality: float, tune: str = "ssim") -> tuple[float, float]:
    """(scale, within-scale quality) of a -q in 0..100."""
    path = PATHS[tune]
    starts = [q for q, _, _ in path[::2]]
    k = max(0, bisect.bisect_right(starts, quality) - 1)
    (q0, scale, w0), (q1, _, w1) = path[2 * k], path[2 * k + 1]
    t = 0.0 if q1 == q0 else min(1.0, max(0.0, (quality - q0) / (q1 - q0)))
    return scale, w0 + t * (w1 - w0)
