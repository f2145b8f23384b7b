"""Importing the authors' 3D-OVS checkpoints (issue #17): the restricted unpickler, the name and frame
mapping (checked point by point against an independent implementation of their field), the verb, and,
with ``../shared/data/authors_ckpt``, their real checkpoints against their own renders and labels."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from authors_helpers import (AUTHORS_DIR, authors_appearance, authors_density, authors_feature, authors_mask_value,
                             authors_rays, authors_rgb, authors_selection, random_authors_checkpoint,
                             save_authors_checkpoint)
from ovs3d.cli import main as cli
from ovs3d.errors import InputError
from ovs3d.io.torch_checkpoint import ALLOWED_GLOBALS, _main_pickle, pickle_globals, read_torch_checkpoint
from ovs3d.runs.authors import authors_field, authors_samples, authors_semantic, check_checkpoint
from ovs3d.runs.load import load_run
from ovs3d.scene.annotations import read_classes
from ovs3d.scene.load import load_scene
from ovs3d.scene.rayspace import NDCSpace

MIRROR = torch.tensor([-1.0, 1.0, 1.0])


# ------------------------------------------------------------------------------------- restricted unpickler
class _RunsCode:
    """Unpickling this calls os.system (the classic malicious checkpoint)."""

    def __init__(self, marker: Path, call=os.system) -> None:
        self.marker, self.call = marker, call

    def __reduce__(self):
        if self.call is eval:
            return (eval, (f"open({str(self.marker)!r}, 'w').write('ran')",))
        return (self.call, (f"touch {self.marker}",))


def _crafted(kind: str, tmp_path: Path) -> tuple[Path, Path, str]:
    """(file, marker the payload would create, global it names) of one crafted checkpoint."""
    marker = tmp_path / f"ran-{kind}"
    path = tmp_path / f"{kind}.th"
    if kind == "zip":          # torch.save's format, the payload beside real tensors
        torch.save({"state_dict": {"w": torch.zeros(3)}, "x": _RunsCode(marker)}, path)
        return path, marker, "posix.system"
    if kind == "legacy":       # torch.save's pre-1.6 format
        torch.save({"x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=False)
        return path, marker, "posix.system"
    if kind == "pickle4":      # a bare pickle, protocol 4 (STACK_GLOBAL)
        path.write_bytes(pickle.dumps({"x": _RunsCode(marker, eval)}, protocol=4))
        return path, marker, "builtins.eval"
    path.write_bytes(pickle.dumps([_RunsCode(marker)], protocol=0))   # protocol 0 (text GLOBAL)
    return path, marker, "posix.system"


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle4", "pickle0"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(kind: str, tmp_path: Path) -> None:
    path, marker, name = _crafted(kind, tmp_path)
    with pytest.raises(InputError) as info:
        read_torch_checkpoint(path)
    assert name in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()


def test_the_verb_refuses_it_in_one_line_and_writes_nothing(tmp_path: Path, synthetic_scene: Path, capsys) -> None:
    path, marker, _ = _crafted("zip", tmp_path)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.entrypoint(["import-checkpoint", "--checkpoint", str(path), "--data", str(synthetic_scene),
                        "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ovs3d: error:") and "posix.system" in err and len(err.splitlines()) == 1
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("value, found", [
    (np.array([1, "a"], dtype=object), "ObjectDType"),
    ({1, 2}, "set"),
    (torch.device("cpu"), "torch.device"),
    (np.ma.masked_array([1.0, 2.0]), "numpy.ma.core"),
])
def test_anything_but_tensors_numeric_arrays_and_plain_containers_is_refused(value, found, tmp_path: Path) -> None:
    path = tmp_path / "other.th"
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": value}, path)
    with pytest.raises(InputError) as info:
        read_torch_checkpoint(path)
    assert found in str(info.value)


def test_the_authors_format_reads_and_uses_exactly_their_globals(tmp_path: Path) -> None:
    path = save_authors_checkpoint(random_authors_checkpoint(), tmp_path / "a.th")
    names = set(pickle_globals(*_main_pickle(path)))
    assert names <= ALLOWED_GLOBALS
    assert {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "numpy.ndarray", "_codecs.encode"} <= names
    ckpt = read_torch_checkpoint(path)
    assert ckpt["alphaMask.mask"].dtype == np.uint8 and ckpt["state_dict"]["density_plane.0"].dtype == torch.float32


def test_a_missing_or_foreign_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_torch_checkpoint(tmp_path / "absent.th")
    (tmp_path / "junk.th").write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match="not a readable torch checkpoint"):
        read_torch_checkpoint(tmp_path / "junk.th")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.th")
    with pytest.raises(InputError, match="not an authors' 3D-OVS checkpoint"):
        check_checkpoint(read_torch_checkpoint(tmp_path / "plain.th"), tmp_path / "plain.th")


# ------------------------------------------------------------------------------------- conventions
def test_the_authors_rays_are_ours_mirrored_in_x(synthetic_scene: Path) -> None:
    scene = load_scene(synthetic_scene, load_annotations=False)
    cams = scene.cameras
    for view in (0, len(cams) - 1):
        o_a, d_a = authors_rays(synthetic_scene, view, cams.width, cams.height, float(cams.fx[0]))
        u, v = cams.pixel_grid()
        o, d = NDCSpace().rays(cams, torch.full((u.numel(),), view), u.reshape(-1), v.reshape(-1))
        assert torch.allclose(o_a, o * MIRROR, atol=1e-4) and torch.allclose(d_a, d * MIRROR, atol=1e-4)


def test_the_imported_field_is_the_authors_field_seen_in_a_mirror() -> None:
    ckpt = random_authors_checkpoint()
    field = authors_field(ckpt, NDCSpace())
    aabb = ckpt["kwargs"]["aabb"]
    g = torch.Generator().manual_seed(3)
    theirs = aabb[0] + (aabb[1] - aabb[0]) * torch.rand((2000, 3), generator=g)   # points in their NDC
    ours = field.normalize(theirs * MIRROR)
    with torch.no_grad():
        assert torch.allclose(field.density(ours), authors_density(ckpt, theirs), atol=1e-4)
        a = field.appearance(ours)
        assert torch.allclose(a, authors_appearance(ckpt, theirs), atol=1e-4)
        dirs = torch.nn.functional.normalize(torch.randn(2000, 3, generator=g), dim=-1)
        assert torch.allclose(field.shade(a, dirs * MIRROR), authors_rgb(ckpt, a, dirs), atol=1e-5)
    assert torch.equal(field.occupancy.occupied(theirs * MIRROR), authors_mask_value(ckpt, theirs) > 0)
    # without the mirror the fields differ (the box and the empty slab are not symmetric in x)
    assert not torch.allclose(field.density(field.normalize(theirs)), authors_density(ckpt, theirs), atol=1e-2)


def test_the_imported_semantic_field_is_the_authors_and_keeps_the_text_dimensions() -> None:
    ckpt = random_authors_checkpoint()
    field = authors_field(ckpt, NDCSpace())
    text = torch.nn.functional.normalize(torch.randn(5, 13, generator=torch.Generator().manual_seed(0)), dim=-1)
    model = authors_semantic(ckpt, field, text)
    aabb = ckpt["kwargs"]["aabb"]
    theirs = aabb[0] + (aabb[1] - aabb[0]) * torch.rand((500, 3), generator=torch.Generator().manual_seed(4))
    ours = field.normalize(theirs * MIRROR)
    with torch.no_grad():
        a = field.appearance(ours)
        assert torch.allclose(model.feature_of_points(a), authors_feature(ckpt, a)[:, :13], atol=1e-4)
        assert torch.allclose(model.selection_logits(ours), authors_selection(ckpt, theirs), atol=1e-5)
    assert model.mode == "faithful" and torch.equal(model.class_text, text)
    with pytest.raises(InputError, match="text embeddings have 600 dimensions"):
        authors_semantic(ckpt, field, torch.ones(2, 600))


def test_the_sample_count_is_the_authors_test_count() -> None:
    kwargs = {"aabb": torch.tensor([[-2.0, -2, -1], [2, 2, 1]]), "gridSize": [125, 125, 62], "step_ratio": 0.5}
    assert authors_samples(kwargs) == 370   # their renderer's nSamples for the fixture (results/authors_stage1_eval.json)


# ------------------------------------------------------------------------------------- the verb
@pytest.fixture(scope="module")
def imported_runs(synthetic_scene: Path, tmp_path_factory) -> dict[str, Path]:
    """A random authors' stage-1 and stage-2 checkpoint of the test scene, imported with the verb."""
    root = tmp_path_factory.mktemp("authors")
    runs = {}
    for stage, stage2 in (("reconstruct", False), ("segment", True)):
        path = save_authors_checkpoint(random_authors_checkpoint(stage2=stage2, aabb=[[-2, -2, -1], [2, 2, 1]]),
                                       root / f"{stage}.th")
        runs[stage] = root / stage
        cli.entrypoint(["import-checkpoint", "--checkpoint", str(path), "--data", str(synthetic_scene),
                        "--out", str(runs[stage]), "--downsample", "1", "--extract.clip.kind", "builtin",
                        "--threads", "1"])
    return runs


