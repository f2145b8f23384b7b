"""One entry point for every benchmark: ``python -m bench all`` (or names), then the README table.

Each benchmark runs as its own process (so its peak memory is its own) and writes
``bench/results/<name>.json``; ``python -m bench table`` only regenerates the README's results table.
"""

from __future__ import annotations

import subprocess
import sys

# name -> arguments of ``python -m bench.<name>``; in the order they are run by ``all``.
BENCHMARKS: dict[str, list[str]] = {
    "reconstruct": ["--part", "all"],
    "extract": [],
    "builtin_features": [],
    "demo": [],
    "viewer": [],
    "segment": [],
    "lifting": [],
    "instant": ["--statue"],
    "process_data": [],
    "export": ["--preset", "cpu", "--statue", "--threads", "2"],
    "authors": [],
    "scenes360": [],
    "quality": ["--layout", "360"],
}
# Not in ``all``: needs a GPU (``python -m bench gpu``; ``python -m bench.gpu --smoke`` checks it on a CPU).
EXTRA: dict[str, list[str]] = {"gpu": []}


def main(argv: list[str]) -> int:
    names = list(BENCHMARKS) if not argv or argv == ["all"] else [n for n in argv if n != "table"]
    known = {**BENCHMARKS, **EXTRA}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"bench: unknown benchmark(s) {unknown}; choose from {list(known)}, all or table")
        return 2
    failed = []
    for name in names:
        print(f"bench: running {name}", flush=True)
        if subprocess.call([sys.executable, "-m", f"bench.{name}", *known[name]]) != 0:
            failed.append(name)
    from bench.report import update_readme

    update_readme()
    if failed:
        print(f"bench: failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
