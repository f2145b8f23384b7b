"""open_clip backend of the image-text slot (paper: OpenAI CLIP ViT-B/16 = ``ViT-B-16`` + ``openai``).

Weights, in order: ``--extract.clip.weights`` (a local file: safetensors or a torch.save state dict; OpenAI's
original TorchScript ``.pt`` archives are refused, since loading one runs code, see ``features/hub.py``),
the local hub cache of the tag, a download when the hub answers; otherwise ``WeightsUnavailableError``
at once. The file is read safely (``hub.read_weights_file``) before the model is built. The tag's
settings (QuickGELU, mean/std) apply to a local file
too, so ``--extract.clip.weights ViT-B-16.pt`` with the default tag reproduces the paper's model.

Preprocessing on tensors (CLIP's, section 4 of the method spec): bicubic antialiased resize of the
short side to the model's input size, centre crop, then (x - mean) / std. A square crop is resized
whole, so CLIP sees exactly the crop.

Prompts: the model's tokenizer with its context length (77); a longer prompt is an InputError
instead of being silently truncated.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ovs3d.errors import InputError, WeightsUnavailableError
from ovs3d.features import precision
from ovs3d.features.calibrate import calibrated_batch_size
from ovs3d.features.encoders import ClipConfig
from ovs3d.features.hub import cached_hub_file, hub_reachable, load_errors, mismatch_error, read_weights_file

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# The command-line options named in the weights-file errors (registry.py names its own for the
# existence check; keep the two in step when the options are renamed).
MODEL_OPTION, WEIGHTS_OPTION = "--extract.clip.model", "--extract.clip.weights"


def import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError("the openclip encoder needs open_clip: `pip install open-clip-torch`, or use "
                          "--extract.clip.kind builtin (weight-free, not CLIP)") from exc
    return open_clip


def locate_tag_weights(model: str, tag: str, tag_cfg: dict) -> str:
    """A local file with the weights of ``model``/``tag``: from the hub cache, or downloaded when the hub
    is reachable; else WeightsUnavailableError naming the model and ``--extract.clip.weights``."""
    open_clip = import_open_clip()
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = hub.rstrip("/"), None
        if not hub.endswith("/"):
            repo, filename = hub.rsplit("/", 1)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = cached_hub_file(repo, names)
        if found is not None:
            return str(found)
    url = tag_cfg.get("url", "")
    if url:
        legacy = Path("~/.cache/clip").expanduser() / Path(url).name
        if legacy.is_file():
            return str(legacy)
    missing = WeightsUnavailableError(
        f"CLIP weights '{model}' / '{tag}' are not in the local cache and cannot be downloaded (no connection "
        f"to the model hub). Fix: download them once on a connected machine, or pass a local weights file "
        f"with --extract.clip.weights PATH (or use --extract.clip.kind builtin, weight-free and not CLIP)")
    if not hub_reachable(None if hub else url):
        raise missing
    try:
        return open_clip.download_pretrained(tag_cfg)
    except Exception as exc:  # network errors come in many types
        raise missing from exc


class OpenClipEncoder:
    """CLIP through open_clip: ``encode_images`` [B, 3, H, W] in [0, 1] -> [B, D], ``encode_texts`` -> [C, D]."""

    def __init__(self, config: ClipConfig, device: torch.device):
        open_clip = import_open_clip()
        if config.model not in open_clip.list_models():
            raise InputError(None, f"unknown open_clip model '{config.model}'",
                             "pass one of open_clip.list_models() to --extract.clip.model, e.g. ViT-B-16")
        tag_cfg = open_clip.get_pretrained_cfg(config.model, config.pretrained) if config.pretrained else {}
        if config.weights is not None:
            checkpoint = str(config.weights)
            source = Path(config.weights).name
        elif tag_cfg:
            checkpoint = locate_tag_weights(config.model, config.pretrained, tag_cfg)
            source = config.pretrained
        else:
            tags = open_clip.list_pretrained_tags_by_model(config.model)
            raise InputError(None, f"'{config.pretrained}' is not a weights tag of {config.model}",
                             f"pass one of {tags} to --extract.clip.pretrained, or a file to --extract.clip.weights")
        hub_fix = None if config.weights is not None else (
            f"delete this cached file so that it is downloaded again, or pass a local file to {WEIGHTS_OPTION}")
        read_weights_file(checkpoint, WEIGHTS_OPTION, fix=hub_fix)
        try:
            model = open_clip.create_model(config.model, pretrained=checkpoint, weights_only=True,
                                           force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        except load_errors() as exc:
            raise mismatch_error(checkpoint, exc, config.model, MODEL_OPTION, WEIGHTS_OPTION) from exc
        self.device = torch.device(device)
        self.precision = precision.resolve(config.precision, self.device)
        self.model = precision.prepare(model, self.precision, self.device, fast_part="visual")
        # A GPU wants large batches; on a CPU the fastest is calibrated on first use (``batch_size``).
        self._batch_size = None if self.device.type == "cpu" else 256
        self.tokenizer = open_clip.get_tokenizer(config.model)
        image_size = model.visual.image_size
        self.input_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
        mean, std = tag_cfg.get("mean", OPENAI_MEAN), tag_cfg.get("std", OPENAI_STD)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.context_length = int(getattr(model, "context_length", 77))
        self.name = f"openclip {config.model} ({source})"
        self.embedding_dim = int(self.encode_texts(["a"]).shape[-1])

    @property
    def batch_size(self) -> int:
        """Crops per forward pass: 256 on a GPU; on a CPU calibrated on first use (features/calibrate.py)."""
        if self._batch_size is None:
            s = self.input_size
            self._batch_size = calibrated_batch_size(
                self.name, self.precision, lambda b: self.encode_images(torch.rand(b, 3, s, s, device=self.device)))
        return self._batch_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, S, S] normalised: short side to S (bicubic), centre crop."""
        images = images.to(self.device, torch.float32)
        h, w = images.shape[-2:]
        s = self.input_size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            size = (max(s, round(h * scale)), max(s, round(w * scale)))
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            top, left = (size[0] - s) // 2, (size[1] - s) // 2
            images = images[..., top:top + s, left:left + s]
        return (images - self.mean) / self.std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, D] float32 projected image embeddings (not normalised)."""
        x = self.preprocess(images).to(precision.input_dtype(self.precision))
        with precision.autocast(self.precision, self.device):
            return self.model.encode_image(x).float()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """[C, context] token ids; a prompt longer than the context is an InputError."""
        if hasattr(self.tokenizer, "encode"):
            for text in texts:
                n = len(self.tokenizer.encode(text)) + 2  # + start and end tokens
                if n > self.context_length:
                    raise InputError(None, f"the prompt '{text}' has {n} tokens, more than CLIP's context of "
                                     f"{self.context_length}", "shorten the prompt in the class list")
        return self.tokenizer(texts).to(self.device)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """C prompts (verbatim) -> [C, D] float32 text embeddings (not normalised)."""
        return self.model.encode_text(self.tokenize(texts)).float()   # fp32 (precision.prepare)
