"""The ``ovs3d`` console script: one tyro subcommand per verb.

Each verb lives in ``ovs3d/cli/<verb>.py`` and exposes a dataclass ``Config`` (its docstring is the
verb's help, each field's docstring the option's help) and ``main(config)``. Entry points stay thin:
parse, then call one library function.
"""

from __future__ import annotations

import importlib
import sys

import tyro

from ovs3d.errors import InputError, WeightsUnavailableError

# verb -> module under ovs3d.cli, in the order the data flows.
VERBS: dict[str, str] = {
    "make-scene": "make_scene",
    "process-data": "process_data",
    "extract": "extract",
    "reconstruct": "reconstruct",
    "render": "render",
    "segment": "segment",
    "test": "test",
    "query": "query",
    "relevancy": "relevancy",
    "run": "run",
    "demo": "demo",
}


def load_verbs() -> dict[str, object]:
    return {verb: importlib.import_module(f"ovs3d.cli.{module}") for verb, module in VERBS.items()}


def entrypoint(args: list[str] | None = None) -> None:
    """Parse the command line and run the chosen verb; input errors print one clear line, exit 2."""
    modules = load_verbs()
    config = tyro.extras.subcommand_cli_from_dict(
        {verb: module.Config for verb, module in modules.items()},
        prog="ovs3d",
        description="ovs3d: weakly supervised 3D open-vocabulary segmentation (3D-OVS) on TensoRF.",
        args=args,
    )
    module = next(m for m in modules.values() if isinstance(config, m.Config))
    try:
        module.main(config)
    except (InputError, WeightsUnavailableError) as exc:
        print(f"ovs3d: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entrypoint()
