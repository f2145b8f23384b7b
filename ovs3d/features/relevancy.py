"""Text embeddings and relevancy maps (method spec sections 4 and 6.2).

Prompts are used verbatim (no template). With t_c the L2-normalised text embedding of class c and
f_s(x) the L2-normalised CLIP feature of pixel x at scale s:
  r[s, c, x] = <t_c, f_s(x)>                       (cosine, in [-1, 1])
  R[s, c, x] = (r - min_x r) / (max_x r - min_x r)  (min-max per (scale, class) over the image, in [0, 1]).
"""

from __future__ import annotations

import torch

from ovs3d.features.encoders import ImageTextEncoder


def text_embeddings(encoder: ImageTextEncoder, prompts: list[str]) -> torch.Tensor:
    """[C, D] float32 L2-normalised text embeddings of ``prompts`` (verbatim)."""
    with torch.no_grad():
        text = encoder.encode_texts(list(prompts)).float()
    return text / text.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cosine_maps(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """r = <t_c, f_s(x)>: features [S, D, h, w] (normalised), text [C, D] (normalised) -> [S, C, h, w]."""
    return torch.einsum("sdhw,cd->schw", features.float(), text.to(features.device).float())


def minmax_ranges(cosines: torch.Tensor) -> torch.Tensor:
    """[S, C, h, w] -> [S, C, 2]: (min, max) over the pixels, per (scale, class)."""
    flat = cosines.flatten(2)
    return torch.stack([flat.amin(-1), flat.amax(-1)], dim=-1)


def apply_ranges(cosines: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """Min-max normalise cosines [..., S, C] (or [S, C, h, w] with ranges broadcast) with ranges [S, C, 2]."""
    low, high = ranges[..., 0], ranges[..., 1]
    if cosines.dim() == 4:
        low, high = low[..., None, None], high[..., None, None]
    return (cosines - low) / (high - low).clamp_min(1e-12)


def relevancy(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Min-max relevancy [S, C, h, w] in [0, 1] of normalised features [S, D, h, w] and text [C, D]."""
    cosines = cosine_maps(features, text)
    return apply_ranges(cosines, minmax_ranges(cosines))


def label_map(features: torch.Tensor, text: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """2D segmentation straight from the features: argmax over classes of the scale-mean relevancy
    (1/S) sum_s R[s, c, x], bilinearly resized to ``size`` = (W, H) first when given. -> [H, W] int64."""
    scores = relevancy(features, text).mean(0)  # [C, h, w]
    if size is not None and tuple(scores.shape[-2:]) != (size[1], size[0]):
        scores = torch.nn.functional.interpolate(scores[None], size=(size[1], size[0]), mode="bilinear",
                                                 align_corners=False)[0]
    return scores.argmax(0)
