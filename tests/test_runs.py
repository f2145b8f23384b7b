"""Run records and files: one format for both stages, config.yml read back, earlier formats refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ovs3d.config import read_config
from ovs3d.errors import InputError
from ovs3d.field.tensorf import TensoRF
from ovs3d.runs.load import field_sections, load_run
from ovs3d.runs.record import RunRecord
from ovs3d.runs.store import read_run, write_config, write_run
from ovs3d.scene.rayspace import NDCSpace
from ovs3d.train.configs import ReconstructConfig, preset


def small_field() -> TensoRF:
    return TensoRF(NDCSpace(), (6, 5, 4), generator=torch.Generator().manual_seed(3))


def record_of(field: TensoRF, scene: str = "/abs/scene") -> RunRecord:
    return RunRecord(stage="reconstruct", scene=scene, space=field.space.to_dict(), step=0.01, width=8, height=6,
                     iteration=3, complete=False, config={"n_iters": 5}, arch=field.arch())


def test_a_written_run_loads_back_the_same_field(tmp_path: Path) -> None:
    field = small_field()
    write_run(tmp_path, record_of(field), field_sections(field))
    model, record = load_run(tmp_path)
    assert record == record_of(field)
    assert isinstance(model, TensoRF) and model.space == NDCSpace()
    x = torch.rand(50, 3) * 2 - 1
    assert torch.equal(model.density(x), field.density(x))
    assert torch.equal(model.appearance(x), field.appearance(x))
    assert json.loads((tmp_path / "checkpoint.json").read_text())["format"] == "ovs3d-run-2"


def test_the_wrong_stage_is_refused(tmp_path: Path) -> None:
    field = small_field()
    write_run(tmp_path, record_of(field), field_sections(field))
    with pytest.raises(InputError, match="this is a reconstruct run, not a segment run"):
        read_run(tmp_path, stage="segment")


@pytest.mark.parametrize("old, verb", [("ovs3d-tensorf-1", "reconstruct"), ("ovs3d-segment-1", "segment")])
def test_runs_of_the_earlier_format_fail_with_a_message_to_rerun_the_stage(tmp_path: Path, old: str, verb: str) -> None:
    save_file({"field.box": torch.zeros(2, 3)}, str(tmp_path / "checkpoint.safetensors"),
              metadata={"checkpoint": json.dumps({"format": old, "iteration": 3})})
    with pytest.raises(InputError, match=f"earlier ovs3d.*rerun `ovs3d {verb}`"):
        load_run(tmp_path)


def test_a_damaged_checkpoint_is_an_input_error(tmp_path: Path) -> None:
    field = small_field()
    path = write_run(tmp_path, record_of(field), field_sections(field))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot read the checkpoint"):
        load_run(tmp_path)


@pytest.mark.parametrize("config", [preset("reconstruct", "cpu"), preset("segment", "default")])
def test_config_yml_reads_back_into_the_config(tmp_path: Path, config) -> None:
    write_config(tmp_path, config)
    assert read_config(tmp_path / "config.yml", type(config)) == config


def test_a_config_yml_with_an_unknown_field_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("n_iters: 3\nwarp_speed: 9\n")
    with pytest.raises(InputError, match="warp_speed"):
        read_config(tmp_path / "config.yml", ReconstructConfig)
