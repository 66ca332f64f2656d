"""Both training stages run, checkpoint, resume and export loadable weights (tiny models)."""

import subprocess
import sys
from pathlib import Path

import torch

from dqcodec.format.intprior import IntPrior
from dqcodec.models import dqvae_from_checkpoint, prior_from_checkpoint
from tests.conftest import synthetic_image

ROOT = Path(__file__).parent.parent


def run(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_train_export_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        synthetic_image(300, 280, seed=i).save(data / f"{i}.png")
    common = ["--data", str(data), "--tiny", "--batch", "2", "--device", "cpu"]
    run("training.train_vae", *common, "--crop", "128", "--out", str(tmp_path / "vae"), "--minutes", "0.05",
        "--export", str(tmp_path / "vae.pt"))  # fmt: skip
    ck = torch.load(tmp_path / "vae.pt", weights_only=True)
    assert ck["meta"]["steps"] > 0 and all(v.dtype != torch.float32 for v in ck["state_dict"].values())
    dqvae_from_checkpoint(ck)
    out = run("training.train_vae", *common, "--crop", "128", "--out", str(tmp_path / "vae"), "--minutes", "0.1")
    assert "resumed at step" in out
    run("training.train_prior", *common, "--vae", str(tmp_path / "vae.pt"), "--out", str(tmp_path / "prior"),
        "--minutes", "0.02", "--export", str(tmp_path / "prior.pt"))  # fmt: skip
    pk = torch.load(tmp_path / "prior.pt", weights_only=True)
    prior_from_checkpoint(pk)

    # quantisation-aware fine-tuning of that prior, exported as integer weights that code
    out = run("training.train_prior", *common, "--vae", str(tmp_path / "vae.pt"), "--init", str(tmp_path / "prior.pt"),
              "--qat", "--out", str(tmp_path / "qat"), "--minutes", "0.02", "--val", str(data), "--val-tiles", "2",
              "--export-int", str(tmp_path / "prior.npz"))  # fmt: skip
    assert "validation at step 0: integer prior" in out
    prior = IntPrior.from_bytes((tmp_path / "prior.npz").read_bytes())
    assert prior.config["dim"] == 32 and prior.meta["qat_from"].endswith("prior.pt")


def test_distortion_estimate_fits_and_loads(tmp_path: Path) -> None:
    import ast

    from dqcodec.encoder.distortion import estimator_from_bytes

    data = tmp_path / "train"
    for seed, split in enumerate(["bsds500/train", "bsds500/train", "bsds500/val", "bsds500/test", "extra"]):
        (data / split).mkdir(parents=True, exist_ok=True)
        synthetic_image(96, 64, seed=seed).save(data / split / f"{seed}.jpg", quality=95)
    args = ["--data", str(data), "--extra", "1", "--val", "1", "--cache", str(tmp_path / "cache")]
    out = run("training.train_distortion", *args, "--steps", "40", "--out", str(tmp_path / "est.pt"))
    fits = [ast.literal_eval(line.split("val R^2 ")[1]) for line in out.splitlines() if "val R^2" in line]
    assert sum(map(sum, fits[-1])) > sum(map(sum, fits[0]))  # the fit gets closer to the measurement
    assert "proxy BD-rate" in out and (tmp_path / "cache" / "train_1.pt").exists()
    est = estimator_from_bytes((tmp_path / "est.pt").read_bytes())
    assert est(torch.zeros(est.shift.shape[0], 4, 6)).shape == (2, 3, 4, 6)
