"""spatialrec.io: a file is complete or absent after a crash mid-write, and no temporary file is left."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spatialrec.io import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_text, temp_path


class Crash(BaseException):
    """Stands for a kill arriving mid-write (a BaseException, as KeyboardInterrupt is)."""


def _half_then_crash(data: bytes):
    def write(f) -> None:
        f.write(data[: len(data) // 2])
        f.flush()
        raise Crash

    return write


def test_crash_mid_write_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(Crash):
        atomic_write(target, _half_then_crash(b"0123456789"))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "notes.json", '{"old": 1}\n')
    with pytest.raises(Crash):
        atomic_write(target, _half_then_crash(b'{"new": 2, "longer": true}\n'))
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["notes.json"]


def test_process_killed_mid_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    # A real kill (os._exit: no cleanup runs) after half the new content reached the disk.
    target = tmp_path / "data.bin"
    target.write_bytes(b"old content")
    src = Path(__file__).resolve().parents[1] / "src"
    code = (
        "import os, sys\n"
        "from spatialrec.io import atomic_write\n"
        "def write(f):\n"
        "    f.write(b'new half'); f.flush(); os.fsync(f.fileno()); os._exit(3)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)], check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(src)},
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert target.read_bytes() == b"old content"
    # The killed writer's temporary file says which process wrote it (for stale-file cleanup).
    left = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and left[0].startswith(".data.bin.tmp-") and left[0].rsplit("-", 1)[1].isdigit()


def test_complete_writes_text_bytes_and_torch(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "a" / "t.txt", "x\r\ny\n").read_bytes() == b"x\r\ny\n"  # folder created, newlines kept
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    path = atomic_torch_save({"w": torch.arange(3)}, str(tmp_path / "m.pt"))
    assert isinstance(path, Path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert not list(tmp_path.rglob(".*tmp*"))
    atomic_write_text(tmp_path / "b.bin", "replaced")
    assert (tmp_path / "b.bin").read_text() == "replaced"


def test_disk_full_names_the_file_and_keeps_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic_write_text(tmp_path / "metrics.json", "{}")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(target, '{"a": 1}', "the summary")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "No space left on device while writing the summary" in str(info.value)
    assert target.read_text() == "{}"
    assert not temp_path(target).exists()


def test_bad_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mode must be 'w' \(text\) or 'wb' \(bytes\), got 'a'"):
        atomic_write(tmp_path / "x", lambda f: None, mode="a")
    assert list(tmp_path.iterdir()) == []
