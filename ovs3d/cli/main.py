"""The ``ovs3d`` console script: one tyro subcommand per verb.

Each verb lives in ``ovs3d/cli/<verb>.py`` and exposes a dataclass ``Config`` (its docstring is the
verb's help, each field's docstring the option's help) and ``main(config)``. A verb with stage
presets also has ``defaults(preset, **options)``: the command line is scanned for ``--preset`` (and
``--legacy-config``) first, the verb's defaults are built from that preset, and every other flag
overrides them. Entry points stay thin: parse, then call one library function.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, Union

import tyro

from ovs3d.config import check_all
from ovs3d.errors import InputError, WeightsUnavailableError

# verb -> module under ovs3d.cli, in the order the data flows.
VERBS: dict[str, str] = {
    "make-scene": "make_scene",
    "process-data": "process_data",
    "extract": "extract",
    "reconstruct": "reconstruct",
    "render": "render",
    "import-checkpoint": "import_checkpoint",
    "segment": "segment",
    "test": "test",
    "query": "query",
    "export": "export",
    "view": "view",
    "relevancy": "relevancy",
    "run": "run",
    "demo": "demo",
}
PRESCANNED = ("preset", "legacy_config")


def load_verbs() -> dict[str, Any]:
    return {verb: importlib.import_module(f"ovs3d.cli.{module}") for verb, module in VERBS.items()}


def prescan(args: list[str]) -> dict[str, str]:
    """The values of the flags that choose a verb's defaults (``--preset X`` or ``--preset=X``)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        for name in PRESCANNED:
            flag = "--" + name.replace("_", "-")
            if arg == flag and i + 1 < len(args):
                found[name] = args[i + 1]
            elif arg.startswith(flag + "="):
                found[name] = arg.split("=", 1)[1]
    return found


def parse(args: list[str]) -> tuple[Any, Any]:
    """(verb module, its parsed Config) of a command line (without the program name); every stage field
    is range-checked here (``config.check_all``), before any work."""
    modules = load_verbs()
    options = prescan(args)
    name = options.pop("preset", "cpu")
    chosen = next((arg for arg in args if arg in modules), None)
    choices = []
    for verb, module in modules.items():
        default = module.defaults(name, **options) if verb == chosen and hasattr(module, "defaults") else None
        marker = tyro.conf.subcommand(verb, default=default) if default is not None else tyro.conf.subcommand(verb)
        choices.append(Annotated[module.Config, marker])
    config = tyro.cli(Union[tuple(choices)], prog="ovs3d", args=args,  # type: ignore[arg-type]
                      description="ovs3d: weakly supervised 3D open-vocabulary segmentation (3D-OVS) on TensoRF. "
                                  "Add --debug to any command to see the traceback of an internal error.")
    module = next(m for m in modules.values() if isinstance(config, m.Config))
    check_all(config)
    return module, config


def entrypoint(args: list[str] | None = None) -> None:
    """Parse the command line and run the chosen verb. The one boundary of expected failures: bad input
    (``InputError``, missing weights) and file-system errors print one clear line and exit 2; an
    interruption says how to resume and exits 130; anything else is a bug: one line and exit 1, with
    the traceback under ``--debug`` (accepted anywhere on the line)."""
    args = sys.argv[1:] if args is None else list(args)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        module, config = parse(args)
        module.main(config)
    except (InputError, WeightsUnavailableError) as exc:
        print(f"ovs3d: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ovs3d: error: {where}{exc.strerror or exc}. Fix: check that the path exists, is writable, and "
              f"that the disk has space", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("ovs3d: interrupted; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last boundary: a bug, said as one line unless --debug
        if debug:
            raise
        print(f"ovs3d: internal error (a bug, please report it): {type(exc).__name__}: {exc}. "
              f"Run the same command with --debug for the traceback", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    entrypoint()