def test_imported_runs_are_ordinary_runs(imported_runs: dict[str, Path], synthetic_scene: Path) -> None:
    field, record = load_run(imported_runs["reconstruct"])
    assert record.stage == "reconstruct" and record.complete and field.occupancy is not None
    assert record.inputs["authors_kwargs"]["gridSize"] == [20, 18, 10] and "mirrored" in record.inputs["conversion"]
    model, record = load_run(imported_runs["segment"])
    assert record.stage == "segment" and record.semantic["mode"] == "faithful"
    assert record.classes == read_classes(synthetic_scene / "segmentations" / "classes.txt")
    assert record.inputs["feature_dims"] == {"checkpoint": 512, "kept": model.class_text.shape[1]}
    assert (imported_runs["segment"] / "config.yml").is_file()


def test_render_test_query_and_segment_read_imported_runs(imported_runs: dict[str, Path], tmp_path: Path) -> None:
    cli.entrypoint(["render", "--run", str(imported_runs["reconstruct"]), "--path", "dataset", "--downsample", "4",
                    "--out", str(tmp_path / "render"), "--threads", "1"])
    assert len(list((tmp_path / "render").glob("*_rgb.png"))) == 16
    cli.entrypoint(["test", "--run", str(imported_runs["segment"]), "--out", str(tmp_path / "test"),
                    "--test.video-frames", "0", "--threads", "1"])
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["semantic_mode"] == "faithful" and 0 <= metrics["3dovs"]["miou"] <= 1
    cli.entrypoint(["query", "--run", str(imported_runs["segment"]), "--text", "red", "--out", str(tmp_path / "query"),
                    "--threads", "1"])
    assert (tmp_path / "query" / "query.json").is_file()
    cli.entrypoint(["segment", "--run", str(imported_runs["reconstruct"]), "--out", str(tmp_path / "ours"),
                    "--preset", "test", "--segment.iterations", "2", "--extract.clip.kind", "builtin",
                    "--extract.dino.kind", "builtin", "--threads", "1"])
    assert load_run(tmp_path / "ours")[1].inputs["stage1"] == str(imported_runs["reconstruct"].resolve())


