"""`--effort`: analysis by synthesis refines the tokens against the decoder; the decoder and the
format do not change, and the encoder stays reproducible on one machine."""

import io
import subprocess

import numpy as np
import pytest
from PIL import Image

import dqcodec
from dqcodec.encoder.effort import DEFAULT_EFFORT, MAX_EFFORT
from dqcodec.encoder.ratecontrol import levels_for_quality
from dqcodec.encoding import QualityPlan, image_to_tensor, refined_tokens, write_tokens
from dqcodec.errors import ArgumentError
from dqcodec.format import bitstream
from dqcodec.metrics import psnr_of_pictures
from dqcodec.models.loading import load_model
from tests.test_cli import DQC


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()[40:168, 140:300])


def _psnr(a: Image.Image, b: Image.Image) -> float:
    return psnr_of_pictures(*(np.asarray(i.convert("RGB")) for i in (a, b)))


def test_higher_effort_gives_a_better_picture_from_the_same_map(photo: Image.Image) -> None:
    m = load_model("dq")
    x, _ = image_to_tensor(photo)
    internal, coded, a = QualityPlan(m, x, 1.0, "cpu", "psnr", None).setting(50)
    levels = levels_for_quality(m, a, internal)[0]
    assert refined_tokens(m, a, x, coded, levels, 0) is a.idx  # effort 0: the nearest codes
    pictures = {}
    for effort in (0, 2, MAX_EFFORT):
        idx = refined_tokens(m, a, x, coded, levels, effort)
        data = write_tokens(m, levels, idx, *photo.size)
        assert bitstream.read(data).tiles  # a valid file, decoded by the unchanged decoder
        pictures[effort] = (_psnr(photo, dqcodec.decode(data)), len(data))
    assert pictures[2][0] > pictures[0][0] + 0.2, pictures
    assert pictures[MAX_EFFORT][0] > pictures[0][0] + 0.1, pictures
    assert pictures[2][1] < 1.05 * pictures[0][1], pictures  # the rate term keeps the bits near


def test_effort_0_is_todays_encoder(photo: Image.Image) -> None:
    data = dqcodec.encode(photo, quality=50, scale=1.0, effort=0, record_settings=False)
    m = load_model("dq")
    x, _ = image_to_tensor(photo)
    internal, coded, a = QualityPlan(m, x, 1.0, "cpu", "ssim", None).setting(50)
    assert data == write_tokens(m, levels_for_quality(m, a, internal)[0], a.idx, *photo.size)
    assert data[8] == 2 and bitstream.read(data).colour is None  # nothing of version 3: dqc 0.2 reads it


@pytest.mark.parametrize("bad", [-1, MAX_EFFORT + 1, 1.5, "2", True])
def test_effort_is_checked(photo: Image.Image, bad: object) -> None:
    with pytest.raises(ArgumentError):
        dqcodec.encode(photo, effort=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("effort", [DEFAULT_EFFORT, MAX_EFFORT])
def test_one_machine_writes_the_same_bytes_at_any_thread_count(tmp_path, photo: Image.Image, effort: int) -> None:
    """At the highest efforts the levels are refined and measured side by side, one per thread."""
    src = tmp_path / "photo.png"
    photo.save(src)
    outputs = []
    for threads in (1, 2, 3):
        out = tmp_path / f"{threads}.dqc"
        command = [DQC, "encode", str(src), "-o", str(out), "--threads", str(threads), "-e", str(effort)]
        r = subprocess.run(command, capture_output=True)
        assert r.returncode == 0, r.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0] == dqcodec.encode(photo, effort=effort)  # and the API's


def test_effort_in_the_cli_and_the_pillow_plugin(tmp_path, photo: Image.Image) -> None:
    src = tmp_path / "photo.png"
    photo.save(src)
    r = subprocess.run([DQC, "encode", str(src), "-o", str(tmp_path / "e0.dqc"), "-e", "0"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e0.dqc").read_bytes() == dqcodec.encode(photo, effort=0)
    r = subprocess.run([DQC, "encode", str(src), "-o", str(tmp_path / "x.dqc"), "--effort", str(MAX_EFFORT + 1)],
                       capture_output=True)  # fmt: skip
    assert r.returncode == 2 and not (tmp_path / "x.dqc").exists()
    buf = io.BytesIO()
    photo.save(buf, format="DQC", effort=0)
    assert buf.getvalue() == dqcodec.encode(photo, effort=0)


@pytest.mark.parametrize("effort", [0, DEFAULT_EFFORT, MAX_EFFORT])
def test_rate_and_quality_targets_hold_at_every_effort(photo: Image.Image, effort: int) -> None:
    pixels = photo.width * photo.height
    data = dqcodec.encode(photo, target_bpp=0.3, effort=effort)
    assert 8 * len(data) / pixels <= 0.3
    data = dqcodec.encode(photo, target="psnr=26", effort=effort)
    assert _psnr(photo, dqcodec.decode(data)) >= 26


def test_refinement_runs_in_windows_on_large_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A picture over one window refines window by window, and the windows' seams do not show."""
    from dqcodec.encoder import refine

    monkeypatch.setattr(refine, "WINDOW", 4)  # 64 px windows on a 160x96 picture: 3 x 2 of them
    from skimage import data

    picture = Image.fromarray(data.coffee()[100:196, 200:360])
    whole = dqcodec.decode(dqcodec.encode(picture, effort=0))
    windowed = dqcodec.decode(dqcodec.encode(picture, effort=DEFAULT_EFFORT))
    assert _psnr(picture, windowed) > _psnr(picture, whole)
    # the windows are independent: side by side on two threads, or one after another, the same bytes
    import torch

    before, files = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            files.append(dqcodec.encode(picture, effort=MAX_EFFORT))
    finally:
        torch.set_num_threads(before)
    assert files[0] == files[1]
