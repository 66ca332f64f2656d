"""`dqc compare`, driven as a user runs it: the report's files, its page in a real browser (headless
Chromium), the cache a rerun resumes from, Ctrl-C, a bad image, and the libraries it measures with."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import DQC, default_sigint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAST_CODECS = "dq,jpeg,webp"


def photos(folder: Path, count: int = 2, side: int = 176) -> Path:
    """`count` crops of photos that ship with scikit-image."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(count):
        picture = sources[i % len(sources)]
        y, x = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2 + 8 * (i // len(sources))
        Image.fromarray(picture[y : y + side, x : x + side]).save(folder / f"photo{i}.png")
    return folder


def compare(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([DQC, "compare", *args], capture_output=True, text=True, timeout=timeout)


def cache_files(report: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (report / ".cache").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A quick comparison of two photos and one file that is not a picture."""
    root = tmp_path_factory.mktemp("compare")
    src = photos(root / "photos")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    out = root / "report"
    return out, compare(str(src), "-o", str(out), "--quick", "--codecs", FAST_CODECS, "-j", "2")


def test_the_report_has_every_file_and_a_row_per_round_trip(report: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, run = report
    assert run.returncode == 1, run.stderr  # one image failed, the rest went on
    errors = [line for line in run.stderr.splitlines() if line.startswith("dqc: error:")]
    assert len(errors) == 1 and "broken.png" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    names = ["index.html", "results.csv", "summary.json", "bd-rate.md", "plots/mean.png", "plots/mean.svg"]
    names += ["plots/photo0.png", "plots/photo1.svg", "crops/photo0/original.webp", "crops/photo0/dq-map.webp"]
    for name in names:
        assert (out / name).is_file(), name
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows if r["error"]] == ["broken.png"]
    good = [r for r in rows if not r["error"]]
    for image in ("photo0.png", "photo1.png"):
        for codec in FAST_CODECS.split(","):
            mine = [r for r in good if r["image"] == image and r["codec"] == codec]
            assert len(mine) >= 2, (image, codec)
            # a real file on disk: its size is what the row says, and the measures are sane
            for r in mine:
                assert float(r["bpp"]) == pytest.approx(8 * int(r["bytes"]) / (176 * 176))
                assert 10 < float(r["psnr"]) < 60 and 0 < float(r["ms_ssim"]) <= 1
            rates = sorted(float(r["bpp"]) for r in mine)
            quality = [float(r["psnr"]) for r in sorted(mine, key=lambda r: float(r["bpp"]))]
            assert rates[0] < rates[-1] and quality[0] < quality[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["failed_images"] == ["broken.png"]
    for metric in ("psnr", "ms_ssim", "ssimulacra2"):
        table = summary["bd_rate"][metric]
        assert isinstance(table["dq"]["jpeg"], float), metric
        assert table["jpeg"]["dq"] > 0 > table["dq"]["jpeg"]  # at these rates JPEG needs more bits


def test_the_compared_rates_overlap(report: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Every codec is swept over one range chosen from the image, so the curves share rates."""
    out, _ = report
    summary = json.loads((out / "summary.json").read_text())
    for result in summary["per_image"]:
        if result["error"]:
            continue
        targets = result["targets"]
        assert len(targets) == 4 and targets[0] < targets[-1]
        for codec in FAST_CODECS.split(","):
            rows = [r for r in result["rows"] if r["codec"] == codec]
            assert min(r["bpp"] for r in rows) < targets[-1] * 1.2
            assert max(r["bpp"] for r in rows) > targets[1]


def test_a_rerun_resumes_from_the_cache(report: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    out, first = report
    before = cache_files(out)
    src = Path(json.loads((out / "summary.json").read_text())["per_image"][0]["source"]).parent
    again = compare(str(src), "-o", str(out), "--quick", "--codecs", FAST_CODECS, "-j", "2")
    assert again.returncode == 1
    assert cache_files(out) == before  # nothing coded or measured again
    with (out / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) > 10


def _page_problems(page: object) -> list[str]:
    problems: list[str] = []

    def console(message: object) -> None:
        if message.type == "error":  # type: ignore[attr-defined]
            problems.append(f"console error: {message.text}")  # type: ignore[attr-defined]

    page.on("console", console)  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))  # type: ignore[attr-defined]
    page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}"))  # type: ignore[attr-defined]
    return problems


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt install chromium; .ci/run does)")
def test_the_page_shows_plots_and_crops_in_a_real_browser(report: tuple[Path, subprocess.CompletedProcess]) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    out, _ = report
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run",
        ])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems = _page_problems(page)
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                                   "i.naturalWidth])")  # fmt: skip
            assert problems == []
            srcs = [src for src, _, _ in images]
            assert "plots/mean.png" in srcs
            crops = [img for img in images if img[0].startswith("crops/")]
            assert len(crops) == 2 * (1 + len(FAST_CODECS.split(",")))  # the original and each codec, per photo
            assert all(complete and width > 0 for _, complete, width in images), images
            shot = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"), np.float64)
            assert shot.std() > 20  # not a blank page
            assert page.locator("table td.win, table td.lose").count() > 0  # the verdict is coloured
            # dqc's granularity map over its crops, at a click, and back
            dq_crop = page.locator("img[data-map]").first
            plain = dq_crop.get_attribute("src")
            page.check("#show-map")
            assert dq_crop.get_attribute("src") == dq_crop.get_attribute("data-map") != plain
            page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            page.uncheck("#show-map")
            assert dq_crop.get_attribute("src") == plain
            assert problems == []
        finally:
            browser.close()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
