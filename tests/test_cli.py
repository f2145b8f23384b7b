"""The ``ovs3d`` console script: every verb listed with help, and input errors as one line, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ovs3d.cli.main import VERBS, entrypoint, load_verbs


def run_help(args: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping: one line per verb / option
    with pytest.raises(SystemExit) as info:
        entrypoint(args)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_verb_with_help(capsys, monkeypatch):
    out = run_help(["--help"], capsys, monkeypatch)
    for verb, module in load_verbs().items():
        doc = " ".join((module.Config.__doc__ or "").split())
        assert doc, f"verb {verb}: its Config has no docstring"
        line = next((line for line in out.splitlines() if f"• {verb} " in line), None)
        assert line is not None, f"verb {verb} missing from `ovs3d --help`"
        assert doc.split(".")[0][:40] in " ".join(line.split()), (verb, line)


@pytest.mark.parametrize("verb", list(VERBS))
def test_each_verb_has_help(verb, capsys, monkeypatch):
    out = run_help([verb, "--help"], capsys, monkeypatch)
    assert f"usage: ovs3d {verb}" in out


def test_make_scene_help_documents_its_options(capsys, monkeypatch):
    out = run_help(["make-scene", "--help"], capsys, monkeypatch)
    for option in ("--out", "--seed", "--n-views", "--width", "--height", "--overwrite"):
        assert option in out
    assert "(required)" in out


def test_input_error_exits_2_with_one_line(tmp_path):
    """Run as a real process: the user sees one line naming the file and the fix, no traceback."""
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "ovs3d.cli.main", "make-scene", "--out", str(target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ovs3d: error: {target}: ") and "Fix:" in lines[0]
    assert target.read_text() == "not a folder"
