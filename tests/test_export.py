"""``ovs3d export``: every file read back (plyfile, trimesh), and the world frame checked against the
synthetic scene's own world cameras.

The run: a 3-view 32x24 synthetic scene, a stage-1 field whose density is one box in NDC (so its surface
is known), and 4 stage-2 iterations with the built-in encoders (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovs3d.cli.main import entrypoint
from ovs3d.config import to_plain
from ovs3d.field.tensorf import TensoRF
from ovs3d.runs.record import RunRecord
from ovs3d.scene.cameras import Cameras, ndc_rays
from ovs3d.scene.llff import load_llff
from ovs3d.scene.normalize import apply_frame, input_from_normalized, normalize_poses, normalizing_frame
from ovs3d.scene.rayspace import NDCSpace
from ovs3d.scene.synthetic import read_scene_json

plyfile = pytest.importorskip("plyfile")
trimesh = pytest.importorskip("trimesh")

BOX_NDC = ((-0.5, 0.5), (-0.4, 0.4), (-0.2, 0.3))
"""The density box of the fake stage 1, per axis (x, y, z) in NDC."""
BUILTIN = ["--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin", "--extract.pyramid.stride-divisor", "1"]


def box_stage1(scene: Path, run: Path) -> None:
    """A stage-1 run whose density is 20 inside BOX_NDC and 0 outside (one rank-1 XY-plane x Z-line term)."""
    from ovs3d.runs.load import field_sections
    from ovs3d.runs.store import write_run
    from ovs3d.train.configs import preset
    from ovs3d.train.schedule import marching_step

    space = NDCSpace()
    reso = (24, 24, 24)
    field = TensoRF(space, reso, generator=torch.Generator().manual_seed(0))
    nodes = [torch.linspace(lo, hi, n) for (lo, hi), n in zip(((-2, 2), (-2, 2), (-1, 1)), reso)]
    inside = [(a >= lo) & (a <= hi) for a, (lo, hi) in zip(nodes, BOX_NDC)]
    with torch.no_grad():
        for p in [*field.density_grid.planes, *field.density_grid.lines]:
            p.zero_()
        field.density_grid.planes[0][0, 0] = (inside[1][:, None] & inside[0][None, :]).float()
        field.density_grid.lines[0][0, 0, :, 0] = 20.0 * inside[2].float()
    record = RunRecord(stage="reconstruct", scene=str(scene.resolve()), space=space.to_dict(),
                       step=marching_step(space.box_tensor(), 96), width=32, height=24, iteration=0, complete=True,
                       config=to_plain(preset("reconstruct", "test")), arch=field.arch())
    run.mkdir(parents=True, exist_ok=True)
    write_run(run, record, field_sections(field))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ovs3d.scene.synthetic import make_synthetic_scene

    root = tmp_path_factory.mktemp("export")
    scene = make_synthetic_scene(root / "scene", n_views=3, width=32, height=24, n_annotated=2, supersample=1)
    box_stage1(scene, root / "stage1")
    entrypoint(["segment", "--run", str(root / "stage1"), "--out", str(root / "stage2"), "--preset", "test",
                "--segment.iterations", "4", "--threads", "1", *BUILTIN])
    entrypoint(["export", "all", "--run", str(root / "stage2"), "--text", "red ball", "--threads", "1"])
    return root, scene, root / "stage2" / "export"


def test_the_point_cloud_reads_back_with_standard_properties_first(exported) -> None:
    root, _, out = exported
    classes = json.loads((out / "classes.json").read_text())["classes"]
    ply = plyfile.PlyData.read(str(out / "points.ply"))
    assert ply.text is False and ply.byte_order == "<"
    vertex = ply["vertex"]
    names = [p.name for p in vertex.properties]
    assert names == ["x", "y", "z", "red", "green", "blue", "label"] + [f"score_{k}" for k in range(len(classes))]
    types = [p.val_dtype for p in vertex.properties]
    assert types[:3] == ["f4"] * 3 and types[3:6] == ["u1"] * 3 and types[6] == "i4" and set(types[7:]) == {"f4"}
    assert [c for c in ply.comments if c.startswith("class ")] == [f"class {k} {c}" for k, c in enumerate(classes)]
    assert any("NOT CLIP" in c for c in ply.comments)
    xyz = np.stack([vertex[a] for a in "xyz"], 1)
    scores = np.stack([vertex[f"score_{k}"] for k in range(len(classes))], 1)
    assert len(xyz) > 100 and np.isfinite(xyz).all() and np.isfinite(scores).all()
    assert np.array_equal(vertex["label"], scores.argmax(1))
    summary = json.loads((out / "export.json").read_text())
    entry = next(f for f in summary["files"] if f["file"] == "points.ply")
    assert entry["points"] == len(xyz) and sum(entry["per_class"].values()) == len(xyz)
    assert isinstance(summary["halo_rays_dropped"], int) and summary["halo_rays_dropped"] >= 0
    cloud = trimesh.load(out / "points.ply")                 # a viewer that knows only x y z and colours
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == len(xyz)
    assert np.allclose(cloud.vertices, xyz) and cloud.colors.shape[0] == len(xyz)


def test_the_points_lie_on_the_density_box_front_face_in_the_input_frame(exported) -> None:
    """Back through the normalisation and NDC (written here from ndc_rays' formula), the points must sit on
    the face of the box that the cameras see (NDC z = BOX z min) and inside its x, y extent."""
    root, scene_root, out = exported
    scene = load_llff(scene_root, downsample=1.0, load_annotations=False)
    back = scene.input_from_scene
    ply = plyfile.PlyData.read(str(out / "points.ply"))["vertex"]
    xyz = np.stack([ply[a] for a in "xyz"], 1).astype(np.float64)
    local = (xyz - back[:3, 3]) @ np.linalg.inv(back[:3, :3]).T      # normalised scene frame
    f, w, h = float(scene.cameras.fx[0]), scene.width, scene.height
    ndc = np.stack([-2 * f / w * local[:, 0] / local[:, 2], -2 * f / h * local[:, 1] / local[:, 2],
                    1 + 2 / local[:, 2]], 1)
    (x0, x1), (y0, y1), (z0, _) = BOX_NDC
    cell = np.array([4.0, 4.0, 2.0]) / 23                          # node spacing of the 24^3 grid over the NDC box
    assert np.median(np.abs(ndc[:, 2] - z0)) < cell[2]
    assert (ndc[:, 0] > x0 - cell[0]).all() and (ndc[:, 0] < x1 + cell[0]).all()
    assert (ndc[:, 1] > y0 - cell[1]).all() and (ndc[:, 1] < y1 + cell[1]).all()


def test_meshes_and_the_glb_read_back(exported) -> None:
    root, _, out = exported
    classes = json.loads((out / "classes.json").read_text())["classes"]
    files = sorted((out / "mesh").glob("*.ply"))
    assert len(files) == len(classes)
    faces_total, named = 0, {}
    for k, path in enumerate(files):
        ply = plyfile.PlyData.read(str(path))
        assert [p.name for p in ply["vertex"].properties] == ["x", "y", "z", "red", "green", "blue"]
        assert ply["face"].properties[0].name == "vertex_indices"
        assert f"class {k} {classes[k]}" in ply.comments
        if ply["face"].count:
            mesh = trimesh.load(path, process=False)
            assert np.isfinite(mesh.vertices).all() and mesh.faces.max() < len(mesh.vertices)
            assert mesh.is_watertight, f"{path.name}: the documented closed surface is open"
            named[classes[k]] = len(mesh.faces)
            faces_total += len(mesh.faces)
    assert faces_total > 0
    glb = trimesh.load(out / "mesh" / "scene.glb")
    assert isinstance(glb, trimesh.Scene)
    nodes = {name for name in glb.graph.nodes_geometry}
    assert nodes == set(named)
    assert {name: len(glb.geometry[glb.graph[name][1]].faces) for name in nodes} == named


def test_object_export_and_cameras(exported) -> None:
    root, scene_root, out = exported
    folder = next((out / "object").iterdir())
    info = json.loads((folder / "object.json").read_text())
    ply = plyfile.PlyData.read(str(folder / "points.ply"))["vertex"]
    assert info["text"] == "red ball" and ply.count == info["points"] > 0
    assert [p.name for p in ply.properties][-1] == "relevancy" and (ply["relevancy"] >= 0.5 - 1e-6).all()
    assert plyfile.PlyData.read(str(folder / "mesh.ply"))["face"].count == info["mesh_faces"]
    cameras = json.loads((out / "cameras.json").read_text())
    truth = read_scene_json(scene_root)
    c2w = np.array([frame["c2w"] for frame in cameras["frames"]])
    assert np.allclose(c2w[:, :3, :], np.array(truth["cameras_c2w"]), atol=1e-4)   # the input poses' own frame
    assert np.allclose([frame["fx"] for frame in cameras["frames"]], truth["focal"])
    assert (cameras["width"], cameras["height"]) == (32, 24)


def test_ndc_inverse_puts_points_back_on_their_world_rays() -> None:
    c2w = torch.eye(4)[:3][None].repeat(2, 1, 1)
    c2w[1, :, 3] = torch.tensor([0.1, -0.2, 0.05])
    cams = Cameras.from_focal(c2w, 50.0, 80, 60)
    o, d = cams.rays(torch.tensor([1, 1, 0]), torch.tensor([10.0, 70.0, 40.0]), torch.tensor([5.0, 50.0, 30.0]))
    o_ndc, d_ndc = ndc_rays(o, d, cams.fx[0], 80, 60)
    t = torch.tensor([0.3, 0.8, 0.5])
    world = NDCSpace().to_scene(o_ndc + t[:, None] * d_ndc, cams)
    assert torch.linalg.cross(world - o, d, dim=-1).norm(dim=-1).max() < 1e-5
    assert torch.allclose(1 + 2 / world[:, 2], (o_ndc + t[:, None] * d_ndc)[:, 2], atol=1e-5)


@pytest.mark.parametrize("kind", ["forward", "360"])
def test_the_normalisation_is_undone_exactly(kind: str) -> None:
    rng = np.random.default_rng(0)
    rot = np.linalg.qr(rng.normal(size=(6, 3, 3)))[0]
    rot *= np.sign(np.linalg.det(rot))[:, None, None]
    c2w = np.concatenate([rot, rng.normal(size=(6, 3, 1)) * 3 + 5], axis=2)
    bounds = np.tile([[2.0, 9.0]], (6, 1))
    normalized, _ = normalize_poses(c2w, bounds, kind)
    back = input_from_normalized(*normalizing_frame(c2w, bounds, kind))
    assert np.allclose(normalized[:, :, 3] @ back[:3, :3].T + back[:3, 3], c2w[:, :, 3])
    frame, scale = normalizing_frame(c2w, bounds, kind)
    assert np.allclose(apply_frame(c2w, frame, scale), normalized)


def test_object_without_text_and_a_stage1_run_are_one_line_errors(exported, capsys) -> None:
    root, _, _ = exported
    for args, message in ((["export", "object", "--run", str(root / "stage2")], "needs a query text"),
                          (["export", "pointcloud", "--run", str(root / "stage1")], "")):
        with pytest.raises(SystemExit) as exit_info:
            entrypoint(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("ovs3d: error:") and message in err and len(err.strip().splitlines()) == 1
