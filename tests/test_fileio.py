import os
import stat
from pathlib import Path

import pytest

from dqcodec.fileio import claim, write_atomic


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_file_gets_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.dqc", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.dqc") == 0o640
    assert (tmp_path / "a.dqc").read_bytes() == b"x"


def test_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a.dqc"
    target.write_bytes(b"old")
    target.chmod(0o604)
    write_atomic(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o604


def test_failed_write_leaves_target_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.dqc"
    target.write_bytes(b"old")

    def fail(f: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dqc"]


def test_no_clobber_holds_against_a_file_made_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "a.dqc"

    def another_run_finishes_first(f: object) -> None:
        target.write_bytes(b"theirs")
        f.write(b"mine")  # type: ignore[attr-defined]

    with pytest.raises(FileExistsError):
        write_atomic(target, another_run_finishes_first, overwrite=False)
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dqc"]
    write_atomic(tmp_path / "b.dqc", lambda f: f.write(b"new"), overwrite=False)
    assert (tmp_path / "b.dqc").read_bytes() == b"new"


def test_one_claim_at_a_time(tmp_path: Path) -> None:
    target = tmp_path / "a.dqc"
    with claim(target) as first:
        with claim(target) as second:
            assert first and not second
    assert list(tmp_path.iterdir()) == []
    with claim(target) as again:
        assert again
