"""Weight-free encoders for the offline pipeline: colour words instead of CLIP, a colour kernel
instead of DINO. Every output made with them carries their ``name`` ("... (not CLIP)").

Joint space of the colour-word encoder: D = K = 13 colour prototypes (red, orange, yellow, green,
cyan, blue, purple, pink, brown, beige, white, grey, black), each an sRGB colour.

- image: each pixel's CIELAB colour x gets a soft assignment over the prototypes,
  w_k(x) = softmax_k(-|phi(x) - phi(c_k)|^2 / (2 sigma^2)) with phi(L, a, b) = (l_w L, 50 a / (L + k),
  50 b / (L + k)): chroma relative to lightness, so a shadowed surface keeps its colour name (a dark
  red stays red instead of turning brown); the crop's embedding is the mean of w over its pixels: a
  colour histogram, sum 1.
- text: each known word maps to a distribution over the same prototypes (a colour word to its
  prototype, a material word to its typical colours: "wooden" -> brown, beige, orange; "stone" ->
  grey); the prompt's embedding is the sum over its known words, colour words counting twice.
  Other words ("ball", "box") carry no colour and are ignored.

So cos(image, "red ball") is the red share of the crop's histogram relative to its spread, which
ranks crops the way CLIP ranks them for such prompts, and ranks nothing for a prompt without a known
word: ``encode_texts`` warns and gives a uniform vector for those (``unknown_prompts`` lists them).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from ovs3d.errors import InputError

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10), "orange": (0.95, 0.50, 0.10), "yellow": (0.92, 0.82, 0.15),
    "green": (0.15, 0.60, 0.20), "cyan": (0.10, 0.75, 0.80), "blue": (0.15, 0.30, 0.85),
    "purple": (0.52, 0.20, 0.68), "pink": (0.95, 0.55, 0.70), "brown": (0.55, 0.36, 0.20),
    "beige": (0.85, 0.76, 0.58), "white": (0.95, 0.95, 0.95), "grey": (0.52, 0.52, 0.54),
    "black": (0.06, 0.06, 0.06),
}
PROTOTYPES = list(COLORS)

COLOR_SYNONYMS: dict[str, str] = {
    "gray": "grey", "violet": "purple", "magenta": "pink", "teal": "cyan", "turquoise": "cyan",
    "tan": "beige", "cream": "beige", "silver": "grey", "crimson": "red", "scarlet": "red",
    "navy": "blue", "golden": "yellow", "gold": "yellow", "lime": "green", "olive": "green",
}

MATERIALS: dict[str, dict[str, float]] = {
    "wood": {"brown": 0.6, "beige": 0.2, "orange": 0.2}, "wooden": {"brown": 0.6, "beige": 0.2, "orange": 0.2},
    "stone": {"grey": 0.8, "beige": 0.1, "white": 0.1}, "rock": {"grey": 0.8, "brown": 0.2},
    "concrete": {"grey": 0.9, "white": 0.1}, "marble": {"white": 0.7, "grey": 0.3},
    "metal": {"grey": 0.7, "white": 0.3}, "metallic": {"grey": 0.7, "white": 0.3},
    "steel": {"grey": 0.8, "white": 0.2}, "iron": {"grey": 0.6, "black": 0.4},
    "brick": {"red": 0.5, "brown": 0.3, "orange": 0.2}, "sand": {"beige": 0.8, "yellow": 0.2},
    "grass": {"green": 1.0}, "leaf": {"green": 1.0}, "leaves": {"green": 1.0}, "plant": {"green": 1.0},
    "fern": {"green": 1.0}, "tree": {"green": 0.7, "brown": 0.3}, "moss": {"green": 1.0},
    "sky": {"blue": 0.5, "cyan": 0.2, "white": 0.3}, "water": {"blue": 0.6, "cyan": 0.4},
    "snow": {"white": 1.0}, "paper": {"white": 0.8, "beige": 0.2}, "cloud": {"white": 0.7, "grey": 0.3},
    "soil": {"brown": 0.8, "black": 0.2}, "dirt": {"brown": 0.8, "black": 0.2}, "mud": {"brown": 1.0},
    "coal": {"black": 1.0}, "shadow": {"black": 0.6, "grey": 0.4},
}

LIGHTNESS_WEIGHT, LIGHTNESS_OFFSET = 0.3, 20.0
"""phi's l_w and k (``shading_invariant``), shared by the colour words and the colour kernel."""

