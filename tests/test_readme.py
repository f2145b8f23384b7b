"""The README's commands run as written, on a tiny scene.

Every ```bash block of README.md that holds ``ovs3d`` commands runs in a fresh folder, its commands in
order, through the real entry point. The only changes to a command: paths point at the test's files
(``scenes/mine`` is the synthetic fixture scene, ``my_photos/`` and ``clip.mp4`` are bird_360 frames),
``--preset cpu`` becomes ``--preset test``, the built-in encoders are chosen (CLIP/DINO weights cannot
be downloaded here) and videos get 2 frames. ``ovs3d demo`` is not run here: it takes minutes and is
``python -m bench.demo``. The blocks of ``ovs3d export`` commands read the run of the stage-by-stage block,
so they run in its folder, after it; ``ovs3d view`` is not run, a server that runs until stopped
(``test_viewer_browser.py``).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import shared_scene
from ovs3d.cli.main import entrypoint

README = Path(__file__).resolve().parents[1] / "README.md"
ENCODERS = ["--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin"]
EXTRA = {"run": ENCODERS + ["--test.video-frames", "2"], "extract": ENCODERS, "relevancy": ENCODERS,
         "segment": ENCODERS, "test": ["--test.video-frames", "2"], "render": ["--frames", "2"],
         "import-checkpoint": ENCODERS[:2]}


def readme_blocks() -> list[list[list[str]]]:
    """The ``ovs3d`` commands (argument lists) of each bash block of the README, comments dropped."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        text = body.replace("\\\n", " ")
        commands = [shlex.split(line, comments=True) for line in text.splitlines() if line.strip().startswith("ovs3d ")]
        if commands:
            blocks.append(commands)
    return blocks


def as_test(args: list[str]) -> list[str]:
    verb = args[1]
    args = ["test" if a == "cpu" and args[i - 1] == "--preset" else a for i, a in enumerate(args)]
    return args[1:] + EXTRA.get(verb, [])


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    verbs = [[c[1] for c in block] for block in readme_blocks()]
    assert ["demo"] in verbs
    assert ["process-data", "process-data"] in verbs
    assert ["run"] in verbs
    assert ["relevancy", "extract", "reconstruct", "segment", "test", "query", "render"] in verbs
    assert ["export", "export", "export"] in verbs
    assert ["import-checkpoint", "import-checkpoint", "test", "query", "render", "segment"] in verbs


def export_blocks() -> list[list[list[str]]]:
    """The blocks of ``ovs3d export`` commands: they read the stage-by-stage block's run, so they run after it."""
    return [b for b in readme_blocks() if all(c[1] == "export" for c in b)]


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b[0][1] not in ("demo", "process-data", "export", "view")],
                         ids=lambda b: "+".join(c[1] for c in b))
def test_readme_pipeline_commands_run_as_written(block, synthetic_scene: Path, tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(synthetic_scene, tmp_path / "scenes" / "mine")
    shutil.copy(synthetic_scene / "segmentations" / "classes.txt", tmp_path / "classes.txt")
    monkeypatch.chdir(tmp_path)
    if block[0][1] == "import-checkpoint":   # checkpoints in the authors' format, where their code writes them
        from authors_helpers import random_authors_checkpoint, save_authors_checkpoint

        for folder, stage2 in (("log", False), ("log_seg", True)):
            (tmp_path / folder / "mine").mkdir(parents=True)
            save_authors_checkpoint(random_authors_checkpoint(stage2=stage2, aabb=[[-2, -2, -1], [2, 2, 1]]),
                                    tmp_path / folder / "mine" / "mine.th")
    for command in block:
        entrypoint(as_test(command))
    if block[0][1] == "import-checkpoint":
        assert (tmp_path / "outputs" / "mine" / "authors" / "test" / "metrics.json").is_file()
        assert (tmp_path / "outputs" / "mine" / "ours-on-authors" / "checkpoint.safetensors").is_file()
    elif block[0][1] == "run":
        assert (tmp_path / "outputs" / "mine" / "test" / "metrics.json").is_file()
    else:
        assert (tmp_path / "outputs" / "mine" / "segment" / "test" / "results.txt").is_file()
        assert list((tmp_path / "outputs" / "mine" / "segment" / "query").glob("a_wooden_chair_*_overlay.png"))
        assert (tmp_path / "outputs" / "mine" / "reconstruct" / "renders" / "spiral" / "001_rgb.png").is_file()
        for export in export_blocks():
            for command in export:
                entrypoint(as_test(command))
        exported = tmp_path / "outputs" / "mine" / "segment" / "export"
        assert (exported / "points.ply").is_file() and (exported / "mesh" / "scene.glb").is_file()
        assert list((exported / "object").glob("*/points.ply"))


def test_readme_process_data_commands_run_as_written(tmp_path: Path, monkeypatch) -> None:
    import imageio.v2 as imageio

    block = next(b for b in readme_blocks() if b[0][1] == "process-data")
    frames = sorted((shared_scene("bird_360") / "images").iterdir())[:36:3]
    photos = tmp_path / "my_photos"
    photos.mkdir()
    for frame in frames:
        shutil.copy(frame, photos / frame.name)
    imageio.mimwrite(tmp_path / "clip.mp4", [imageio.imread(f) for f in frames], fps=2, macro_block_size=1)
    monkeypatch.chdir(tmp_path)
    for i, command in enumerate(block):
        command = [f"scenes/mine{i}" if a == "scenes/mine" else a for a in command]
        entrypoint(command[1:])
        assert (tmp_path / f"scenes/mine{i}" / "poses_bounds.npy").is_file()