def test_an_existing_run_folder_is_not_overwritten(imported_runs: dict[str, Path], tmp_path: Path,
                                                   synthetic_scene: Path, capsys) -> None:
    path = save_authors_checkpoint(random_authors_checkpoint(stage2=False), tmp_path / "a.th")
    with pytest.raises(SystemExit) as info:
        cli.entrypoint(["import-checkpoint", "--checkpoint", str(path), "--data", str(synthetic_scene),
                        "--out", str(imported_runs["reconstruct"])])
    assert info.value.code == 2 and "already holds a checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the authors' real files
AUTHORS_STRIDE = 9   # the fast checks render every 9th pixel of a view (the slow ones every pixel)


@pytest.fixture(scope="module")
def authors_fixture(tmp_path_factory) -> dict[str, Path]:
    """The fixture's scene regenerated as its README says (`ovs3d make-scene --seed 0`) and both authors'
    checkpoints imported into it (skipped without ../shared/data/authors_ckpt)."""
    if not (AUTHORS_DIR / "authors_stage2_s2_synth.th").is_file():
        pytest.skip(f"the authors' checkpoints are not available: {AUTHORS_DIR} is absent (it lives in ../shared)")
    from ovs3d.features.encoders import ClipConfig
    from ovs3d.runs.import_authors import ImportSettings, import_checkpoint
    from ovs3d.scene.synthetic import make_synthetic_scene

    root = tmp_path_factory.mktemp("authors_fixture")
    scene = make_synthetic_scene(root / "scene", seed=0)
    found = {"scene": scene}
    for stage, name in (("reconstruct", "authors_stage1_s1_synth.th"), ("segment", "authors_stage2_s2_synth.th")):
        import_checkpoint(ImportSettings(checkpoint=AUTHORS_DIR / name, scene=scene, downsample=1.0,
                                         clip=ClipConfig(kind="builtin")), root / stage, log=lambda _: None)
        found[stage] = root / stage
    return found


