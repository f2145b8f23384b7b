"""Early ray termination in ``march``: the march of a stage-1 run's views with and without it, same run.

``march`` stops a ray once its transmittance falls to the weight threshold (``render/volume.py``). The
baseline is the same march that never stops (``weight_threshold=-1``: every occupied sample's density is
evaluated, as before the change); the kept samples of the stopping march are checked equal to the
baseline's samples above the threshold. Reports seconds (best of ``--rounds``, alternating) and density
evaluations for each, on the given views at the run's resolution.

Usage: ``python -m bench.march --run <stage-1 run> --scene <scene> [--views 0 12] [--threads 1]``;
writes ``bench/results/march.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import write_result

THRESHOLD = 1e-4
"""``march``'s default weight threshold: the stopping march uses it, the baseline's samples are cut at it."""


def march_views(field, cameras, views: list[int], step: float, threshold: float, chunk: int = 8192) -> tuple[float, int, list]:
    """(seconds, density evaluations, [kept weights per chunk]) of marching every pixel of ``views``."""
    from ovs3d.render.volume import march  # bench modules import ovs3d lazily

    tick, n_density, kept = time.perf_counter(), 0, []
    u, v = (a.reshape(-1) for a in cameras.pixel_grid())
    for view in views:
        index = torch.full_like(u, view, dtype=torch.long)
        for s in range(0, u.numel(), chunk):
            o, d = field.space.rays(cameras, index[s:s + chunk], u[s:s + chunk], v[s:s + chunk])
            samples = march(field, o, d, step, weight_threshold=threshold)
            n_density += samples.n_density
            kept.append(samples.weights[samples.weights > THRESHOLD])
    return time.perf_counter() - tick, n_density, kept


def main() -> None:
    from ovs3d.runs.load import load_run
    from ovs3d.scene.load import load_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--views", type=int, nargs="+", default=[0, 12])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    field, record = load_run(args.run, "cpu", stage="reconstruct")
    cameras = load_scene(args.scene, load_annotations=False).cameras
    seconds = {"stopping": [], "never_stopping": []}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, threshold in (("never_stopping", -1.0), ("stopping", THRESHOLD)):
                took, n_density, kept = march_views(field, cameras, args.views, record.step, threshold)
                seconds[name].append(took)
                if name == "stopping":
                    stop_density, stop_kept = n_density, kept
                else:
                    full_density, full_kept = n_density, kept
    same = all(torch.allclose(a, b, atol=1e-7) for a, b in zip(stop_kept, full_kept))
    best = {k: min(v) for k, v in seconds.items()}
    write_result("march", {"run_space": field.space.name, "views": args.views, "threads": args.threads,
                           "seconds": {k: round(v, 3) for k, v in best.items()},
                           "speedup": round(best["never_stopping"] / best["stopping"], 3),
                           "density_evaluations": {"stopping": stop_density, "never_stopping": full_density},
                           "kept_samples_equal": same})


if __name__ == "__main__":
    main()
