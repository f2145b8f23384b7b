"""Crops per forward pass of an encoder on the CPU: chosen by a short calibration on first use, remembered.

The fastest batch differs with the network, its precision, the thread count and the CPU (fp32
ViT-B/16 on 2 cores: 4 crops per pass beat 16, 64 and 256, ``bench/results/extract.json``). The first
use times one forward pass of each candidate batch size on random inputs, after one warm-up pass, and
keeps the one with the fewest seconds per input. The choice is stored in
``$XDG_CACHE_HOME/ovs3d/calibration.json`` (default ``~/.cache``), keyed by the encoder's name, the
precision, the CPU, the thread count and the torch version, so later runs reuse it; the threads are
the command's (``--threads``), not chosen here. ``--extract.pyramid.batch-size`` overrides the choice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ovs3d.device import cpu_model
from ovs3d.io.atomic import write_json_atomic

CANDIDATES = (4, 8, 16)


def store_path() -> Path:
    """The calibration file: ``$XDG_CACHE_HOME/ovs3d/calibration.json`` (default ``~/.cache``)."""
    home = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(home) / "ovs3d" / "calibration.json"


def read_store(path: Path) -> dict:
    """The stored choices; an absent or damaged file counts as empty (it is rewritten)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def machine_key(name: str, precision: str) -> str:
    """What a choice depends on: encoder, precision, CPU, threads, torch."""
    return (f"{name} | {precision} | {cpu_model()} x{os.cpu_count()} | threads {torch.get_num_threads()} | "
            f"torch {torch.__version__}")


def time_per_input(forward: Callable[[int], object], batch: int) -> float:
    """Seconds per input of one ``forward(batch)`` call."""
    start = time.perf_counter()
    forward(batch)
    return (time.perf_counter() - start) / batch


def calibrated_batch_size(name: str, precision: str, forward: Callable[[int], object],
                          candidates: tuple[int, ...] = CANDIDATES, path: Path | None = None) -> int:
    """The stored batch size for this encoder and machine, else the fastest of ``candidates`` by
    ``forward(batch)`` (which runs the network on ``batch`` random inputs), stored for next time."""
    path = path or store_path()
    key = machine_key(name, precision)
    stored = read_store(path)
    choice = stored.get(key, {}).get("batch_size") if isinstance(stored.get(key), dict) else None
    if isinstance(choice, int) and choice > 0:
        return choice
    forward(candidates[0])  # warm-up: first-call allocations and kernel selection
    timings = {batch: time_per_input(forward, batch) for batch in candidates}
    choice = min(timings, key=timings.get)
    stored[key] = {"batch_size": choice, "seconds_per_input": {str(b): round(t, 5) for b, t in timings.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, stored)
    except OSError:  # a read-only home: calibrate again next time
        pass
    return choice
