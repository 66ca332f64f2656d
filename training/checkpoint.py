"""Resumable training state and compact exported weights, shared by both training stages."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, elapsed: float) -> None:
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, path)


def load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, dev: torch.device) -> tuple[int, float]:
    """Restore model and optimizer from `path`; returns (step, elapsed seconds), or (0, 0) if absent."""
    if not path.exists():
        return 0, 0.0
    ck = torch.load(path, map_location=dev, weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    print(f"resumed at step {ck['step']}, {ck['elapsed'] / 60:.1f} min")
    return ck["step"], ck["elapsed"]


def export_weights(model: nn.Module, config: dict, meta: dict, path: Path) -> None:
    """fp16 weights with their config and training facts (loads with weights_only=True)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"config": config, "state_dict": state, "meta": meta}, path)
