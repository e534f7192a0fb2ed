"""search_spaces.files, the one atomic writer: every writer fsyncs what it wrote before the
rename that publishes it, and a failed write leaves the previous file and no temporary."""

from __future__ import annotations

import os

import pytest

from search_spaces import files


@pytest.fixture
def synced(monkeypatch):
    """The inode numbers fsync was called on, in order."""
    seen: list[int] = []
    real = os.fsync

    def record(fd):
        seen.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return seen


def test_text_and_json_writers_fsync_the_file_they_publish(tmp_path, synced):
    files.atomic_write_text(tmp_path / "a.txt", "one\r\ntwo\n")
    assert (tmp_path / "a.txt").read_bytes() == b"one\r\ntwo\n"  # written exactly as given
    files.atomic_write_json(tmp_path / "b.json", {"k": [1, 2]})
    assert (tmp_path / "b.json").read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'
    assert synced == [(tmp_path / "a.txt").stat().st_ino, (tmp_path / "b.json").stat().st_ino]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_atomic_dir_fsyncs_every_file_in_it(tmp_path, synced):
    with files.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x.bin").write_bytes(b"x")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "y.bin").write_bytes(b"y")
    written = {(tmp_path / "d" / "x.bin").stat().st_ino,
               (tmp_path / "d" / "sub" / "y.bin").stat().st_ino}
    assert set(synced) == written and len(synced) == 2


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "t.txt"
    files.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
