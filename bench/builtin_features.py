"""2D segmentation quality of the built-in (weight-free) encoders on synthetic scenes.

For each annotated view: the CLIP-slot hierarchy of the built-in colour-word encoder (paper pyramid,
seeded jitter), L2-normalised, min-max relevancy per (scale, class), mean over scales, argmax over the
scene's classes (``features.relevancy.label_map``), scored with the 3D-OVS protocol (subset accuracy,
mIoU with absent classes at 0; ``eval.segmentation.evaluate_3dovs``). Baseline in the same run: the
majority class everywhere (what a teacher without information would score).

Run: ``python -m bench.builtin_features``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import timer, write_result
from ovs3d.eval.segmentation import evaluate_3dovs
from ovs3d.features.builtin import ColorWordEncoder
from ovs3d.features.extract import normalize
from ovs3d.features.pyramid import PyramidConfig, extract_hierarchy
from ovs3d.features.relevancy import label_map, text_embeddings
from ovs3d.scene.load import load_scene
from ovs3d.scene.synthetic import make_synthetic_scene

SCENES = {
    "test_fixture_96x72": dict(seed=0, n_views=16, width=96, height=72, n_annotated=4, supersample=2),
    "default_160x120_seed1": dict(seed=1, n_views=8, width=160, height=120, n_annotated=4, supersample=2),
}


def score(root: Path) -> dict:
    scene = load_scene(root)
    ann = scene.annotations
    encoder = ColorWordEncoder()
    text = text_embeddings(encoder, ann.classes)
    labels = []
    with timer() as t:
        for view in ann.views:
            image = torch.from_numpy(scene.images[view]).permute(2, 0, 1).contiguous()
            features = normalize(extract_hierarchy(image, encoder, PyramidConfig(seed=0), view), dim=1)
            labels.append(label_map(features, text).numpy())
    result = evaluate_3dovs(np.stack(labels), ann.labels, ann.views, ann.classes)
    majority = int(ann.labels.reshape(-1, len(ann.classes)).sum(0).argmax())
    base = evaluate_3dovs(np.full_like(np.stack(labels), majority), ann.labels, ann.views, ann.classes)
    return {"encoder": encoder.name, "classes": ann.classes, "views": ann.views,
            "accuracy_per_view": [round(a, 4) for a in result.accuracy_per_view],
            "miou_per_view": [round(m, 4) for m in result.miou_per_view],
            "accuracy": round(result.accuracy, 4), "miou": round(result.miou, 4),
            "iou_per_class_mean_over_views": [round(float(x), 4) for x in np.mean(result.iou, axis=0)],
            "majority_class_baseline": {"class": ann.classes[majority], "accuracy": round(base.accuracy, 4),
                                        "miou": round(base.miou, 4)},
            "seconds_per_view": round(t["s"] / len(ann.views), 2)}


def main() -> None:
    torch.set_num_threads(1)  # small tensors: one thread is faster on the shared 2-core machine
    results = {}
    with tempfile.TemporaryDirectory(prefix="ovs3d-bench-builtin-") as work:
        for name, spec in SCENES.items():
            root = make_synthetic_scene(Path(work) / name, **spec)
            results[name] = {"scene": spec, **score(root)}
            print(name, results[name]["accuracy_per_view"], results[name]["miou_per_view"])
    write_result("builtin_features", {"scenes": results})


if __name__ == "__main__":
    main()
