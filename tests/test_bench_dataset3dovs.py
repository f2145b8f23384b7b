"""``bench.dataset3dovs`` end to end on a synthetic tree laid out like the 3D-OVS dataset: 10 tiny scenes run through
the pipeline, then loaded and rescored; table's folder-30 quirk and room's corrected labels are reproduced."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import bench.common
from bench.dataset3dovs import PER_QUERY_SCENES, SCENES, evaluate_dataset
from ovs3d.errors import InputError
from ovs3d.eval.segment_eval import TestConfig as StageTestConfig  # (not collected as a test class)
from ovs3d.features.encoders import ClipConfig, DinoConfig
from ovs3d.features.extract import ExtractConfig
from ovs3d.pipeline import PipelineConfig
from ovs3d.scene.synthetic import make_synthetic_scene
from ovs3d.train.configs import preset

QUIRK_IMAGE = "IMG_20230412_214716"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """10 copies of one 6-view 32x24 synthetic scene (views 00 and 05 annotated), named as the dataset's scenes.
    table: image 05 is IMG_20230412_214716.png (still index 5 in name order) and its masks are folder 30, as in the
    dataset; room: segmentations_corrected/ beside segmentations/, with the floor and wall masks swapped in view 00."""
    base = make_synthetic_scene(tmp_path_factory.mktemp("base") / "scene", seed=0, n_views=6, width=32, height=24,
                                n_annotated=2, supersample=1)
    root = tmp_path_factory.mktemp("3dovs")
    for scene in SCENES:
        shutil.copytree(base, root / scene, ignore=shutil.ignore_patterns("depth"))
    table = root / "table"
    (table / "images" / "05.png").rename(table / "images" / f"{QUIRK_IMAGE}.png")
    (table / "segmentations" / "05").rename(table / "segmentations" / "30")
    corrected = root / "room" / "segmentations_corrected"
    shutil.copytree(root / "room" / "segmentations", corrected)
    a, b = (corrected / "00" / "brown wooden floor.png"), (corrected / "00" / "grey stone wall.png")
    a.rename(corrected / "00" / "swap.png")
    b.rename(a)
    (corrected / "00" / "swap.png").rename(b)
    return root


def tiny_pipeline() -> PipelineConfig:
    config = PipelineConfig.from_preset(
        "test", test=StageTestConfig(video_frames=0),
        extract=ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin")))
    return dataclasses.replace(
        config, reconstruct=preset("reconstruct", "test", n_iters=6, batch_size=256, holdout_every=0,
                                   upsample_iters=(2,), alpha_mask_iters=(3,), checkpoint_every=6, video_frames=0),
        segment=preset("segment", "test", iterations=2, joint_start_iter=1, checkpoint_every=2))


def test_dataset_benchmark_runs_then_loads_all_ten_scenes(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path / "results")
    work = tmp_path / "work"
    result = evaluate_dataset(dataset, work, tiny_pipeline(), name="dataset3dovs_test")
    rows = {(r["scene"], r["labels"]): r for r in result["rows"]}
    assert sorted(rows) == sorted([(s, "original") for s in SCENES] + [("room", "corrected")])
    assert rows[("table", "original")]["views"] == [0, 5]          # folder 30 scored as image 5
    assert rows[("table", "original")]["quirks"] == [f"annotation folder 30 -> image {QUIRK_IMAGE}"]
    room, fixed = rows[("room", "original")], rows[("room", "corrected")]
    assert fixed["ground_truth"] == "segmentations_corrected" and fixed["per_query"] != room["per_query"]
    for row in rows.values():
        assert 0.0 <= row["miou"] <= 1.0 and row["per_query_lerf"] is not None and row["builtin_encoders"]
    mean = result["mean"]["original"]
    assert mean["scenes"] == 10 and mean["per_query_scenes"] == list(PER_QUERY_SCENES)
    assert mean["miou"] == pytest.approx(sum(rows[(s, "original")]["miou"] for s in SCENES) / 10, abs=1e-4)
    assert result["mean"]["corrected"]["per_query"] != mean["per_query"]
    stored = json.loads((tmp_path / "results" / "dataset3dovs_test.json").read_text())
    assert stored["versions"]["ovs3d"] and stored["versions"]["torch"] and stored["seeds"]["segment"] is not None
    assert "| mean (original labels; 10 scenes, per-query 5) |" in (work / "table.md").read_text()

    # The same runs loaded (as from `ovs3d segment` / `import-checkpoint`) score the same.
    loaded = evaluate_dataset(dataset, tmp_path / "rescored", runs=work, name="dataset3dovs_test_load")
    assert loaded["mode"] == "load"
    for row in loaded["rows"]:
        assert row["miou"] == pytest.approx(rows[(row["scene"], row["labels"])]["miou"], abs=1e-6)


def test_bad_dataset_input_fails_before_any_work(dataset: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(dataset, partial, ignore=shutil.ignore_patterns("snacks"))
    with pytest.raises(InputError, match="snacks"):
        evaluate_dataset(partial, tmp_path / "work", tiny_pipeline())
    (partial / "bed" / "segmentations" / "classes.txt").unlink()
    with pytest.raises(InputError, match="classes.txt"):
        evaluate_dataset(partial, tmp_path / "work", tiny_pipeline(), scenes=("bed",))
    with pytest.raises(InputError, match="out of range"):   # without the quirk, table's folder 30 is image 30
        evaluate_dataset(dataset, tmp_path / "work", tiny_pipeline(), scenes=("table",), quirks=())
    with pytest.raises(InputError, match="no stage-2 run"):
        evaluate_dataset(dataset, tmp_path / "work", runs=tmp_path / "nothing", scenes=("bed",))
    assert not (tmp_path / "work").exists()
