"""The training loop both stages share: progress bar, TensorBoard scalars, checkpoint cadence, timing and
the stats JSON.

A trainer exposes ``iteration`` (iterations done), ``total`` (iterations to reach), ``elapsed``
(seconds trained so far, across resumes), ``train_step() -> dict`` of scalars (advances
``iteration`` by one) and ``save()`` (a resumable checkpoint). Resuming is the trainer's own
constructor's business (it restores ``iteration``); the loop simply continues from there.

After every step: scalars go to ``<out>/tb`` when ``iteration % log_every == 0`` (and at the end), a
checkpoint is written when ``iteration % checkpoint_every == 0`` (and at the end). When the loop
returns, ``<out>/train_summary.json`` holds the stats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ovs3d.io.atomic import write_json_atomic


class Trainer(Protocol):
    iteration: int
    total: int
    elapsed: float

    def train_step(self) -> dict[str, float]: ...

    def save(self) -> None: ...


@dataclass
class LoopStats:
    """What one call of ``train_loop`` did."""

    iterations_run: int = 0
    seconds: float = 0.0
    iteration_seconds: list[float] = field(default_factory=list)
    last: dict[str, float] = field(default_factory=dict)
    complete: bool = False

    @property
    def s_per_iter(self) -> float:
        return self.seconds / max(self.iterations_run, 1)


def train_loop(trainer: Trainer, out: str | Path, name: str, checkpoint_every: int, log_every: int,
               progress: bool = True, stop_after: int | None = None,
               postfix: Callable[[dict[str, float]], dict[str, str]] | None = None) -> LoopStats:
    """Train ``trainer`` from its current iteration to ``trainer.total`` (or for ``stop_after`` iterations,
    which tests use to simulate a kill); returns the stats, also written to ``train_summary.json``."""
    from torch.utils.tensorboard import SummaryWriter  # heavy (tensorboard), only needed while training
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out / "tb"), purge_step=trainer.iteration)
    bar = tqdm(total=trainer.total, initial=trainer.iteration, disable=not progress, desc=name, dynamic_ncols=True)
    stats, base, start = LoopStats(), trainer.elapsed, time.perf_counter()
    try:
        while trainer.iteration < trainer.total and (stop_after is None or stats.iterations_run < stop_after):
            tick = time.perf_counter()
            logs = trainer.train_step()
            stats.iteration_seconds.append(time.perf_counter() - tick)
            stats.iterations_run += 1
            stats.last = logs
            trainer.elapsed = base + time.perf_counter() - start
            bar.update(1)
            end = trainer.iteration == trainer.total
            if trainer.iteration % log_every == 0 or end:
                for key, value in logs.items():
                    writer.add_scalar(f"train/{key}", value, trainer.iteration)
                if postfix is not None:
                    bar.set_postfix(postfix(logs))
            if trainer.iteration % checkpoint_every == 0 or end:
                trainer.save()
    finally:
        bar.close()
        writer.close()
    stats.seconds = time.perf_counter() - start
    stats.complete = trainer.iteration >= trainer.total
    write_json_atomic(out / "train_summary.json", {
        "stage": name, "iteration": trainer.iteration, "iterations_run": stats.iterations_run,
        "s_per_iter": stats.s_per_iter, "elapsed_s": trainer.elapsed, "complete": stats.complete, "last": stats.last})
    return stats
