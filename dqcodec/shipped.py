"""The model weights that ship inside the package: their names, files, and the ids .dqc files carry.

Kept free of torch so that reading a file's header (`dqc info`) stays fast."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from dqcodec import bitstream
from dqcodec.errors import DQCError, ModelMismatchError

MODELS = {"dq": ("dqvae.pt", "prior_dq.npz"), "vqgan": ("vqgan.pt", "prior_vq.npz")}  # transform, integer prior
DEFAULT_MODEL = "dq"
# The encoder's distortion estimate for a model's granularity maps (`distortion`); the decoder
# never reads it, so it is not part of the model's id.
ESTIMATORS = {"dq": "distortion_dq.pt"}


def weight_bytes(name: str) -> tuple[bytes, bytes]:
    """The transform and prior weight files of shipped model `name`."""
    if name not in MODELS:
        raise DQCError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    root = resources.files("dqcodec") / "weights"
    vae_raw, prior_raw = ((root / f).read_bytes() for f in MODELS[name])
    return vae_raw, prior_raw


def estimator_bytes(name: str) -> bytes | None:
    """The distortion estimator's weight file of shipped model `name`, if it has one."""
    if name not in ESTIMATORS:
        return None
    return (resources.files("dqcodec") / "weights" / ESTIMATORS[name]).read_bytes()


@cache
def model_id(name: str) -> bytes:
    """The id a file made with shipped model `name` carries: a hash of its two weight files."""
    vae_raw, prior_raw = weight_bytes(name)
    return hashlib.sha256(vae_raw + prior_raw).digest()[: bitstream.MODEL_ID_BYTES]


def model_name(made_with: bytes) -> str | None:
    """The shipped model whose id is `made_with`; None if none is."""
    return next((name for name in MODELS if model_id(name) == made_with), None)


def model_named_by(made_with: bytes) -> str:
    """The shipped model whose id is `made_with`, or ModelMismatchError naming the shipped ones."""
    if name := model_name(made_with):
        return name
    shipped = ", ".join(f"{model_id(n).hex()} ({n})" for n in MODELS)
    raise ModelMismatchError(f"file was made with model {made_with.hex()}, which this dqc does not have: {shipped}")
