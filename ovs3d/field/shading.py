"""The shading MLP's fast paths: bf16 autocast and ``torch.compile``, each with its fp32 / eager fallback.

colour(a, d) = sigmoid(MLP([a, d])) (``field/tensorf.py``). ``precision``:

- ``fp32``: the reference;
- ``bf16``: the three matrix products under bf16 autocast (inputs and weights rounded to bf16, products
  accumulated in fp32 by oneDNN / cuBLAS; the weights, their gradients and Adam stay fp32), the last
  layer's output turned back to fp32 before the sigmoid, so the colour and the photometric loss are
  fp32. On a CPU with avx512_bf16 the forward + backward ran about 1.4x faster than fp32 on the
  shared 2-core dev machine (35.8 k samples, the stage-1 final level of the authors' small setting).

``compile`` wraps the function in ``torch.compile`` (inductor; ``dynamic=True``, since the sample count
changes every iteration). When no compiler works (no C++ toolchain, an unsupported backend) the first
call raises inside torch; the function then falls back to eager for good and says so once.

``resolve_precision("auto", device)`` is bf16 where bf16 products are native (``device.fast_bf16``),
fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Literal

import torch
from torch import nn

from ovs3d.device import fast_bf16

MlpPrecision = Literal["auto", "fp32", "bf16"]
Shader = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_precision(precision: MlpPrecision, device: torch.device) -> str:
    """``auto`` -> bf16 where ``fast_bf16(device)``, else fp32; fp32 and bf16 as given."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def eager_shader(precision: str) -> Shader:
    """shade(mlp, features, viewdirs) = sigmoid(MLP([features, viewdirs])) at ``precision``:
    [M, A], [M, 3] -> [M, 3] fp32."""
    def shade(mlp: nn.Module, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, viewdirs], dim=-1)
        context = (torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16"
                   else contextlib.nullcontext())
        with context:
            logits = mlp(x)
        return torch.sigmoid(logits.float())

    return shade


class CompiledShader:
    """``torch.compile`` of a shader; eager from the first call that fails to compile on."""

    def __init__(self, eager: Shader, log: Callable[[str], None] = print) -> None:
        self.eager, self.log = eager, log
        self.compiled: Shader | None = torch.compile(eager, dynamic=True)

    def __call__(self, mlp: nn.Module, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(mlp, features, viewdirs)
            except Exception as exc:  # the compiler's failures come in many types (toolchain, backend, graph)
                self.compiled = None
                self.log(f"torch.compile of the shading MLP failed ({type(exc).__name__}); running it eagerly")
        return self.eager(mlp, features, viewdirs)


def make_shader(precision: str = "fp32", compile: bool = False, log: Callable[[str], None] = print) -> Shader:
    """The shading function at ``precision`` (resolved: fp32 or bf16), compiled when asked. It takes the
    MLP as an argument, so a copied field shades with its own MLP."""
    eager = eager_shader(precision)
    return CompiledShader(eager, log) if compile else eager
