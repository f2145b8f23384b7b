"""``ovs3d run`` end to end: interrupted after stage 1, rerun, stage 1 skipped, final metrics written; a redone
stage redoes the stages after it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from ovs3d.eval.segment_eval import TestConfig as StageTestConfig  # (not collected as a test class)
from ovs3d.features.encoders import ClipConfig, DinoConfig
from ovs3d.features.extract import ExtractConfig
from ovs3d.pipeline import PipelineConfig, run_pipeline, summary_table
from ovs3d.train.configs import preset


class Interrupted(Exception):
    """Stands in for a kill between two stages."""


def test_run_resumes_after_an_interruption_and_skips_completed_stages(synthetic_scene: Path, tmp_path: Path):
    scene = tmp_path / "scene"
    shutil.copytree(synthetic_scene, scene)
    out = tmp_path / "run"
    config = PipelineConfig.from_preset(
        "test", test=StageTestConfig(video_frames=2),
        extract=ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin")))
    assert config.reconstruct == preset("reconstruct", "test") and config.segment == preset("segment", "test")

    def stop_at_segment(line: str) -> None:
        if line.startswith("[segment]"):
            raise Interrupted(line)

    with pytest.raises(Interrupted):
        run_pipeline(scene, out, config, log=stop_at_segment, device="cpu")
    assert (out / "reconstruct" / "stage.json").is_file()
    assert not (out / "test" / "metrics.json").exists()

    lines: list[str] = []
    rows = run_pipeline(scene, out, config, log=lines.append, device="cpu")
    status = {row.stage: row.status for row in rows}
    assert status == {"extract": "skipped", "reconstruct": "skipped", "segment": "ran", "test": "ran"}
    assert any(line.startswith("[reconstruct] complete with the same settings: skipped") for line in lines)
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["metrics_computed"] and 0.0 <= metrics["3dovs"]["miou"] <= 1.0
    assert metrics["builtin_encoders"] is True
    # both per-query variants, named; the LERF negatives came from the built-in encoder, and the report says so
    assert metrics["per_query"]["name"] == "per_query" and metrics["per_query_lerf"]["threshold"] == 0.5
    assert metrics["lerf_negatives"]["computed"] and "built-in encoder" in metrics["lerf_negatives"]["note"]
    results = (out / "test" / "results.txt").read_text()
    assert "per-query protocol, per_query (" in results and "per-query protocol, per_query_lerf (" in results
    assert "reconstruct" in summary_table(rows)

    # A changed setting redoes that stage and moves the old outputs aside (nothing is deleted).
    changed = dataclasses.replace(config, test=StageTestConfig(video_frames=0))
    rows = run_pipeline(scene, out, changed, log=lines.append, device="cpu")
    assert {row.stage: row.status for row in rows}["test"] == "ran"
    assert (out / "test.old-1" / "metrics.json").is_file()

    # A redone stage redoes the stages that read its outputs, though their own settings are unchanged.
    longer = dataclasses.replace(changed, segment=dataclasses.replace(changed.segment,
                                                                      iterations=changed.segment.iterations + 2))
    rows = run_pipeline(scene, out, longer, log=lines.append, device="cpu")
    assert {row.stage: row.status for row in rows} == {"extract": "skipped", "reconstruct": "skipped",
                                                         "segment": "ran", "test": "ran"}
