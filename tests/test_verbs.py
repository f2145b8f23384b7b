"""One CLI syntax for every verb: shared flag names, presets that never fall back, and stage fields that
reach the trainers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ovs3d.cli import main as cli
from ovs3d.runs.store import read_run
from ovs3d.train.configs import PRESET_NAMES, PRESETS, preset

SCENE_VERBS = {"extract", "reconstruct", "segment", "test", "query", "relevancy", "run", "export",
               "import-checkpoint"}                                                            # --data
RUN_VERBS = {"segment", "test", "query", "render", "export", "view"}                                          # --run
OUT_VERBS = set(cli.VERBS) - {"extract"}                                                    # --out
PRESET_VERBS = {"reconstruct", "segment", "run"}                                            # --preset
RUNTIME_VERBS = set(cli.VERBS) - {"make-scene", "process-data"}                             # --device, --threads
RETIRED = ("--scene ", "--stage1", "--pipeline.", "--classes ", "preset:", "--clip-weights", "--clip.weights")


def verb_help(verb: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.entrypoint([verb, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_every_verb_uses_the_shared_names(verb: str, capsys) -> None:
    text = verb_help(verb, capsys)
    expected = {"--data": SCENE_VERBS, "--run": RUN_VERBS, "--out": OUT_VERBS, "--preset": PRESET_VERBS,
                "--device": RUNTIME_VERBS, "--threads": RUNTIME_VERBS}
    for flag, verbs in expected.items():
        present = f"{flag} " in text or f"{flag}\n" in text
        assert present == (verb in verbs), f"`ovs3d {verb} --help`: {flag} {'missing' if verb in verbs else 'unexpected'}"
    for old in RETIRED:
        assert old not in text, f"`ovs3d {verb} --help` still shows the retired spelling {old!r}"


@pytest.mark.parametrize("stage", ["reconstruct", "segment"])
def test_every_preset_name_exists_for_every_stage_and_none_falls_back(stage: str) -> None:
    assert set(PRESETS[stage]) == set(PRESET_NAMES)
    configs = {name: preset(stage, name) for name in PRESET_NAMES}
    for a in PRESET_NAMES:
        for b in PRESET_NAMES:
            if a != b:
                assert configs[a] != configs[b], f"{stage} presets {a} and {b} are the same settings"


def test_run_with_a_preset_takes_that_preset_for_every_stage() -> None:
    for name in PRESET_NAMES:
        _, config = cli.parse(["run", "--data", "scene", "--preset", name])
        assert config.preset == name
        assert config.reconstruct == preset("reconstruct", name)
        assert config.segment == preset("segment", name)


def test_an_unknown_preset_is_a_clear_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.entrypoint(["run", "--data", "scene", "--preset", "fast"])
    assert exit_info.value.code == 2
    assert "unknown reconstruct preset 'fast'" in capsys.readouterr().err


def test_stage_fields_override_the_preset_in_one_syntax() -> None:
    _, config = cli.parse(["reconstruct", "--data", "s", "--out", "o", "--preset", "test",
                           "--reconstruct.n-iters", "7", "--threads", "1"])
    assert config.reconstruct == dataclasses.replace(preset("reconstruct", "test"), n_iters=7)
    assert config.runtime.threads == 1
    _, config = cli.parse(["run", "--data", "s", "--preset", "paper", "--segment.temperature", "0.3",
                           "--test.labels", "relevancy", "--extract.clip.kind", "builtin"])
    assert config.segment == dataclasses.replace(preset("segment", "paper"), temperature=0.3)
    assert config.test.labels == "relevancy" and config.extract.clip.kind == "builtin"


def test_a_stage2_learning_rate_and_loss_weight_from_the_command_line_reach_the_trainer(
        synthetic_scene: Path, tmp_path: Path, monkeypatch) -> None:
    from ovs3d.train import segment as stage2

    stage1 = tmp_path / "stage1"
    cli.entrypoint(["reconstruct", "--data", str(synthetic_scene), "--out", str(stage1), "--preset", "test",
                    "--reconstruct.n-iters", "40", "--reconstruct.no-render-eval", "--reconstruct.video-frames", "0",
                    "--threads", "1"])
    seen = {}
    real_loop = stage2.train_loop

    def spy(trainer, *args, **kwargs):
        seen["relevancy_weight"] = trainer.config.relevancy_weight
        seen["head_lr"] = next(g["initial_lr"] for g in trainer.optimizer.param_groups if g["name"] == "head")
        return real_loop(trainer, *args, **kwargs)

    monkeypatch.setattr(stage2, "train_loop", spy)
    out = tmp_path / "stage2"
    cli.entrypoint(["segment", "--run", str(stage1), "--out", str(out), "--preset", "test",
                    "--segment.lr-network", "0.0123", "--segment.relevancy-weight", "0.37",
                    "--segment.iterations", "2", "--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin",
                    "--threads", "1"])
    assert seen == {"relevancy_weight": 0.37, "head_lr": 0.0123}
    record, _ = read_run(out, stage="segment")
    assert record.config["lr_network"] == 0.0123 and record.config["relevancy_weight"] == 0.37
    assert "lr_network: 0.0123" in (out / "config.yml").read_text()
    assert json.loads((out / "train_summary.json").read_text())["iteration"] == 2


@pytest.mark.parametrize("args, message", [
    (["run", "--data", "s", "--segment.iterations", "-3"], "--segment.iterations must be at least 1"),
    (["test", "--run", "r", "--test.video-frames", "-5"], "--test.video-frames must be at least 0"),
    (["reconstruct", "--data", "s", "--out", "o", "--reconstruct.batch-size", "0"], "--reconstruct.batch-size must be"),
])
def test_out_of_range_stage_fields_fail_when_parsed(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.entrypoint(args)
    assert exit_info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.replace("│", " ").split())


def test_a_file_given_as_the_scene_folder_is_named_as_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "poses_bounds.npy").write_bytes(b"x")
    with pytest.raises(SystemExit) as exit_info:
        cli.entrypoint(["run", "--data", str(tmp_path / "poses_bounds.npy")])
    assert exit_info.value.code == 2
    assert "this is a file, not a scene folder" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_and_exit_1_unless_debug(monkeypatch, capsys) -> None:
    from ovs3d.cli import render

    def broken(config):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(render, "main", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.entrypoint(["render", "--run", "r"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        cli.entrypoint(["render", "--run", "r", "--debug"])
