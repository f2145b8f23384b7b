"""An advisory lock per output folder, so that two ovs3d processes never write into one folder at once.

``with folder_lock(folder, purpose="train stage 1"):`` creates ``<folder>/.ovs3d.lock`` atomically
(``O_CREAT | O_EXCL``; the folder is created when missing) holding the JSON object
``{"pid", "started" (ISO 8601 local time with offset), "host", "purpose"}``, and removes it on exit, also
when the block raises. Rules:

- another live holder: ``InputError`` naming the lock file, the holder's PID, host, start time and
  purpose, with the fix (wait for it, or delete the lock file if that process is gone);
- a stale lock (its PID is not alive on this host, or the process with that PID started after the
  lock was written, i.e. the PID was reused) is taken over with a one-line warning (``StaleLockWarning``,
  or the ``log`` callback when given). A lock written on another host cannot be checked and is never
  taken over. A lock file that stays unreadable (not JSON) for a few seconds counts as stale;
- within one process the lock is reentrant: a nested ``folder_lock`` of the same folder (by path, links
  resolved) just nests, and only the outermost exit removes the file;
- exit removes the file only while it is still this process's lock (it is never someone else's).

The lock is advisory: it guards ovs3d against itself (two runs, or a run and a render, on one folder),
not against other programs. Takeover is serialised by a second ``O_EXCL`` file (``.ovs3d.lock.takeover``)
so that two processes finding the same stale lock cannot both take it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from ovs3d.errors import InputError

LOCK_NAME = ".ovs3d.lock"
TAKEOVER_SUFFIX = ".takeover"
UNREADABLE_GRACE_S = 3.0   # a lock file being written is briefly empty; unreadable longer than this: stale
TAKEOVER_STALE_S = 10.0    # a takeover marker older than this was left by a process that died during takeover
START_SLACK_S = 2.0        # clock granularity when comparing a process's start time with the lock's

_held: dict[str, tuple[int, int, dict]] = {}  # realpath -> (pid, depth, record) of the locks this process holds
_guard = threading.Lock()


class StaleLockWarning(UserWarning):
    """A lock left by a process that is gone was taken over."""


def lock_path(folder: str | Path) -> Path:
    return Path(folder) / LOCK_NAME


def read_record(path: Path) -> dict | None:
    """The JSON record of a lock file; None when it is missing, being written, or damaged."""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int) or isinstance(record.get("pid"), bool):
        return None
    return record


def process_start_time(pid: int) -> float | None:
    """Start time (Unix seconds) of process ``pid`` from /proc (Linux), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def holder_alive(record: dict) -> bool:
    """Whether the process that wrote ``record`` may still run. A lock of another host counts as alive
    (it cannot be checked from here)."""
    if record.get("host") != socket.gethostname():
        return True
    pid = record["pid"]
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False  # not held by this process (checked before), so left by an earlier process of this PID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    try:
        started = datetime.fromisoformat(str(record.get("started"))).timestamp()
    except (ValueError, TypeError, OverflowError, OSError):
        return True
    begun = process_start_time(pid)
    return begun is None or begun <= started + START_SLACK_S


def describe(record: dict) -> str:
    purpose = f" ({record['purpose']})" if record.get("purpose") else ""
    return (f"process {record.get('pid')} on {record.get('host', 'an unknown host')} since "
            f"{record.get('started', 'an unknown time')}{purpose}")


def try_create(path: Path, record: dict) -> bool:
    """Create the lock file holding ``record`` atomically; False when it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def take_over(path: Path, judged: dict | None, record: dict) -> bool:
    """Replace the stale lock ``judged`` (None: an unreadable one) by ``record``, serialised by the
    takeover marker; False when another process got there first (the caller retries)."""
    marker = path.with_name(path.name + TAKEOVER_SUFFIX)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - marker.stat().st_mtime > TAKEOVER_STALE_S:
                marker.unlink()
        except OSError:
            pass
        return False
    os.close(fd)
    try:
        if read_record(path) != judged:  # it changed since it was judged stale: judge again
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return try_create(path, record)
    finally:
        try:
            marker.unlink()
        except OSError:
            pass


def acquire(path: Path, record: dict, warn: Callable[[str], None]) -> None:
    """Create the lock file, taking over a stale one; InputError while a live process holds it."""
    unreadable_since = None
    while True:
        if try_create(path, record):
            return
        holder = read_record(path)
        if holder is None:
            if not path.exists():
                continue
            unreadable_since = unreadable_since or time.monotonic()
            if time.monotonic() - unreadable_since < UNREADABLE_GRACE_S:
                time.sleep(0.05)  # most likely being written right now
                continue
            if take_over(path, None, record):
                warn(f"{path}: took over an unreadable lock file (not written by a running ovs3d)")
                return
            time.sleep(0.05)
            continue
        unreadable_since = None
        if holder_alive(holder):
            raise InputError(path, f"the folder is in use by {describe(holder)}",
                             f"wait until that process has finished, or, if it is no longer running, "
                             f"delete {path}")
        if take_over(path, holder, record):
            warn(f"{path}: took over the stale lock of {describe(holder)}: that process is no longer running")
            return
        time.sleep(0.05)


def release(path: Path, record: dict) -> None:
    """Remove the lock file if it is still the one this process wrote."""
    if read_record(path) == record:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def folder_lock(folder: str | Path, purpose: str = "", log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the advisory lock of ``folder`` for the block (see the module docstring); yields the lock
    file's path. ``log`` receives the one-line notice of a stale-lock takeover (default: a
    ``StaleLockWarning``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    key = os.path.realpath(folder)
    pid = os.getpid()
    with _guard:
        held = _held.get(key)
        if held is not None and held[0] == pid:
            _held[key] = (pid, held[1] + 1, held[2])
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield path
        finally:
            with _guard:
                owner, depth, record = _held[key]
                _held[key] = (owner, depth - 1, record)
        return

    def warn(message: str) -> None:
        if log is not None:
            log(message)
        else:
            warnings.warn(message, StaleLockWarning, stacklevel=4)

    record = {"pid": pid, "started": datetime.now().astimezone().isoformat(timespec="seconds"),
              "host": socket.gethostname(), "purpose": purpose}
    with _guard:
        acquire(path, record, warn)
        _held[key] = (pid, 1, record)
    try:
        yield path
    finally:
        with _guard:
            _held.pop(key, None)
            release(path, record)
