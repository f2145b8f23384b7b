"""Where the work runs, set in one place: ``Runtime`` (device, CPU threads), shared by every verb.

``auto`` picks cuda, then mps, then cpu. Nothing else hard-codes a device; library functions take the
resolved ``torch.device``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Literal

import torch

from ovs3d.errors import InputError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name``; ``auto`` prefers cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class Runtime:
    """Device and CPU threads of a command."""

    device: DeviceName = "auto"
    """auto (cuda, then mps, then cpu) | cpu | cuda | mps."""
    threads: int = 0
    """CPU threads for torch (0: torch's default). On a shared, busy CPU 1 thread can be much faster."""

    def apply(self) -> torch.device:
        """Set the thread count and return the resolved device."""
        if self.threads < 0:
            raise InputError(None, f"--threads {self.threads} is negative", "pass 0 (torch's default) or a positive count")
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        available = {"cuda": torch.cuda.is_available(),
                     "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not available.get(self.device, True):
            raise InputError(None, f"--device {self.device}: no such device is available on this machine",
                             "pass --device auto (cuda, then mps, then cpu) or --device cpu")
        return resolve_device(self.device)


def cpuinfo_field(name: str) -> str:
    """The first ``name`` line of /proc/cpuinfo, after its colon ('' where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (the ``flags`` line of /proc/cpuinfo; empty where there is none)."""
    return frozenset(cpuinfo_field("flags").split())


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    return cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run faster than fp32 on ``device``: a CUDA GPU that supports bf16, or
    a CPU with native bf16 dot products (``avx512_bf16`` or ``amx_bf16``). Elsewhere (AVX2-only CPUs,
    MPS) bf16 is emulated and slower than fp32, so the fast paths stay in fp32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False
