"""Where the work runs, set in one place: ``Runtime`` (device, CPU threads), shared by every verb.

``auto`` picks cuda, then mps, then cpu. Nothing else hard-codes a device; library functions take the
resolved ``torch.device``.
"""

from __future__ import annotations

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
