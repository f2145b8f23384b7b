"""Shared benchmark helpers: machine description, peak memory, timers and the JSON result writer.

Every benchmark writes ``bench/results/<name>.json`` through ``write_result`` so each file carries the
machine it was measured on and the command that produced it.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ovs3d.io.atomic import write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cpuinfo(key: str) -> str | None:
    """The value of the first ``key`` line of /proc/cpuinfo, or None (no such line, no /proc)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    return cpuinfo("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU's feature flags as ``lscpu`` lists them (``flags`` line of /proc/cpuinfo), sorted."""
    return sorted((cpuinfo("flags") or "").split())


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    """CPU name, its flags (all of them, and the SIMD ones that decide the fast paths), core count, torch
    version and threads, and the GPU name when one is visible."""
    import os

    import torch

    flags = cpu_flags()
    info: dict[str, Any] = {"cpu": cpu_name(), "cpu_simd": [f for f in SIMD_FLAGS if f in flags], "cpu_flags": flags,
                            "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def peak_gpu_gb() -> float | None:
    """Peak CUDA memory allocated by torch so far, in GB, or None without a GPU."""
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed wall-clock seconds."""
    out = {"s": 0.0}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - start


def require_shared(name: str) -> Path:
    """Path of a real scene in ../shared/data; exits with a clear message when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        raise SystemExit(f"bench: {path} is absent; the real scenes live in ../shared/data beside the repo")
    return path


def command_line() -> str:
    """The command that is running, as a user types it: ``python3 -m bench.<name> ...`` (no machine paths)."""
    script, *args = sys.argv
    path = Path(script).resolve()
    here = Path(__file__).resolve().parent
    head = [f"-m bench.{path.stem}"] if path.parent == here else [script]
    return " ".join([Path(sys.executable).name, *head, *args])


def without_machine_paths(value):
    """``value`` with this machine's paths in its strings replaced: the repository (or a clone of it) by
    ``<repo>``, temporary folders by ``<tmp>``, so that the stored results name no path of this machine."""
    import re

    if isinstance(value, dict):
        return {k: without_machine_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_machine_paths(v) for v in value]
    if isinstance(value, str):
        repo = Path(__file__).resolve().parents[1]
        value = value.replace(str(repo.parent / "shared"), "../shared").replace(str(repo), "<repo>")
        return re.sub(r"/tmp/[^/\s'\"]+(?:/p(?=/ovs3d/))?", "<tmp>", value)
    return value



def rule_scores(metrics: dict) -> dict:
    """3D-OVS mIoU of the 3D result under both label rules and of the 2D teacher (both rules), from a
    ``metrics.json`` dict of ``ovs3d test`` (whichever rule it was run with)."""
    from ovs3d.eval.segment_eval import label_rule_key  # bench.common is imported by benches that never load a run

    ref, main = metrics["reference"], metrics.get("label_rule", "relevancy")
    other = "cosine" if main == "relevancy" else "relevancy"
    ours = {main: metrics["3dovs"]["miou"], other: ref[label_rule_key(other)]["3dovs"]["miou"]}
    return {"relevancy": round(ours["relevancy"], 4), "cosine": round(ours["cosine"], 4),
            "teacher_relevancy": round(ref["teacher_2d_relevancy"]["3dovs"]["miou"], 4),
            "teacher_cosine": round(ref["teacher_2d"]["3dovs"]["miou"], 4)}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine, the command line and ``result``."""
    payload = {"benchmark": name, "command": command_line(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **result}
    path = RESULTS_DIR / f"{name}.json"
    write_json_atomic(path, without_machine_paths(payload))
    print(f"bench: wrote {path}")
    return path