def test_ctrl_c_leaves_a_valid_partial_report_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    src = photos(tmp_path / "photos", count=3, side=112)
    out = tmp_path / "report"
    args = [DQC, "compare", str(src), "-o", str(out), "--quick", "--codecs", "dq,jpeg", "-j", "1"]
    run = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while not (out / "plots" / "photo0.png").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, "it finished before the Ctrl-C: give it more images"
    os.killpg(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dqc: ") and not line.startswith("dqc: note:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "of 3 images" in lines[0], stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] is False and 1 <= summary["images"] < 3
    assert "partial" in (out / "index.html").read_text()
    with (out / "results.csv").open() as fh:
        assert {r["image"] for r in csv.DictReader(fh)} == {r["image"] for r in summary["per_image"]}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["images"] == 3


def test_a_dask_cluster_gives_the_same_results(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    src = photos(tmp_path / "photos", count=2, side=96)
    results = []
    for where in ([], ["--scheduler", "local", "-j", "2"]):
        out = tmp_path / f"report{len(results)}"
        run = compare(str(src), "-o", str(out), "--quick", "--codecs", "dq,jpeg", *where)
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
        with (out / "results.csv").open() as fh:
            results.append(sorted((r["image"], r["codec"], r["setting"], r["bytes"]) for r in csv.DictReader(fh)))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--codecs", "dq,heic"], "unknown codec 'heic'"),
        (["--codecs", "dq:speed=3"], "dq takes effort, tune"),
        (["--metrics", "lpips"], "unknown measure 'lpips'"),
        (["--rates", "0.5-0.1"], "the lower first"),
    ],
)
def test_bad_options_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    src = photos(tmp_path / "photos", count=1, side=32)
    run = compare(str(src), "-o", str(tmp_path / "out"), *args)
    assert run.returncode != 0
    assert run.stderr.count("\n") == 1 and says in run.stderr and run.stderr.startswith("dqc: error:"), run.stderr


def test_the_ms_ssim_library_matches_dqcs_own() -> None:
    """pytorch-msssim, which compare uses, agrees with dqcodec.metrics (training's) to 4 decimals."""
    import torch
    from pytorch_msssim import ms_ssim as library
    from skimage import data

    from dqcodec.metrics import ms_ssim as own

    ref = torch.from_numpy(data.astronaut()[:256, :256].copy()).permute(2, 0, 1)[None].float() / 255
    for noise in (0.02, 0.08):
        out = (ref + noise * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
        assert float(library(ref, out, data_range=1.0)) == pytest.approx(float(own(ref, out)[0]), abs=1e-4)


def test_a_report_inside_src_is_not_compared_again(tmp_path: Path) -> None:
    """`dqc compare photos/ -o photos/report`: the report's crops are pictures, not inputs."""
    src = photos(tmp_path / "photos", count=1, side=64)
    for _ in range(2):
        run = compare(str(src), "-o", str(src / "report"), "--quick", "--codecs", "jpeg")
        assert run.returncode == 0, run.stderr
    summary = json.loads((src / "report" / "summary.json").read_text())
    assert [r["image"] for r in summary["per_image"]] == ["photo0.png"]