def _pixels(cameras, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = cameras.pixel_grid()
    return u.reshape(-1)[::stride], v.reshape(-1)[::stride]


@torch.no_grad()
def _render_pixels(model, cameras, view: int, step: float, stride: int, text=None) -> torch.Tensor:
    """What ``render_camera`` computes (the same march and model calls), at every ``stride``-th pixel only:
    rgb [P, 3] of a field, or cosines [C, P] of a semantic model with ``text``."""
    from ovs3d.render.volume import march, render_rays

    u, v = _pixels(cameras, stride)
    field = model.field if text is not None else model
    o, d = field.space.rays(cameras, torch.full_like(u, view, dtype=torch.long), u, v)
    if text is None:
        return render_rays(field, o, d, step)["rgb"]
    samples = march(field, o, d, step)
    features = model.render(samples.xyz, samples.weights, samples.ray_index, samples.n_rays, with_selection=False)
    return torch.nn.functional.normalize(features["features"], dim=-1) @ text.T


def _their_labels(record_classes: list[str]) -> dict[int, np.ndarray]:
    theirs = np.load(AUTHORS_DIR / "results" / "authors_stage2_cosine_labels.npz")
    to_ours = np.array([record_classes.index(str(c)) for c in theirs["classes"]])   # theirs: sorted classes
    return {int(k.split("_")[1]): to_ours[theirs[k]] for k in theirs.files if k.startswith("view_")}


def test_the_authors_recorded_rays_are_ours_mirrored(authors_fixture: dict[str, Path]) -> None:
    text = (AUTHORS_DIR / "results" / "layout_check.txt").read_text()
    scene = load_scene(authors_fixture["scene"], load_annotations=False)
    u, v = scene.cameras.pixel_grid()
    o, d = NDCSpace().rays(scene.cameras, torch.zeros(u.numel(), dtype=torch.long), u.reshape(-1), v.reshape(-1))
    for name, ours in (("rays_o", o * MIRROR), ("rays_d", d * MIRROR)):
        line = next(x for x in text.splitlines() if x.startswith(f"view0 {name} range"))
        lo, hi = (torch.tensor(json.loads(part)) for part in line.split("range ")[1].replace("] [", "]|[").split("|"))
        assert torch.allclose(ours.amin(0), lo, atol=1e-4) and torch.allclose(ours.amax(0), hi, atol=1e-4)


def test_our_render_of_their_stage1_matches_their_render(authors_fixture: dict[str, Path]) -> None:
    from ovs3d.io.images import read_rgb
    from ovs3d.render.quality import psnr

    field, record = load_run(authors_fixture["reconstruct"], stage="reconstruct")
    scene = load_scene(record.scene, load_annotations=False)
    assert record.inputs["authors_test_samples"] == 370
    theirs = torch.from_numpy(read_rgb(AUTHORS_DIR / "renders_stage1" / "000.png", (scene.width, scene.height)))
    rgb = _render_pixels(field, scene.cameras, 0, record.step, AUTHORS_STRIDE)
    assert psnr(rgb, theirs.reshape(-1, 3)[::AUTHORS_STRIDE]) >= 35.0


def test_our_labels_of_their_stage2_agree_with_their_test_labels(authors_fixture: dict[str, Path]) -> None:
    model, record = load_run(authors_fixture["segment"], stage="segment")
    scene = load_scene(record.scene, load_annotations=False)
    their = _their_labels(record.classes)
    assert sorted(their) == [0, 8, 15, 23]
    for view, labels in their.items():
        cosines = _render_pixels(model, scene.cameras, view, record.step, AUTHORS_STRIDE, model.class_text)
        agreement = float((cosines.argmax(-1).numpy() == labels.reshape(-1)[::AUTHORS_STRIDE]).mean())
        assert agreement >= 0.98, f"view {view}: {agreement:.4f} of the pixels agree"


@pytest.mark.slow
def test_the_imports_match_the_authors_at_every_pixel(authors_fixture: dict[str, Path], tmp_path: Path) -> None:
    """The acceptance checks through the verbs: ``ovs3d render`` of stage 1 vs their PNG (>= 35 dB) and the
    full-view labels of stage 2 vs theirs (>= 98 % per view), and ``ovs3d test``'s mIoU vs their printed one."""
    from ovs3d.io.images import read_rgb
    from ovs3d.render.camera import render_camera
    from ovs3d.render.quality import psnr

    field, record = load_run(authors_fixture["reconstruct"], stage="reconstruct")
    scene = load_scene(record.scene, load_annotations=False)
    theirs = torch.from_numpy(read_rgb(AUTHORS_DIR / "renders_stage1" / "000.png", (scene.width, scene.height)))
    assert psnr(render_camera(field, scene.cameras, 0, record.step)["rgb"], theirs) >= 35.0
    model, record = load_run(authors_fixture["segment"], stage="segment")
    for view, labels in _their_labels(record.classes).items():
        out = render_camera(model, scene.cameras, view, record.step, ("labels",), text=model.class_text)
        assert float((out["labels"].numpy() == labels).mean()) >= 0.98
    cli.entrypoint(["test", "--run", str(authors_fixture["segment"]), "--out", str(tmp_path / "test"),
                    "--test.video-frames", "0"])
    printed = json.loads((AUTHORS_DIR / "results" / "authors_stage2_cosine.json").read_text())["cosine"]["miou"]
    assert abs(json.loads((tmp_path / "test" / "metrics.json").read_text())["3dovs"]["miou"] - printed) < 0.005
