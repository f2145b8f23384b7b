"""The export's files: binary PLY point clouds and meshes, a GLB scene with one named node per class, and
the JSON beside them, each written atomically (``io/atomic.py``).

Point cloud PLY (``binary_little_endian``), one ``vertex`` element whose properties are, in order:

    x y z (float32)  red green blue (uchar)  label (int32)  score_0 ... score_{C-1} (float32)

so every PLY viewer finds the position and colour first and ignores the rest; the class names are in the
header (``comment class <k> <name>``) and in ``classes.json``. Mesh PLY: ``vertex`` x y z red green blue,
``face`` vertex_indices (uchar count, int32 indices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovs3d.export.mesh import Mesh
from ovs3d.io.atomic import atomic_path


def class_comments(classes: list[str]) -> list[str]:
    """PLY header comments naming the classes, ``class <k> <name>`` (newlines in a name become spaces)."""
    return [f"class {k} {' '.join(name.split())}" for k, name in enumerate(classes)]


def point_properties(label: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """The extra vertex properties of a labelled cloud: ``label`` (int32) and ``score_<k>`` (float32)."""
    props = {"label": label.astype(np.int32)}
    props.update({f"score_{k}": scores[:, k].astype(np.float32) for k in range(scores.shape[1])})
    return props


def write_point_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, properties: dict[str, np.ndarray] | None = None,
                    comments: list[str] = ()) -> Path:
    """Points xyz [N, 3] and colours rgb [N, 3] in [0, 1], then the extra [N] ``properties`` (int32 or
    float32, in order) -> binary PLY."""
    from plyfile import PlyData, PlyElement  # heavy optional readers load only when a file is written

    properties = properties or {}
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(name, "i4" if values.dtype.kind in "iu" else "f4") for name, values in properties.items()]
    data = np.empty(len(xyz), dtype=fields)
    for i, axis in enumerate("xyz"):
        data[axis] = xyz[:, i]
    colors = np.clip(np.asarray(rgb) * 255 + 0.5, 0, 255).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        data[channel] = colors[:, i]
    for name, values in properties.items():
        data[name] = values
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<", comments=list(comments)).write(str(tmp))
    return path


def write_mesh_ply(path: Path, mesh: Mesh, comments: list[str] = ()) -> Path:
    """A coloured triangle mesh -> binary PLY (vertex x y z red green blue; face vertex_indices)."""
    from plyfile import PlyData, PlyElement  # heavy optional readers load only when a file is written

    vertex = np.empty(len(mesh.vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                                 ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = mesh.vertices[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = mesh.colors[:, i]
    face = np.empty(len(mesh.faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = mesh.faces
    elements = [PlyElement.describe(vertex, "vertex"),
                PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"})]
    with atomic_path(path) as tmp:
        PlyData(elements, text=False, byte_order="<", comments=list(comments)).write(str(tmp))
    return path


def write_glb(path: Path, meshes: list[Mesh]) -> Path:
    """One GLB scene, a node named after each non-empty mesh (its class), vertex colours kept."""
    import trimesh  # heavy optional writer loads only when a file is written

    scene = trimesh.Scene()
    for mesh in meshes:
        if len(mesh.faces):
            colors = np.concatenate([mesh.colors, np.full((len(mesh.colors), 1), 255, np.uint8)], axis=1)
            geometry = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)
            scene.add_geometry(geometry, node_name=mesh.name, geom_name=mesh.name)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(scene.export(file_type="glb"))
    return path
