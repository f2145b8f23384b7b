"""Text embeddings and relevancy maps (method spec sections 4 and 6.2).

Prompts are used verbatim (no template). With t_c the L2-normalised text embedding of class c and
f_s(x) the L2-normalised CLIP feature of pixel x at scale s:
  r[s, c, x] = <t_c, f_s(x)>                       (cosine, in [-1, 1])
  R[s, c, x] = (r - min_x r) / (max_x r - min_x r)  (min-max per (scale, class) over the image, in [0, 1]).

LERF's relevancy of a query q against the canonical negatives n_j ("object", "things", "stuff", "texture"), with
s_q = cos(F, t_q) and s_j = cos(F, t_nj) of a pixel feature F:
  rel_q(x) = min_j exp(tau s_q) / (exp(tau s_q) + exp(tau s_j)) = min_j sigmoid(tau (s_q - s_j)),  in [0, 1],
0.5 = no preference over the most similar negative. tau = 10, as LERF's code (``softmax(10 * sims)``); the
paper's formula writes no temperature (tau = 1), which squeezes every relevancy towards 0.5.
"""

from __future__ import annotations

import warnings

import torch

from ovs3d.features.encoders import ImageTextEncoder

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")
NEGATIVE_TEMPERATURE = 10.0


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


def negative_embeddings(encoder: ImageTextEncoder) -> tuple[torch.Tensor, str | None]:
    """([N, D] unit embeddings of ``CANONICAL_NEGATIVES``, a note or None). The built-in colour-word encoder
    knows none of these words: it gives each its uniform colour vector (its warning is not repeated here) and
    the note says so; the relevancy is then the query against "no colour preference"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = text_embeddings(encoder, list(CANONICAL_NEGATIVES))
    unknown = list(getattr(encoder, "unknown_prompts", []))
    note = (f"canonical negatives {unknown} embedded by the built-in encoder {encoder.name}, which knows "
            "no such word: each is its uniform colour vector") if unknown else None
    return text, note


def pairwise_relevancy(query: torch.Tensor, negatives: torch.Tensor,
                       temperature: float = NEGATIVE_TEMPERATURE) -> torch.Tensor:
    """LERF relevancy min_j sigmoid(tau (s_q - s_j)) of query cosines [Q, ...] against negative cosines
    [N, ...] (same trailing shape) -> [Q, ...] in [0, 1]."""
    diff = query.float()[:, None] - negatives.float()[None]          # [Q, N, ...]
    return torch.sigmoid(temperature * diff).amin(1)
