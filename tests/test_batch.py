"""`dqc batch` beyond one folder: an S3 server and a Dask cluster started here, as a user would."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dqcodec
from tests.test_cli import DQC, _alive

pytest.importorskip("distributed")
pytest.importorskip("s3fs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pictures(count: int, side: int = 64) -> list[bytes]:
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    out = []
    for i in range(count):
        buf = io.BytesIO()
        astronaut.rotate(7 * i).resize((side, side)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch):
    """A real S3-protocol server (moto's, in a thread of this process) and a client for it."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3")
    client.create_bucket(Bucket="photos")
    yield client
    server.stop()


def _keys(client, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket="photos", Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_batch_from_and_to_s3_with_manifest_and_resume(s3) -> None:
    for i, png in enumerate(_pictures(4)):
        s3.put_object(Bucket="photos", Key=f"src/sub/im{i}.png", Body=png)
    s3.put_object(Bucket="photos", Key="src/notes.jpg", Body=b"a text file named .jpg")
    r = subprocess.run(
        [DQC, "batch", "-j", "2", "s3://photos/src", "s3://photos/dst"], capture_output=True, timeout=300
    )
    assert r.returncode == 1  # one input failed
    assert b"s3://photos/src/notes.jpg: not an image format dqc can read" in r.stderr
    outputs = [k for k in _keys(s3, "dst/") if k.endswith(".dqc")]
    assert outputs == [f"dst/sub/im{i}.dqc" for i in range(4)]
    for key in outputs:
        dqcodec.decode(s3.get_object(Bucket="photos", Key=key)["Body"].read())
    (part,) = _keys(s3, "dst/dqc-manifest/")
    rows = [json.loads(line) for line in s3.get_object(Bucket="photos", Key=part)["Body"].read().splitlines()]
    assert sorted(r["status"] for r in rows) == ["fail", "ok", "ok", "ok", "ok"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["bytes"] > 0 and 0 < r["bpp"] < 8 and r["seconds"] > 0 and r["worker"] for r in ok)
    assert {r["output"] for r in ok} == {f"s3://photos/{k}" for k in outputs}

    again = subprocess.run([DQC, "batch", "s3://photos/src", "s3://photos/dst"], capture_output=True, timeout=300)
    assert again.returncode == 1 and b"skipped 4" in again.stderr  # done files are not coded again
    report = subprocess.run([DQC, "batch", "--report", "s3://photos/dst"], capture_output=True, timeout=300)
    assert report.returncode == 0
    assert b"5 inputs: 4 coded, 1 failed" in report.stdout and b"notes.jpg" in report.stdout

    back = subprocess.run(
        [DQC, "batch", "--decode", "s3://photos/dst", "s3://photos/png"], capture_output=True, timeout=300
    )
    assert back.returncode == 0, back.stderr
    pictures = [k for k in _keys(s3, "png/") if k.endswith(".png")]
    assert pictures == [f"png/sub/im{i}.dqc.png" for i in range(4)]  # never the original's name
    body = s3.get_object(Bucket="photos", Key=pictures[0])["Body"].read()
    assert Image.open(io.BytesIO(body)).size == (64, 64)


def test_batch_on_a_dask_cluster_survives_a_killed_worker(tmp_path: Path) -> None:
    """A scheduler and two workers as separate processes; one worker is SIGKILLed mid-run."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i, png in enumerate(_pictures(50, side=96)):
        (src / f"im{i:02d}.png").write_bytes(png)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    port = _free_port()
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], stderr=subprocess.DEVNULL
    )
    address = f"tcp://127.0.0.1:{port}"
    worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                  "--no-dashboard"]  # fmt: skip
    workers = [subprocess.Popen(worker_cmd, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        batch = subprocess.Popen([DQC, "batch", "--scheduler", address, str(src), str(dst)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while len(list(dst.glob("*.dqc"))) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert batch.poll() is None, "the batch ended before a worker could be killed"
        os.kill(workers[0].pid, signal.SIGKILL)
        _, stderr = batch.communicate(timeout=300)
        assert batch.returncode == 1, stderr  # broken.png
        assert not _alive(workers[0].pid)
    finally:
        for p in (*workers, scheduler):
            p.kill()
            p.wait()
    made = sorted(p.name for p in dst.glob("*.dqc"))
    assert made == [f"im{i:02d}.dqc" for i in range(50)]
    assert all(dqcodec.decode((dst / name).read_bytes()).size == (96, 96) for name in made)
    assert [p.name for p in dst.iterdir() if p.name.startswith(".")] == []  # no temp or lock file left
    rows = [
        json.loads(line) for part in (dst / "dqc-manifest").glob("*.jsonl") for line in part.read_text().splitlines()
    ]
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert len(by_source) == 51 and all(len(r) == 1 for r in by_source.values())  # every input once
    failed = [r[0] for r in by_source.values() if r[0]["status"] == "fail"]
    assert [Path(r["source"]).name for r in failed] == ["broken.png"] and "\n" not in failed[0]["error"]
    assert len({r[0]["worker"] for r in by_source.values() if r[0]["status"] == "ok"}) == 2  # both workers coded


def test_missing_scheduler_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "src" / "a.png")
    r = subprocess.run(
        [DQC, "batch", "--scheduler", f"tcp://127.0.0.1:{_free_port()}", str(tmp_path / "src"), str(tmp_path / "d")],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot reach it" in lines[0], r.stderr
