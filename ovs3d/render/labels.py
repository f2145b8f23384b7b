"""Class scores and labels of rendered features (method spec section 7), shared by test, query and the viewer.

With F(x) the unit rendered feature of pixel x and t_c the unit text embedding of class c:

    r_c(x) = cos(F(x), t_c)                                            ``class_cosines``
    R_c(x) = (r_c(x) - min_x r_c) / (max_x r_c - min_x r_c)  over the view   ``view_relevancy``

Label rules (no threshold, no "unknown" class): ``cosine`` = argmax_c r_c (the paper's);
``relevancy`` = argmax_c R_c, which removes each prompt's offset (some prompts are closer to
everything), while a class absent from the view is still stretched to [0, 1].
"""

from __future__ import annotations

import torch

from ovs3d.features.relevancy import apply_ranges, minmax_ranges

LABEL_RULES = ("cosine", "relevancy")


def class_cosines(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """cos(F, t_hat_c) of unit features [H, W, D] and unit text [C, D] -> [C, H, W]."""
    return torch.einsum("hwd,cd->chw", features, text.to(features))


def view_relevancy(cosines: torch.Tensor) -> torch.Tensor:
    """Cosines [C, H, W] min-max normalised per class over the view's pixels -> [C, H, W] in [0, 1]."""
    return apply_ranges(cosines[None], minmax_ranges(cosines[None]))[0]


def label_pixels(cosines: torch.Tensor, rule: str) -> torch.Tensor:
    """Labels [H, W] (long) from cosines [C, H, W] under ``rule`` (``cosine`` or ``relevancy``)."""
    if rule == "relevancy":
        cosines = view_relevancy(cosines)
    elif rule != "cosine":
        raise ValueError(f"unknown label rule {rule!r}; choose from {LABEL_RULES}")
    return cosines.argmax(0)
