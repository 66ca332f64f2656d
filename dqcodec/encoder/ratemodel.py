"""What a granularity map's tokens cost under the prior, before they are coded (`--bpp`).

Coding a map through the prior is most of an encode, so rate control predicts the bits of the
maps it considers and codes only the one it proposes. A region's bits at a level are predicted
from what the analysis already knows, fitted by least squares per level:

    bits[l, i] = w0[l] + w1[l] * novelty[l, i] + w2[l] * score[i]

    novelty  how many of the region's codes at level l differ from both their left and upper
             neighbour's (a flat region repeats its codes, and the prior predicts repeats well)
    score    the DGC gate's score of the region (its detail)

Once a map is coded, `encode_tiles` measures every region's bits; those replace the prediction
for that region at that level, and the prediction elsewhere is scaled by what the measured
regions of its level (and of the image) cost against their prediction. So the second proposal is usually
within about 2% of its file.

RATE_WEIGHTS come from `python -m benchmarks.rate_model` (BSDS500 validation images, every map
uniform at each level; never Kodak) and belong to the shipped prior: refit them with new weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dqcodec.models.dqvae import NUM_LEVELS

REGION_SCALE = (1, 2, 4)  # codes per region side at each level
# (w0, w1, w2) per level: constant, novelty, gate score (benchmarks/results/rate_model.json)
RATE_WEIGHTS = ((4.34, 3.36, 0.19), (10.29, 5.00, 0.63), (25.86, 4.27, 1.66))
# A level's correction counts this many regions of its mean prediction at the image's overall
# correction, so a few measured regions (often the flattest or the most detailed) do not swing it.
PRIOR_REGIONS = 32


def code_novelty(idx: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(L, h, w): per region and level, the codes that differ from both their left and upper
    neighbour (a code on the picture's top or left edge counts as new)."""
    out = []
    for codes, s in zip(idx, REGION_SCALE):
        new_left = torch.ones_like(codes, dtype=torch.bool)
        new_left[:, 1:] = codes[:, 1:] != codes[:, :-1]
        new_up = torch.ones_like(codes, dtype=torch.bool)
        new_up[1:] = codes[1:] != codes[:-1]
        out.append(F.avg_pool2d((new_left & new_up).double()[None, None], s)[0, 0] * (s * s))
    return torch.stack(out)


def predicted_bits(idx: tuple[torch.Tensor, ...], score: torch.Tensor) -> torch.Tensor:
    """(L, h, w) float64: every region's predicted bits at every level (at least one bit)."""
    w = torch.tensor(RATE_WEIGHTS, dtype=torch.float64)
    novelty = code_novelty(idx)
    return (w[:, 0, None, None] + w[:, 1, None, None] * novelty + w[:, 2, None, None] * score.double()).clamp(min=1.0)


class RateModel:
    """Bits of an image's granularity maps: measured where a coded map had the region at that
    level, predicted (and corrected by the measurements) elsewhere."""

    def __init__(self, predicted: torch.Tensor) -> None:
        self.predicted = predicted  # (L, h, w)
        self.measured = torch.full_like(predicted, float("nan"))
        self.correction = torch.ones(NUM_LEVELS, dtype=torch.float64)
        self.table = predicted.clone()  # what `bits` sums: measured, else predicted x correction

    def observe(self, levels: torch.Tensor, region_bits: torch.Tensor) -> None:
        """A coded map's regions and their bits (encode_tiles' `region_bits`)."""
        self.measured.scatter_(0, levels[None], region_bits[None])
        known = ~self.measured.isnan()
        overall = self.measured[known].sum() / self.predicted[known].sum()
        for level in range(NUM_LEVELS):
            mine = known[level]
            prior = PRIOR_REGIONS * self.predicted[level].mean()
            measured, predicted = self.measured[level][mine].sum(), self.predicted[level][mine].sum()
            self.correction[level] = (measured + overall * prior) / (predicted + prior)
        estimate = self.predicted * self.correction[:, None, None]
        self.table = torch.where(known, self.measured, estimate)

    def region_bits(self, levels: torch.Tensor) -> torch.Tensor:
        """(h, w): each region's bits at its level in `levels`."""
        return self.table.gather(0, levels[None])[0]

    def bits(self, levels: torch.Tensor) -> float:
        return float(self.region_bits(levels).sum())
