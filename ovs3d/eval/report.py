"""Segmentation reports: ``results.txt`` (human tables) and ``metrics.json`` (machine-readable).

Both name the encoders that produced the features and say when they are ovs3d's built-in
weight-free encoders (figures from those are not comparable with the paper's). Without ground
truth the report says that no metrics were computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovs3d.eval.segmentation import ProtocolResult
from ovs3d.io.atomic import write_json_atomic, write_text_atomic

BUILTIN_NOTE = ("features from ovs3d's built-in weight-free encoders (colour/material words), not CLIP/DINO: "
                "figures are not comparable with the paper's")
QUERY_RELEVANCY = {"per_query": "cos(F, t_q) min-max normalised over the view",
                   "per_query_lerf": ("LERF relevancy min_j sigmoid(10 (cos(F, t_q) - cos(F, t_j))) over the "
                                      "negatives object/things/stuff/texture")}


def _fmt(x: float) -> str:
    return "  -   " if x is None or np.isnan(x) else f"{x:.4f}"


def protocol_table(result: ProtocolResult) -> list[str]:
    """Text lines: scene figures, then one row per view with its mIoU, accuracy and IoU per class."""
    lines = []
    if result.name == "3dovs":
        lines.append("3D-OVS protocol (argmax over the class list; IoU of an absent class = 0; subset accuracy)")
        lines.append(f"  mIoU {result.miou:.4f}   accuracy {result.accuracy:.4f}")
    else:
        relevancy = QUERY_RELEVANCY[result.name]
        lines.append(f"per-query protocol, {result.name} (each class alone; {relevancy} >= {result.threshold}; "
                     "classes absent from a view skipped)")
        lines.append(f"  mIoU {_fmt(result.miou)}")
    header = "  view   mIoU    acc     " + "  ".join(f"c{c:<5d}" for c in range(len(result.classes)))
    lines.append(header)
    for k, view in enumerate(result.views):
        acc = result.accuracy_per_view[k] if result.accuracy_per_view else float("nan")
        ious = "  ".join(_fmt(x) for x in result.iou[k])
        lines.append(f"  {view:<5d}  {_fmt(result.miou_per_view[k])}  {_fmt(acc)}  {ious}")
    return lines


def write_report(out_dir: str | Path, classes: list[str], encoders: dict, builtin: bool,
                 protocols: list[ProtocolResult], extra: dict | None = None,
                 reference: dict[str, ProtocolResult] | None = None, notes: list[str] | None = None) -> dict:
    """Write ``results.txt`` and ``metrics.json`` into ``out_dir`` (atomically) and return the JSON dict.

    Args:
        encoders: names of the encoders used, e.g. {"clip": ..., "dino": ...}.
        builtin: True when the built-in weight-free encoders were used (said in both files).
        protocols: the results to report; empty when the scene has no ground truth.
        extra: further plain values for metrics.json (e.g. resolution, timings).
        reference: further named results on the same views (e.g. "teacher_2d": the 2D teacher's
            own per-view argmax; ours under another label rule), tabulated after ours.
        notes: lines written under the header of results.txt (e.g. the label rule).
    """
    out_dir = Path(out_dir)
    lines = ["classes: " + "; ".join(f"c{c}={name}" for c, name in enumerate(classes)),
             "encoders: " + ", ".join(f"{k}={v}" for k, v in encoders.items())]
    if builtin:
        lines.append("note: " + BUILTIN_NOTE)
    lines += notes or []
    data: dict = {"classes": list(classes), "encoders": dict(encoders), "builtin_encoders": builtin}
    if builtin:
        data["note"] = BUILTIN_NOTE
    if not protocols:
        lines.append("no ground truth (no annotated views): rendered only, no metrics were computed")
        data["metrics_computed"] = False
    else:
        data["metrics_computed"] = True
        for result in protocols:
            lines += [""] + protocol_table(result)
            data[result.name] = result.to_json()
        for name, result in (reference or {}).items():
            lines += ["", f"[{name}]"] + protocol_table(result)
            data.setdefault("reference", {})[name] = {result.name: result.to_json()}
    if extra:
        data.update(extra)
    write_text_atomic(out_dir / "results.txt", "\n".join(lines) + "\n")
    write_json_atomic(out_dir / "metrics.json", data)
    return data
