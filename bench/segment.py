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
  available as float16 pixel-major cache files, read per batch. The features and DINO maps there are random (the authors' baseline
  used random-weight encoders too, so only time and memory mean anything).

Usage: ``python -m bench.segment [--sections pairwise synthetic statue paper paper_small]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

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


# ---------------------------------------------------------------------------------------- training
def slab_field(box, reso, density: float, seed: int = 0):
    """A TensoRF in NDC whose density is ``density`` everywhere in its box (random appearance): with the
    marching step s, opacity per sample 1 - exp(-25 density s); it stands in for a trained stage 1
    with a realistic number of kept samples per ray (reported by the bench)."""
    from ovs3d.field.tensorf import TensoRF
    from ovs3d.scene.rayspace import NDCSpace

    space = NDCSpace(box=tuple(tuple(float(x) for x in corner) for corner in torch.as_tensor(box).tolist()))
    field = TensoRF(space, reso, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        total = field.density_grid.n_features
        for p in field.density_grid.planes:
            p.fill_(1.0)
        for line in field.density_grid.lines:
            line.fill_(density / total)
    return field


def random_caches(scene_root, out, size: tuple[int, int], store_stride: int = 2, dim: int = 512,
                  dino_dim: int = 768, seed: int = 0):
    """Feature caches in ovs3d's layout (float16 .npy + meta.json) filled with random unit vectors, for
    every image of the scene: CLIP [3, dim, h / stride, w / stride] at ``size`` = (w, h), DINO
    [dino_dim, h // 8, w // 8]. Only time and memory mean anything with them."""
    import numpy as np

    from ovs3d.features.cache import header_matches, image_records, save_array
    from ovs3d.io.atomic import write_json_atomic
    from ovs3d.features.extract import scene_images

    paths = scene_images(scene_root)
    w, h = size
    clip_shape = [3, dim, -(-h // store_stride), -(-w // store_stride)]
    dino_shape = [dino_dim, h // 8, w // 8]
    rng = np.random.default_rng(seed)
    folders = []
    for kind, shape, key in (("clip", clip_shape, {"resolution": [w, h]}),
                             ("dino", dino_shape, {"input_size": [w // 8 * 8, h // 8 * 8]})):
        folder = Path(out) / kind
        meta = {"key": key, "images": image_records(paths), "encoder": f"random {kind} (bench)", "shape": shape,
                "stride": 8, "dtype": "float16"}
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "meta.json", meta)
        axis = 1 if kind == "clip" else 0
        for path in paths:
            target = folder / f"{path.stem}.npy"
            if not header_matches(target, tuple(shape)):
                array = rng.standard_normal(shape, dtype=np.float32)
                array /= np.linalg.norm(array, axis=axis, keepdims=True)
                save_array(target, array)
        folders.append(folder)
    return folders


def anon_rss_gb() -> float:
    """Current anonymous resident memory (excludes file-backed pages), GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def _train_child(spec: dict, queue) -> None:
    import tempfile

    import numpy as np

    from ovs3d.features.cache import FeatureMaps
    from ovs3d.field.semantic import SemanticConfig, SemanticField
    from ovs3d.scene.load import load_scene
    from ovs3d.runs.load import load_run
    from ovs3d.train.configs import preset
    from ovs3d.train.schedule import n_to_reso
    from ovs3d.train.segment import SegmentTrainer
    from ovs3d.train.segment_data import prepare_data

    torch.set_num_threads(spec.get("threads", 2))
    scene = load_scene(spec["scene"], load_annotations=False)
    if spec.get("stage1"):
        base, record = load_run(spec["stage1"], stage="reconstruct")
        stage1_step = record.step
    else:
        box = torch.tensor([[-2.0, -2, -1], [2, 2, 1]])
        base = slab_field(box, n_to_reso(spec["n_voxels"], box), spec["density"])
        stage1_step = None
    clip = FeatureMaps(spec["clip"])
    if spec.get("classes"):
        text = torch.nn.functional.normalize(torch.randn(spec["classes"], clip.shape[1],
                                                         generator=torch.Generator().manual_seed(0)), dim=-1)
    else:
        from ovs3d.features.encoders import ClipConfig
        from ovs3d.features.registry import build_image_text_encoder
        from ovs3d.features.relevancy import text_embeddings
        from ovs3d.scene.annotations import read_classes

        encoder = build_image_text_encoder(ClipConfig(kind="builtin"), torch.device("cpu"))
        text = text_embeddings(encoder, read_classes(Path(spec["scene"]) / "segmentations" / "classes.txt"))
    data = prepare_data(scene, spec["clip"], spec["dino"], text)
    cfg = preset("segment", spec["preset"], **spec.get("overrides", {}))
    model = SemanticField(base, SemanticConfig(mode=cfg.mode, feature_dim=int(text.shape[1])))
    times, anon = [], []
    with tempfile.TemporaryDirectory() as out:
        trainer = SegmentTrainer(model, data, cfg, out, torch.device("cpu"), stage1_step=stage1_step)
        for _ in range(spec["iterations"]):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
            anon.append(anon_rss_gb())
    steady = times[cfg.joint_start_iter + 1:] or times[cfg.joint_start_iter:] or times
    queue.put({"s_per_iter": times, "s_per_iter_median": float(np.median(times)),
               "s_per_iter_after_joint": float(np.median(steady)),
               "after_joint_note": "median over the iterations after the first joint one (which also allocates "
                                   "the fresh optimiser's state)",
               "peak_rss_gb": peak_rss_gb(), "peak_anon_rss_gb": max(anon),
               "marching_step": trainer.step, "reso": list(base.reso), "views_with_features": len(data.views),
               "config": {k: getattr(cfg, k) for k in ("mode", "batch_size", "patch_num", "patch_size",
                                                      "samples_per_ray", "joint_start_iter")},
               "classes": int(text.shape[0])})


def kept_samples(spec: dict) -> float:
    """Mean kept samples per ray of the field the spec trains on (one batch of 1024 pixel rays)."""
    from ovs3d.render.volume import march
    from ovs3d.scene.load import load_scene
    from ovs3d.runs.load import load_run
    from ovs3d.train.schedule import marching_step

    scene = load_scene(spec["scene"], load_annotations=False)
    if spec.get("stage1"):
        base, record = load_run(spec["stage1"], stage="reconstruct")
        step = record.step
    else:
        box = torch.tensor([[-2.0, -2, -1], [2, 2, 1]])
        base = slab_field(box, (8, 8, 4), spec["density"])
        step = marching_step(box, spec.get("overrides", {}).get("samples_per_ray", 482))
    g = torch.Generator().manual_seed(0)
    u = torch.rand(1024, generator=g) * scene.width
    v = torch.rand(1024, generator=g) * scene.height
    o, d = base.space.rays(scene.cameras, torch.zeros(1024, dtype=torch.long), u, v)
    return march(base, o, d, step).n_kept / 1024


def bench_training(spec: dict) -> dict:
    result = in_child(_train_child, spec)
    result["kept_samples_per_ray"] = kept_samples(spec)
    result["field"] = "stage-1 run " + spec["stage1"] if spec.get("stage1") else \
        f"uniform-density slab (density {spec['density']}) at N_voxel {spec.get('n_voxels')}"
    return result


FEATURES = Path("/tmp/ovs3d-bench-features")
AUTHORS = {"paper": {"s_per_iter": [50, 55], "peak_rss_gb": 18.8, "note": "25 % of views' features"},
           "paper_small": {"s_per_iter": [10.2, 10.4], "peak_rss_gb": 9.4, "note": "10 % of views' features"}}


def statue_caches() -> tuple[Path, Path]:
    from bench.common import require_shared

    return tuple(random_caches(require_shared("statue_504"), FEATURES / "statue_504", (504, 378)))


def bench_paper(small: bool = False) -> dict:
    from bench.common import require_shared

    clip, dino = statue_caches()
    overrides = {"joint_start_iter": 1}
    if small:
        overrides.update(batch_size=1024, patch_num=2)
    spec = {"scene": str(require_shared("statue_504")), "clip": str(clip), "dino": str(dino), "classes": 6,
            "preset": "paper", "overrides": overrides, "iterations": 8, "n_voxels": 262_144_000,
            "density": 2.0}
    result = bench_training(spec)
    theirs = AUTHORS["paper_small" if small else "paper"]
    result["authors"] = theirs
    result["ratio_time_vs_authors"] = result["s_per_iter_after_joint"] / (sum(theirs["s_per_iter"]) / 2)
    result["ratio_rss_vs_authors"] = result["peak_rss_gb"] / theirs["peak_rss_gb"]
    result["features"] = "random float16 pixel-major cache files for ALL 29 views, read per batch (timing/memory only)"
    return result


def bench_statue_cpu() -> dict:
    from bench.common import require_shared

    clip, dino = statue_caches()
    spec = {"scene": str(require_shared("statue_504")), "clip": str(clip), "dino": str(dino), "classes": 6,
            "preset": "cpu", "overrides": {"joint_start_iter": 1, "samples_per_ray": 256}, "iterations": 4,
            "n_voxels": 200 ** 3, "density": 2.0}
    return bench_training(spec)


SYNTHETIC = {"scene": "/tmp/ovs3d-bench-demo/scene", "stage1": "/tmp/ovs3d-bench-demo/outputs/reconstruct"}
"""The folders ``python -m bench.demo`` leaves (it runs before this benchmark in ``python -m bench all``)."""


def bench_synthetic() -> dict:
    import glob

    scene = SYNTHETIC["scene"]
    clip, dino = glob.glob(f"{scene}/features/clip-*"), glob.glob(f"{scene}/features/dino-*")
    if not (clip and dino and Path(SYNTHETIC["stage1"], "checkpoint.safetensors").is_file()):
        raise SystemExit(f"bench segment: no synthetic scene with features and stage-1 run at {scene}; "
                         "run `python -m bench.demo` first (or pass --synthetic-scene/--synthetic-stage1)")
    spec = {"scene": scene, "clip": clip[0], "dino": dino[0], "preset": "cpu", "overrides": {"joint_start_iter": 1},
            "iterations": 4, "stage1": SYNTHETIC["stage1"]}
    return bench_training(spec)


SECTIONS = {"pairwise": bench_pairwise, "synthetic": bench_synthetic, "statue": bench_statue_cpu,
            "paper": bench_paper, "paper_small": lambda: bench_paper(small=True)}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--synthetic-scene", default=SYNTHETIC["scene"],
                        help="synthetic scene folder with builtin feature caches (ovs3d extract)")
    parser.add_argument("--synthetic-stage1", default=SYNTHETIC["stage1"], help="its stage-1 run folder")
    args = parser.parse_args()
    SYNTHETIC.update(scene=args.synthetic_scene, stage1=args.synthetic_stage1)
    import json

    from bench.common import RESULTS_DIR

    previous = RESULTS_DIR / "segment.json"
    sections = ("pairwise",) + tuple(SECTIONS)
    result = {k: v for k, v in json.loads(previous.read_text()).items() if k in sections} if previous.is_file() else {}
    for name in args.sections:
        print(f"bench segment: {name} ...", flush=True)
        result[name] = SECTIONS[name]()
        print(result[name], flush=True)
    write_result("segment", result)


if __name__ == "__main__":
    main()
