"""`--effort`: how hard the encoder works on the tokens (`refine`), level by level. Kept free of
torch, so that the command line's help and checks stay fast."""

from __future__ import annotations

from dataclasses import dataclass

from dqcodec.errors import ArgumentError


@dataclass(frozen=True)
class Effort:
    """What one `--effort` level does."""

    steps: int  # Adam steps on the latents, with the map rate control chose
    lr: float = 0.05  # the first step's learning rate
    lr_end: float | None = None  # the last step's, the rate falling geometrically in between (None: constant)
    # steps on every level alone (the whole picture at that level) before the map is chosen again
    # from the refined tokens' measured distortion; 0: the map stays rate control's first
    rechoose_steps: int = 0

    def rate(self, step: int) -> float:
        if self.lr_end is None or self.steps < 2:
            return self.lr
        return self.lr * (self.lr_end / self.lr) ** (step / (self.steps - 1))


# --effort 0 is the nearest-code encoder; each level about doubles the refinement's work. More
# than 4 steps on one map gain nothing on BSDS500 test images (benchmarks/results/effort.json):
# the highest levels choose the map again from refined tokens instead.
EFFORTS = (
    Effort(0),
    Effort(1, 0.1),
    Effort(2, 0.05),
    Effort(4, 0.04),
    Effort(4, 0.04, rechoose_steps=2),
    Effort(8, 0.03, rechoose_steps=4),
)
MAX_EFFORT = len(EFFORTS) - 1
DEFAULT_EFFORT = 1  # at most twice the CPU time of effort 0 (benchmarks/results/speed_effort.json)


def check_effort(effort: object) -> int:
    if isinstance(effort, bool) or not isinstance(effort, int) or not 0 <= effort <= MAX_EFFORT:
        raise ArgumentError(f"effort must be an integer from 0 to {MAX_EFFORT}, got {effort!r}")
    return effort
