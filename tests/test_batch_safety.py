"""`dqc batch` on people's own folders: it never removes a file it did not make, its workers
print nothing on an early Ctrl-C, and a full disk keeps the manifest's rows."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dqcodec
from tests.test_batch import _pictures, s3  # noqa: F401 - s3 is a fixture
from tests.test_cli import DQC, default_sigint

# files of the user's that look like the temp and lock files of dqc and of other programs
USER_FILES = [
    ".notes.lock",
    ".movie.mkv.part",
    "sub/.thesis.tex.part",
    "sub/deep/.x.lock",
    ".im0.dqc.lock",  # the names of dqc 0.2's own lock and temp files
    ".im0.dqc.x7k2_a.part",
    "sub/.im1.dqc.lock",
    "sub/deep/.im2.dqc.abc.part",
]


def _source(tmp_path: Path, count: int = 6, side: int = 192) -> Path:
    src = tmp_path / "src"
    for i, png in enumerate(_pictures(count, side)):
        folder = src / ["", "sub", "sub/deep"][i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"im{i}.png").write_bytes(png)
    return src


def _plant(dst: Path) -> None:
    for name in USER_FILES:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        (dst / name).write_bytes(b"mine: " + name.encode())


def _intact(dst: Path) -> None:
    for name in USER_FILES:
        assert (dst / name).read_bytes() == b"mine: " + name.encode(), name


def _dqc_leftovers(dst: Path) -> list[str]:
    """dqc's temp and lock files under dst (not the --decode manifest's folder, .dqc-manifest)."""
    return sorted(str(p.relative_to(dst)) for p in dst.rglob(".*") if ".dqc-" in p.name and p.name != ".dqc-manifest")


def _kill_mid_run(args: list[str], dst: Path) -> list[str]:
    """Start a batch in its own process group and SIGKILL the group (batch and workers) while
    files are being made; returns what it left behind."""
    run = subprocess.Popen([DQC, "batch", *args], stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not _dqc_leftovers(dst) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the batch ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    return _dqc_leftovers(dst)


def _killed_writer(target: Path) -> None:
    """What dqc leaves where it is killed while writing: a claim and a temp file beside `target`."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from dqcodec.fileio import claim, write_atomic\n"
        "with claim(Path(sys.argv[1])):\n"
        "    write_atomic(Path(sys.argv[1]), lambda f: (f.write(b'half'), f.flush(), time.sleep(600)))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(target)])
    deadline = time.monotonic() + 60
    while len([p for p in target.parent.glob(f".{target.name}.dqc-*")]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.kill()
    writer.wait()


def test_batch_never_removes_a_users_files(tmp_path: Path) -> None:
    src, dst = _source(tmp_path), tmp_path / "dst"
    _plant(dst)
    r = subprocess.run([DQC, "batch", "-j", "2", str(src), str(dst)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _intact(dst)
    assert len(list(dst.rglob("*.dqc"))) == 6

    # a killed run leaves dqc's own claims (and, killed while writing, temp files); the rerun
    # removes those and nothing else
    left = _kill_mid_run(["-j", "2", "--overwrite", str(src), str(dst)], dst)
    _killed_writer(dst / "sub" / "im1.dqc")
    left = _dqc_leftovers(dst)
    assert any(name.endswith(".dqc-lock") for name in left) and any(name.endswith(".part") for name in left), left
    _intact(dst)
    r = subprocess.run([DQC, "batch", "-j", "2", str(src), str(dst)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _dqc_leftovers(dst) == []
    _intact(dst)
    assert all(dqcodec.decode(p.read_bytes()).size == (192, 192) for p in dst.rglob("*.dqc"))

    # the same for a --decode run, its killed run and its rerun
    pictures = tmp_path / "pictures"
    _plant(pictures)
    for name in USER_FILES:  # and with the decoded pictures' names
        (pictures / name.replace(".dqc", ".png")).write_bytes(b"mine: " + name.encode())
    _kill_mid_run(["--decode", "-j", "2", str(dst), str(pictures)], pictures)
    _killed_writer(pictures / "im0.dqc.png")
    r = subprocess.run([DQC, "batch", "--decode", str(dst), str(pictures)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _dqc_leftovers(pictures) == []
    _intact(pictures)
    for name in USER_FILES:
        assert (pictures / name.replace(".dqc", ".png")).read_bytes() == b"mine: " + name.encode()
    assert len(list(pictures.rglob("im*.png"))) == 6


def test_batch_to_s3_never_removes_a_users_objects(s3, tmp_path: Path) -> None:  # noqa: F811
    s3.create_bucket(Bucket="users")  # moto keeps other tests' buckets in this process
    for i, png in enumerate(_pictures(4)):
        s3.put_object(Bucket="users", Key=f"src/{['', 'sub/'][i % 2]}im{i}.png", Body=png)
    mine = {f"{prefix}/{name}" for prefix in ("dst", "png") for name in USER_FILES}
    for key in mine:
        s3.put_object(Bucket="users", Key=key, Body=b"mine")

    def run(*args: str) -> subprocess.Popen:
        return subprocess.Popen([DQC, "batch", "-j", "2", *args], stderr=subprocess.PIPE, start_new_session=True)

    for args in (["s3://users/src", "s3://users/dst"], ["--decode", "s3://users/dst", "s3://users/png"]):
        first = run(*args)
        assert first.wait(timeout=300) == 0, first.stderr.read()  # type: ignore[union-attr]
        killed = run("--overwrite", *args)
        time.sleep(4)  # the workers are coding
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        again = run(*args)
        assert again.wait(timeout=300) == 0, again.stderr.read()  # type: ignore[union-attr]
    for key in mine:
        assert s3.get_object(Bucket="users", Key=key)["Body"].read() == b"mine", key
    listing = s3.list_objects_v2(Bucket="users", Prefix="png/")["Contents"]
    assert len([o for o in listing if o["Key"].endswith(".png") and "/." not in o["Key"]]) == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc")
@pytest.mark.parametrize("where", [[], ["--scheduler", "local"]], ids=["pool", "dask"])
def test_early_ctrl_c_prints_no_traceback(tmp_path: Path, where: list[str]) -> None:
    """SIGINT to the whole process group at several moments of a batch's start, while its
    workers import torch: one line from the batch, nothing from the workers, exit 130."""
    src = _source(tmp_path, count=4, side=64)
    for delay in (0.5, 1.0, 2.0, 3.0, 4.5):
        dst = tmp_path / f"dst{delay}"
        run = subprocess.Popen([DQC, "batch", "-j", "2", *where, str(src), str(dst)], stderr=subprocess.PIPE,
                               start_new_session=True, preexec_fn=default_sigint)  # fmt: skip
        time.sleep(delay)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        text = stderr.decode()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text and "ERROR" not in text, (delay, text)
        if run.returncode != 0:
            assert run.returncode == 130, (delay, run.returncode, text)
            assert len([line for line in text.splitlines() if line.startswith("dqc: ")]) == 1, text
        if dst.exists() and not where:  # the pool's workers unwind their jobs as the batch ends
            deadline = time.monotonic() + 15
            while _dqc_leftovers(dst) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _dqc_leftovers(dst) == []
        if dst.exists():  # a Dask worker may have been stopped in a job: the next run cleans up after it
            r = subprocess.run([DQC, "batch", "-j", "1", *where, str(src), str(dst)], capture_output=True, timeout=300)
            assert r.returncode == 0 and _dqc_leftovers(dst) == [], r.stderr


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs a user and mount namespace to mount a small tmpfs")
def test_a_full_disk_keeps_the_manifest_and_says_so_once(tmp_path: Path) -> None:
    """DST on a 512 KiB tmpfs (mounted in a namespace of the test's own), mostly filled by a file
    of the user's: the run stops when the disk is full, says so once with the bytes needed, and
    the manifest holds a row for every file made."""
    src = tmp_path / "src"
    src.mkdir()
    for i, png in enumerate(_pictures(24, side=256)):
        (src / f"im{i:02d}.png").write_bytes(png)
    dst, out = tmp_path / "dst", tmp_path / "out"
    dst.mkdir()
    out.mkdir()
    script = (
        f"mount -t tmpfs -o size=512k tmpfs {dst} && "
        f"head -c 430000 /dev/zero > {dst}/users-file && "
        f"{DQC} batch -j 1 -q 100 {src} {dst} 2> {out}/stderr; echo $? > {out}/rc; "
        f"ls -A {dst} > {out}/listing; cat {dst}/dqc-manifest/*.jsonl > {out}/manifest"
    )
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=600)
    stderr = (out / "stderr").read_text()
    assert int((out / "rc").read_text()) == 1, stderr
    assert stderr.count("disk is full") == 1 and "bytes" in stderr, stderr
    assert "Traceback" not in stderr
    made = sorted(name for name in (out / "listing").read_text().split() if name.endswith(".dqc"))
    assert 0 < len(made) < 24
    rows = [json.loads(line) for line in (out / "manifest").read_text().splitlines()]
    ok = sorted(Path(r["output"]).name for r in rows if r["status"] == "ok")
    assert ok == made  # every file made has its row
    full = [r for r in rows if r["status"] == "fail"]  # the first, and any that were running then
    assert full and all(r["needed"] is not None and "disk is full" in r["error"] for r in full), full
    assert full[0]["needed"] > 0
    assert [name for name in (out / "listing").read_text().split() if ".dqc-" in name] == []
