"""Stage-2 benchmark: the FDA pairwise term's memory, and seconds per iteration / peak RSS of training.

Sections (each measured in a fresh child process, so peak RSS is that configuration's alone):

* ``pairwise``: forward + backward of the FDA loss at the paper's size (8 crops x 1024 positions,
  6 classes, 512-d features) with ovs3d's chunked exact implementation and with the naive dense
  [8, 1024, 1024, C] autograd version (the authors' approach), in the same run. Reported: peak RSS
  above the child's baseline (inputs allocated) and seconds.
* ``synthetic`` / ``statue``: stage-2 training at the ``cpu`` preset on the synthetic scene and on
  ../shared/data/statue_504 (stage-1 field from a short stage-1 run, features from the cache).
* ``paper`` / ``paper_small``: the authors' batches (4096 CLIP rays + 8 DINO patches of 256x256,
  482 samples per ray, 6 classes; and 1024 + 2) on statue_504 with ALL views' CLIP features
  available as float16 memmaps. The features and DINO maps there are random (the authors' baseline
  used random-weight encoders too, so only time and memory mean anything).

Usage: ``python -m bench.segment [--sections pairwise synthetic statue paper paper_small]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch

from bench.common import peak_rss_gb, write_result


def _pairwise_child(kind: str, crops: int, positions: int, classes: int, queue) -> None:
    from ovs3d.train.losses import fda_loss, fda_loss_dense

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(crops, positions, 512, generator=g, requires_grad=True)
    text = torch.nn.functional.normalize(torch.randn(classes, 512, generator=g), dim=-1)
    dino = torch.randn(crops, positions, 768, generator=g)
    base = peak_rss_gb()
    start = time.perf_counter()
    fn = fda_loss if kind == "chunked" else fda_loss_dense
    pos, neg = fn(features, text, dino, 0.2, 0.7)
    (200 * pos + 0.2 * neg).backward()
    seconds = time.perf_counter() - start
    queue.put({"kind": kind, "peak_rss_above_inputs_gb": peak_rss_gb() - base, "seconds": seconds,
               "loss_pos": float(pos.detach()), "loss_neg": float(neg.detach()), "grad_norm": float(features.grad.norm())})


def in_child(target, *args) -> dict:
    """Run ``target(*args, queue)`` in a fresh spawned process and return what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def bench_pairwise(crops: int = 8, positions: int = 1024, classes: int = 6) -> dict:
    chunked = in_child(_pairwise_child, "chunked", crops, positions, classes)
    dense = in_child(_pairwise_child, "dense", crops, positions, classes)
    return {"shape": {"crops": crops, "positions": positions, "classes": classes}, "chunked": chunked,
            "dense": dense,
            "memory_ratio_dense_over_chunked": dense["peak_rss_above_inputs_gb"] / max(chunked["peak_rss_above_inputs_gb"], 1e-9),
            "same_value": abs(chunked["loss_neg"] - dense["loss_neg"]) <= 1e-3 * abs(dense["loss_neg"]) and abs(chunked["loss_pos"] - dense["loss_pos"]) <= 1e-6}


SECTIONS = {"pairwise": bench_pairwise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    args = parser.parse_args()
    result = {}
    for name in args.sections:
        print(f"bench segment: {name} ...", flush=True)
        result[name] = SECTIONS[name]()
        print(result[name], flush=True)
    write_result("segment", result)


if __name__ == "__main__":
    main()
