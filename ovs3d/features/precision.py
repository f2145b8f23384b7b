"""Compute precision of the encoders' networks (the CLIP and DINO slots).

- ``fp32``: the reference (``--extract.clip.precision fp32`` forces it).
- ``fp16`` (CUDA): the whole network in half precision, as the authors run CLIP.
- ``bf16``: the weights of the matrix layers (Linear, convolution, attention projections) are stored in
  bf16 once and the forward runs under bf16 autocast, so the matrix products run in bf16 with fp32
  accumulation (oneDNN's avx512_bf16 / AMX kernels on a CPU, tensor cores on CUDA) while normalisation,
  softmax and the residual stream stay fp32. The weights are converted once because CPU autocast
  casts an fp32 weight again at every call (its cast cache only holds trainable leaves): with fp32
  weights the autocast forward of ViT-B/16 was slower than fp32 on the 2-core dev machine.
- ``int8`` (CPU): dynamic int8 quantisation of the Linear layers of the image network (int8 weights,
  activations quantised per batch at run time; fbgemm, VNNI where the CPU has it); everything else fp32.

bf16 and int8 apply to the image network only: CLIP's text tower stays fp32 (a few prompts per run), so
the text embeddings the crops are compared with are the fp32 ones.

``auto`` is fp16 on CUDA, bf16 on a CPU with native bf16 dot products (``device.fast_bf16``) and fp32
elsewhere; for DINO it stays fp32 on every CPU (bf16 on request): one forward pass per image is about
1 % of an extraction, and on random-weight ViT-B/8 bf16 flipped 1.7 % of the per-cell argmax over 16
Gaussian directions in ``bench.extract`` (cosine to fp32 >= 0.99996: the flips are cells whose two
best directions nearly tie), more than the guard's 1 %. The precision guard (embedding cosine and per-pixel argmax agreement of
every path against fp32 on ViT-B/16 CLIP and ViT-B/8 DINO) is ``python -m bench.extract``.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from ovs3d.device import fast_bf16
from ovs3d.errors import InputError
from ovs3d.features.encoders import Precision

MATRIX_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def resolve(precision: Precision, device: torch.device, auto_bf16: bool = True) -> str:
    """The precision a network runs at: ``auto`` resolved for ``device`` (bf16 only when ``auto_bf16``);
    int8 only on the CPU."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "bf16" if auto_bf16 and fast_bf16(device) else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise InputError(None, f"precision int8 runs on the CPU only (device: {device.type})",
                         "pass --extract.clip.precision / --extract.dino.precision auto, fp16 or fp32")
    return precision


def prepare(model: nn.Module, precision: str, device: torch.device, fast_part: str = "") -> nn.Module:
    """``model`` in eval mode without gradients, on ``device``, with its weights set up for
    ``precision`` (a resolved name, see ``resolve``). bf16 and int8 apply to the submodule named
    ``fast_part`` (default: the whole model), e.g. CLIP's image tower: the rest stays fp32."""
    model = model.eval().requires_grad_(False).to(device, torch.float32)
    if precision == "fp16":
        return model.half()
    part = model.get_submodule(fast_part)
    if precision == "bf16":
        for module in part.modules():
            if isinstance(module, MATRIX_LAYERS):
                module.to(torch.bfloat16)
    elif precision == "int8":
        with warnings.catch_warnings():  # torch.ao's deprecation notice, once per model
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(part, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def input_dtype(precision: str) -> torch.dtype:
    """The dtype a network's input is cast to: fp16 for the fp16 network, fp32 otherwise."""
    return torch.float16 if precision == "fp16" else torch.float32


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a forward runs in: bf16 autocast for ``bf16``, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
