"""The advisory output-folder lock: a second writer is refused, a stale lock is taken over, the lock is
released on exceptions, and nesting within one process does not deadlock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from ovs3d.errors import InputError
from ovs3d.io.lock import LOCK_NAME, StaleLockWarning, folder_lock

HOLDER = textwrap.dedent("""
    import sys
    from ovs3d.io.lock import folder_lock
    with folder_lock(sys.argv[1], purpose="holder test"):
        print("held", flush=True)
        sys.stdin.readline()
""")


def dead_pid() -> int:
    """The PID of a process that has exited (not reused yet, in all likelihood)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder: Path, pid: int, host: str | None = None, started: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "started": started or datetime.now().astimezone().isoformat(timespec="seconds"),
              "host": host or socket.gethostname(), "purpose": "old run"}
    (folder / LOCK_NAME).write_text(json.dumps(record))
    return folder / LOCK_NAME


def test_lock_file_holds_the_record_and_is_removed(tmp_path):
    folder = tmp_path / "out"
    with folder_lock(folder, purpose="stage 1") as path:
        assert path == folder / LOCK_NAME
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["purpose"] == "stage 1"
        assert record["host"] == socket.gethostname()
        datetime.fromisoformat(record["started"])
    assert not path.exists() and folder.is_dir()


def test_second_writer_is_refused_with_pid_and_start_time(tmp_path):
    folder = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = json.loads((folder / LOCK_NAME).read_text())["started"]
        with pytest.raises(InputError) as info:
            with folder_lock(folder, purpose="second"):
                pytest.fail("the second writer got the lock")
        message = str(info.value)
        assert info.value.path == folder / LOCK_NAME
        assert f"process {holder.pid}" in message and started in message and "holder test" in message
        assert "wait" in info.value.fix and "delete" in info.value.fix
        assert (folder / LOCK_NAME).exists()  # the refused writer left the holder's lock alone
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0 and not (folder / LOCK_NAME).exists()
    with folder_lock(folder):  # free again
        pass


def test_stale_lock_is_taken_over_with_a_warning(tmp_path):
    folder = tmp_path / "out"
    pid = dead_pid()
    write_lock(folder, pid)
    with pytest.warns(StaleLockWarning, match=f"process {pid} .*no longer running"):
        with folder_lock(folder, purpose="new run") as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_stale_lock_notice_goes_to_the_log_callback(tmp_path):
    folder = tmp_path / "out"
    write_lock(folder, dead_pid())
    lines: list[str] = []
    with folder_lock(folder, log=lines.append):
        pass
    assert len(lines) == 1 and "stale lock" in lines[0] and "\n" not in lines[0]


def test_reused_pid_counts_as_stale(tmp_path):
    """A lock naming a live PID whose process started after the lock was written is stale (PID reuse)."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    folder = tmp_path / "out"
    write_lock(folder, os.getppid(), started="2000-01-01T00:00:00+00:00")
    with pytest.warns(StaleLockWarning):
        with folder_lock(folder):
            pass


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    folder = tmp_path / "out"
    write_lock(folder, dead_pid(), host="some-other-host.invalid")
    with pytest.raises(InputError, match="some-other-host.invalid"):
        with folder_lock(folder):
            pass


def test_released_on_exception(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with folder_lock(folder):
            raise RuntimeError("boom")
    assert not (folder / LOCK_NAME).exists()


def test_nested_lock_in_one_process_does_not_deadlock(tmp_path):
    folder = tmp_path / "out"
    with folder_lock(folder, purpose="outer") as outer:
        with folder_lock(folder / ".", purpose="inner") as inner:  # same folder, another spelling
            assert inner == folder / "." / LOCK_NAME and outer.exists()
        assert outer.exists()  # the inner exit keeps the outer lock
        assert json.loads(outer.read_text())["purpose"] == "outer"
    assert not outer.exists()


def test_unreadable_lock_file_is_taken_over_after_a_grace_period(tmp_path, monkeypatch):
    from ovs3d.io import lock

    monkeypatch.setattr(lock, "UNREADABLE_GRACE_S", 0.1)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_bytes(b"\x00garbage")
    with pytest.warns(StaleLockWarning, match="unreadable"):
        with folder_lock(folder):
            pass
    assert not (folder / LOCK_NAME).exists()
