"""timm backend of the dense slot (paper: DINO ViT-B/8 = ``vit_base_patch8_224.dino``), never torch.hub.

Feature (method spec section 5): the output tokens of the LAST transformer block, before the final
LayerNorm, class (and any register) tokens dropped: [B, D, H / p, W / p] for patch size p.
``forward_intermediates(indices=1, norm=False)`` gives exactly that. The model is built with
``dynamic_img_size`` so any input whose sides are multiples of p works (the position embedding is
interpolated). Input normalisation: the model's mean/std (ImageNet for DINO).

Weights, in order: ``--extract.dino.weights`` (safetensors or a torch.save state dict), the local hub cache, a
download when the hub answers; otherwise ``WeightsUnavailableError`` at once. The file is read safely
(``hub.read_weights_file``: never unpickling code) and handed to timm as a state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ovs3d.errors import InputError, WeightsUnavailableError
from ovs3d.features import precision
from ovs3d.features.encoders import DinoConfig
from ovs3d.features.hub import cached_hub_file, hub_reachable, load_errors, mismatch_error, read_weights_file

# The command-line options named in the weights-file errors (registry.py names its own for the
# existence check; keep the two in step when the options are renamed).
MODEL_OPTION, WEIGHTS_OPTION = "--extract.dino.model", "--extract.dino.weights"


def import_timm():
    try:
        import timm
    except ImportError as exc:
        raise ImportError("the timm DINO extractor needs timm: `pip install timm`, or use --extract.dino.kind builtin "
                          "(weight-free, not DINO)") from exc
    return timm


def locate_timm_weights(model: str) -> str:
    """A local file with the pretrained weights of timm ``model``: hub cache, or a download when the hub
    is reachable; else WeightsUnavailableError naming the model and ``--extract.dino.weights``."""
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(model)
    repo = cfg.hf_hub_id if cfg is not None else None
    missing = WeightsUnavailableError(
        f"DINO weights '{model}' are not in the local cache and cannot be downloaded (no connection to the "
        f"model hub). Fix: download them once on a connected machine, or pass a local weights file with "
        f"--extract.dino.weights PATH (or use --extract.dino.kind builtin, weight-free and not DINO)")
    if not repo:
        raise missing
    found = cached_hub_file(repo, ["model.safetensors", "pytorch_model.bin"])
    if found is not None:
        return str(found)
    if not hub_reachable():
        raise missing
    from huggingface_hub import hf_hub_download

    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return hf_hub_download(repo, filename)
        except Exception:  # network and missing-file errors come in many types
            continue
    raise missing


class TimmDinoExtractor:
    """DINO through timm: ``extract`` [B, 3, H, W] in [0, 1] -> [B, D, H / stride, W / stride]."""

    def __init__(self, config: DinoConfig, device: torch.device):
        timm = import_timm()
        base = config.model.split(".")[0]
        if not timm.is_model(base):
            raise InputError(None, f"unknown timm model '{config.model}'",
                             "pass a timm ViT name to --extract.dino.model, e.g. vit_base_patch8_224.dino")
        checkpoint = str(config.weights) if config.weights is not None else locate_timm_weights(config.model)
        hub_fix = None if config.weights is not None else (
            f"delete this cached file so that it is downloaded again, or pass a local file to {WEIGHTS_OPTION}")
        state = read_weights_file(checkpoint, WEIGHTS_OPTION, full=True, fix=hub_fix)
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}  # as timm's file loader
        try:
            model = timm.create_model(config.model, pretrained=True, pretrained_cfg_overlay={"state_dict": state},
                                      dynamic_img_size=True, num_classes=0)
        except load_errors() as exc:
            raise mismatch_error(checkpoint, exc, config.model, MODEL_OPTION, WEIGHTS_OPTION) from exc
        del state
        if isinstance(getattr(model, "pretrained_cfg", None), dict):
            model.pretrained_cfg.pop("state_dict", None)  # the cfg would otherwise keep a second copy alive
        if not hasattr(model, "forward_intermediates"):
            raise InputError(None, f"timm model '{config.model}' has no forward_intermediates",
                             "use a timm ViT, e.g. vit_base_patch8_224.dino")
        self.device = torch.device(device)
        self.precision = precision.resolve(config.precision, self.device, auto_bf16=False)  # see precision.py
        self.model = precision.prepare(model, self.precision, self.device)
        patch = model.patch_embed.patch_size
        self.stride = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.feature_dim = int(model.embed_dim)
        mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        source = Path(config.weights).name if config.weights is not None else "hub"
        self.name = f"timm {config.model} ({source})"

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1], H and W multiples of the patch size -> [B, D, H/p, W/p] float32:
        last block's tokens before the final norm, prefix tokens dropped."""
        h, w = images.shape[-2:]
        if h % self.stride or w % self.stride:
            raise InputError(None, f"image size {w}x{h} is not a multiple of the patch size {self.stride}",
                             f"resize or crop the images to multiples of {self.stride}")
        x = ((images.to(self.device, torch.float32) - self.mean) / self.std).to(precision.input_dtype(self.precision))
        with precision.autocast(self.precision, self.device):
            (last,) = self.model.forward_intermediates(x, indices=1, norm=False, output_fmt="NCHW",
                                                       intermediates_only=True)
        return last.float()