COLOR_WORD_WEIGHT = 2.0
"""A colour word counts twice a material word: 'brown wooden floor' is mostly brown."""


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W]-style channel-first sRGB in [0, 1] -> CIELAB (D65) on the same layout.

    Only the channel dimension (-3) is transformed; L in [0, 100], a and b roughly in [-128, 127]."""
    rgb = rgb.clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, torch.exp(2.4 * torch.log((rgb + 0.055) / 1.055)))
    matrix = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                           [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    t = xyz / white
    eps = (6 / 29) ** 3
    f = torch.where(t > eps, torch.exp(torch.log(t.clamp_min(eps)) / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def shading_invariant(lab: torch.Tensor, lightness_weight: float, offset: float) -> torch.Tensor:
    """[..., 3, H, W] CIELAB -> (l_w L, 50 a / (L + k), 50 b / (L + k)) on the same layout.

    Shading scales a surface's L and its chroma (a, b) roughly together, so dividing a and b by the
    lightness (plus ``offset`` k, which keeps dark pixels stable) makes a shadowed red stay red rather
    than turn brown; L itself, down-weighted, still separates white, grey and black."""
    light, a, b = lab.unbind(-3)
    scale = 50.0 / (light + offset)
    return torch.stack([lightness_weight * light, a * scale, b * scale], dim=-3)


class SoftColorAssignment:
    """Per-pixel soft assignment to the colour prototypes: [B, 3, H, W] RGB -> [B, K, H, W], sum 1 over K.

    w_k(x) = softmax_k(-|phi(x) - phi(c_k)|^2 / (2 sigma^2)), phi = ``shading_invariant`` of CIELAB."""

    def __init__(self, device: torch.device, sigma: float = 14.0, lightness_weight: float = LIGHTNESS_WEIGHT,
                 offset: float = LIGHTNESS_OFFSET):
        protos = torch.tensor([COLORS[name] for name in PROTOTYPES], dtype=torch.float32, device=device)
        self.phi = lambda lab: shading_invariant(lab, lightness_weight, offset)
        self.centres = self.phi(srgb_to_lab(protos.T.reshape(3, len(PROTOTYPES), 1))).reshape(3, -1).T  # [K, 3]
        self.sigma = sigma

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = self.phi(srgb_to_lab(images.float()))  # [B, 3, H, W]
        # |x - c_k|^2 = |x|^2 - 2 <x, c_k> + |c_k|^2; |x|^2 is constant over k and cancels in the softmax.
        logits = torch.einsum("kc,bchw->bkhw", self.centres, x) - 0.5 * (self.centres**2).sum(1).view(1, -1, 1, 1)
        return torch.softmax(logits / self.sigma**2, dim=1)


def prompt_colors(text: str) -> torch.Tensor | None:
    """[K] colour distribution of a prompt from its known words (unnormalised), or None if it has none."""
    vec = torch.zeros(len(PROTOTYPES))
    known = False
    for raw in text.lower().replace("-", " ").replace(",", " ").split():
        word = COLOR_SYNONYMS.get(raw, raw)
        if word in COLORS:
            vec[PROTOTYPES.index(word)] += COLOR_WORD_WEIGHT
            known = True
        elif word in MATERIALS:
            for color, share in MATERIALS[word].items():
                vec[PROTOTYPES.index(color)] += share
            known = True
    return vec if known else None


class ColorWordEncoder:
    """Image-text encoder over colour and material words (weight-free; NOT CLIP). See the module doc."""

    name = "builtin-color-words (not CLIP)"
    version = 2
    precision = "fp32"
    embedding_dim = len(PROTOTYPES)
    input_size = 16
    batch_size = 1024

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.assign = SoftColorAssignment(self.device)
        self.unknown_prompts: list[str] = []

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, K] mean soft colour assignment (a histogram, sum 1)."""
        return self.assign(images.to(self.device)).mean(dim=(2, 3))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """C prompts -> [C, K] colour distributions; a prompt with no known word gets a uniform vector,
        is listed in ``unknown_prompts`` and raises a warning (its relevancy means nothing)."""
        rows = []
        self.unknown_prompts = []
        for text in texts:
            vec = prompt_colors(text)
            if vec is None:
                self.unknown_prompts.append(text)
                vec = torch.ones(len(PROTOTYPES))
            rows.append(vec / vec.sum())
        if self.unknown_prompts:
            warnings.warn(f"{self.name}: no known colour or material word in {self.unknown_prompts}; their "
                          f"relevancy is meaningless. Known words: {sorted(COLORS) + sorted(COLOR_SYNONYMS)} "
                          f"and materials {sorted(MATERIALS)}. Use a CLIP encoder for other prompts.", stacklevel=2)
        return torch.stack(rows).to(self.device)


