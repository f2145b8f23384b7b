"""The house rules, read from the code's own imports (ast, nothing is imported):

* layers, top to bottom: cli -> demo -> pipeline -> preflight -> eval -> train -> runs -> render -> field ->
  scene | features -> io -> config -> device -> errors; a module imports only its own layer or lower ones,
  and the peers scene and features do not import each other;
* no import cycle between modules;
* a function-local import of an ovs3d module carries a comment saying why;
* no module under ovs3d/ is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ovs3d"
LAYERS: list[set[str]] = [{"cli"}, {"demo"}, {"pipeline"}, {"preflight"}, {"viewer", "export"}, {"eval"}, {"train"},
                          {"runs"}, {"render"}, {"field"}, {"scene", "features"}, {"io"}, {"config"}, {"device"},
                          {"errors"}]
MAX_LINES = 400


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    """The top-level part of ``ovs3d.<room>...``."""
    return module.split(".")[1] if module.count(".") else ""


def layer(module: str) -> int:
    name = room(module)
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its room {name!r} to LAYERS")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported ovs3d module, line, at module level) of every ovs3d import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ovs3d") and node.level == 0:
            names = [node.module]
            if node.module in ("ovs3d", "ovs3d.features", "ovs3d.scene", "ovs3d.train"):   # from ovs3d.x import mod
                names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ovs3d")]
        for name in names:
            found.append((name, node.lineno, id(node) in top))
    return found


def test_every_room_has_a_layer() -> None:
    for module in modules():
        if module != "ovs3d.__init__" and module != "ovs3d":
            layer(module)


def test_no_module_imports_a_layer_above_it_and_peers_stay_apart() -> None:
    bad = []
    for module, path in modules().items():
        if room(module) in ("__init__", ""):
            continue
        for target, line, _ in imports(path):
            if target == "ovs3d" or room(target) in ("__init__", ""):
                continue
            if layer(target) < layer(module) or (layer(target) == layer(module) and room(target) != room(module)):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "imports that go up the layers (or across peers):\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {m: {t for t, _, top in imports(p) if top and t in mods} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_function_local_ovs3d_imports_say_why() -> None:
    bad = []
    for module, path in modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, line, top in imports(path):
            if top:
                continue
            here, above = lines[line - 1], lines[line - 2] if line > 1 else ""
            if "#" not in here and not above.strip().startswith("#"):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function")
    assert not bad, "function-local ovs3d imports without a comment giving the reason:\n" + "\n".join(bad)


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("source, expected", [
    ("from ovs3d.train.configs import preset\n", [("ovs3d.train.configs", 1, True)]),
    ("def f():\n    from ovs3d.render import camera\n", [("ovs3d.render", 2, False)]),
])
def test_the_import_reader_sees_module_and_function_imports(tmp_path: Path, source: str, expected) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imports(path) == expected
