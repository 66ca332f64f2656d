"""The model weights that ship inside the package: their names, files, and the ids .dqc files carry.

A model is a transform file (encoder, DGC gate, codebook and decoder), optionally a decoder file
that replaces the transform's decoder (a decoder trained further over the same tokens), and an
integer prior. Its id, which every file carries, is a hash of those files, so a file names the
decoder it was made for. The models that new files are made with are `MODELS`; `EARLIER` are
those of earlier releases, kept so that their files decode as they did (they share the
transform and prior files: only a decoder file is new). Kept free of torch so that reading a
file's header (`dqc info`) stays fast."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from dqcodec.errors import DQCError, ModelMismatchError
from dqcodec.format import bitstream


@dataclass(frozen=True)
class Weights:
    transform: str  # file of the DQ-VAE (or the fixed-grid VQGAN)
    prior: str  # file of the integer prior
    decoder: str | None = None  # file of a decoder that replaces the transform's


MODELS = {
    "dq": Weights("dqvae.pt", "prior_dq.npz"),
    "vqgan": Weights("vqgan.pt", "prior_vq.npz"),
}
# models of earlier releases, for decoding their files (never for encoding)
EARLIER: dict[str, Weights] = {}
DEFAULT_MODEL = "dq"
# The encoder's distortion estimate for a model's granularity maps (`distortion`); the decoder
# never reads it, so it is not part of the model's id.
ESTIMATORS = {"dq": "distortion_dq.pt"}


def weights(name: str) -> Weights:
    if name in MODELS:
        return MODELS[name]
    if name in EARLIER:
        return EARLIER[name]
    raise DQCError(f"unknown model {name!r}; available: {', '.join(MODELS)}")


def _read(file: str) -> bytes:
    return (resources.files("dqcodec") / "weights" / file).read_bytes()


def weight_bytes(name: str) -> tuple[bytes, bytes, bytes | None]:
    """The transform, prior and (where the model has one) decoder files of shipped model `name`."""
    w = weights(name)
    return _read(w.transform), _read(w.prior), _read(w.decoder) if w.decoder else None


def estimator_bytes(name: str) -> bytes | None:
    """The distortion estimator's weight file of shipped model `name`, if it has one."""
    if name not in ESTIMATORS:
        return None
    return (resources.files("dqcodec") / "weights" / ESTIMATORS[name]).read_bytes()


@cache
def model_id(name: str) -> bytes:
    """The id a file made with shipped model `name` carries: a hash of its transform file, its
    decoder file where it has one, and its prior file (in that order)."""
    transform, prior, decoder = weight_bytes(name)
    return hashlib.sha256(transform + (decoder or b"") + prior).digest()[: bitstream.MODEL_ID_BYTES]


def model_name(made_with: bytes) -> str | None:
    """The shipped model whose id is `made_with` (one for encoding, or an earlier release's); None if none is."""
    return next((name for name in (*MODELS, *EARLIER) if model_id(name) == made_with), None)


def model_named_by(made_with: bytes) -> str:
    """The shipped model whose id is `made_with`, or ModelMismatchError naming the shipped ones."""
    if name := model_name(made_with):
        return name
    shipped = ", ".join(f"{model_id(n).hex()} ({n})" for n in (*MODELS, *EARLIER))
    raise ModelMismatchError(f"file was made with model {made_with.hex()}, which this dqc does not have: {shipped}")