class ColorKernelExtractor:
    """Dense colour features at stride 8 whose cosine is a Gaussian kernel of colour distance, each token
    describing its block's centre (weight-free; NOT DINO).

    Per pixel, x = phi(CIELAB) (``shading_invariant``, lightness weight 0.3 as ``ColorWordEncoder``) is
    embedded by D random Fourier features z(x) = sqrt(2 / D) cos(W x + b), W ~ N(0, I / s^2) and
    b ~ U[0, 2 pi) drawn once from a fixed seed, so that <z(x), z(y)> ~= exp(-|x - y|^2 / (2 s^2)) (error
    about 1 / sqrt(D)). The bandwidth s = d0 / sqrt(2 ln(1 / 0.7)) puts the kernel's 0.7 (FDA's
    dino_shift) at the colour distance d0 = ``match_distance``: two tokens are pulled together when their
    colours are closer than d0 and pushed apart otherwise. Token (k, l) is the mean of z over the 2x2
    pixels at its block's centre (8k + 4, 8l + 4), the point FDA renders for it. Output [B, D, H / 8, W / 8].

    Why not the colour-word prototypes' histograms (versions up to 2, block means): their 13 named
    prototypes are too coarse to separate surfaces (a shaded yellow cone and a brown floor share the
    yellow/brown/orange bins), and a block mean mixes the surfaces a small object's edge straddles; with
    either, FDA lowered the demo seeds' 3D mIoU, with this kernel it raises it (``bench.fda``)."""

    name = "builtin-color-kernel (not DINO)"
    version = 4
    precision = "fp32"
    stride = 8
    feature_dim = 256
    match_distance = 6.0
    seed = 0

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.phi = lambda lab: shading_invariant(lab, LIGHTNESS_WEIGHT, LIGHTNESS_OFFSET)
        bandwidth = self.match_distance / math.sqrt(2.0 * math.log(1.0 / 0.7))
        gen = torch.Generator().manual_seed(self.seed)
        self.frequencies = (torch.randn(self.feature_dim, 3, generator=gen) / bandwidth).to(self.device)
        self.phases = (2 * math.pi * torch.rand(self.feature_dim, generator=gen)).to(self.device)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] (H, W multiples of 8) -> [B, D, H / 8, W / 8]."""
        b, _, h, w = images.shape
        if h % self.stride or w % self.stride:
            raise InputError(None, f"image size {w}x{h} is not a multiple of {self.stride}",
                             f"resize or crop the images to multiples of {self.stride}")
        x = self.phi(srgb_to_lab(images.to(self.device).float()))  # [B, 3, H, W]
        z = torch.cos(torch.einsum("kc,bchw->bkhw", self.frequencies, x) + self.phases.view(1, -1, 1, 1))
        first = self.stride // 2 - 1
        return math.sqrt(2.0 / self.feature_dim) * F.avg_pool2d(z[..., first:, first:], 2, stride=self.stride)

