"""Model weights on the hub: is it reachable, what is cached, and what identifies a local weights file.

Offline rule: weights are looked up in the local hub cache first; a download is attempted only when
the hub answers within a few seconds. Otherwise ``WeightsUnavailableError`` names the model and the
``--extract.clip.weights`` / ``--extract.dino.weights`` option, immediately (no minute of silent retries).

Weights files are read safely, before any model is built (``read_weights_file``): a ``.safetensors``
file through safetensors, anything else through ``torch.load(weights_only=True)``, which unpickles
tensors and plain containers only and never runs code from the file. A TorchScript archive (OpenAI's
original CLIP ``.pt``) is refused, since loading one means running its code. Every failure (an HTML
page saved as ``.pt``, a pickle that would execute code, a truncated or garbage file, a file that holds
no tensors) is an ``InputError`` naming the file and the option.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from ovs3d.errors import InputError, excerpt


def weights_identity(path: Path | None) -> dict | None:
    """What identifies a local weights file in cache metadata: resolved path, size and mtime."""
    if path is None:
        return None
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def safetensors_error() -> type[Exception]:
    """safetensors' own error type (it derives from Exception, not OSError)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors
        from safetensors._safetensors_rust import SafetensorError
    return SafetensorError


STATE_DICT_WRAPPERS = ("state_dict", "state_dict_ema", "model_ema", "model")


def sniff(path: Path) -> str:
    """What a weights file looks like from its first bytes: 'zip' (torch.save), 'safetensors', 'html',
    'pickle' (legacy torch.save), 'empty' or 'unknown'."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100_000_000:
        return "safetensors"
    if head.lstrip()[:1] == b"<":
        return "html"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def weights_problem(path: Path, kind: str, exc: Exception | None) -> str:
    """The message of an unreadable weights file of kind ``kind`` (never torch's advice to load it unsafely)."""
    if kind == "html":
        return "the file is a web page (HTML), not model weights: probably a failed or redirected download"
    if kind == "empty":
        return "the file is empty"
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        return ("the file is not a plain PyTorch state dict: a safe load (torch.load weights_only=True) refuses "
                "its content (a damaged file, or Python objects other than tensors and plain containers, "
                "whose unpickling could run code)")
    if kind == "zip":
        return f"the PyTorch checkpoint is truncated or damaged ({excerpt(text.split('.')[0], 100)})"
    if kind == "pickle":
        return "the (legacy-format) PyTorch checkpoint is truncated or damaged, or holds no plain state dict"
    if kind == "safetensors" or path.suffix == ".safetensors":
        return f"the safetensors file is truncated or damaged ({excerpt(exc, 100)})"
    return "the file is not a weights file (neither safetensors nor torch.save output)"


def is_torchscript(path: Path) -> bool:
    """Whether a zip weights file is a TorchScript archive (it holds code/ and constants.pkl)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return any(n.split("/", 1)[-1] == "constants.pkl" or "/code/" in f"/{n}" for n in names)


def read_weights_file(path: str | Path, option: str, full: bool = False, fix: str | None = None) -> dict:
    """The state dict of a weights file, read safely (see the module docstring); InputError otherwise.

    ``full``: read every tensor (default: torch zip files are memory-mapped and safetensors files opened
    lazily, their entries being slices, so checking a file costs its header, not its size). The state
    dict is unwrapped from a ``state_dict`` / ``model`` entry (EMA first) as open_clip and timm do.
    ``fix``: the advice of the errors about the file's content (default: pass another file to ``option``)."""
    import warnings

    import torch

    path = Path(path)
    fix = fix or f"pass a safetensors file or a torch.save state dict of the model to {option}"
    if not path.is_file():
        raise InputError(path, "the weights file does not exist", f"pass an existing file to {option}, or omit it")
    SafetensorError = safetensors_error()
    errors = (pickle.UnpicklingError, SafetensorError, RuntimeError, EOFError, ValueError, OSError, KeyError,
              TypeError, AttributeError, IndexError, struct.error, zipfile.BadZipFile, OverflowError, MemoryError,
              AssertionError)  # torch's legacy-format reader checks a damaged file with assert
    try:
        kind = sniff(path)
    except OSError as exc:
        raise InputError(path, f"cannot read the weights file ({exc.strerror or exc})", "make it readable") from exc
    if path.suffix == ".safetensors" and kind not in ("safetensors", "html", "empty"):
        raise InputError(path, f"the file is named .safetensors but its content is not safetensors ({kind})",
                         f"rename it to its real type (a torch.save file: .pt), or {fix}")
    if kind == "safetensors" and path.suffix != ".safetensors":
        raise InputError(path, "the file is a safetensors file without the .safetensors suffix (loaders choose "
                         "the reader by the suffix)", "rename it to end in .safetensors")
    if kind == "zip" and is_torchscript(path):
        raise InputError(path, "the file is a TorchScript archive (the format of OpenAI's original CLIP .pt "
                         "files); ovs3d does not load TorchScript, because loading it runs code stored in the file",
                         f"pass a safetensors file or a torch.save state dict to {option} instead, e.g. the "
                         "hub's open_clip_model.safetensors of the same weights, or omit the option to use "
                         "the hub cache")
    try:
        if kind in ("html", "empty"):
            raise ValueError(kind)
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            if full:
                state = load_file(str(path))
            else:
                with safe_open(str(path), framework="pt") as handle:
                    state = {key: handle.get_slice(key) for key in handle.keys()}
                    for view in state.values():
                        view.get_shape()
        else:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the file is refused or read anyway
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip" and not full)
    except errors as exc:
        raise InputError(path, weights_problem(path, kind, exc), fix) from None
    if isinstance(state, dict):
        for wrapper in STATE_DICT_WRAPPERS:
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        what = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise InputError(path, f"the file holds {what}, not a state dict of tensors", fix)
    if path.suffix != ".safetensors":
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise InputError(path, f"the state dict has {len(bad)} entries that are not named tensors "
                             f"(e.g. {excerpt(repr(bad[0]), 60)})", fix)
    return state


def load_errors() -> tuple[type[Exception], ...]:
    """What a model library may raise while loading a state dict that read_weights_file accepted: the
    file's tensors do not fit the architecture (RuntimeError: missing keys, size mismatch), its keys are
    not the expected ones (KeyError, StopIteration on an empty dict), or the file changed meanwhile."""
    return (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration,
            pickle.UnpicklingError, safetensors_error(), EOFError, OSError, AssertionError)


def mismatch_error(path: str | Path, exc: Exception, model: str, model_option: str, weights_option: str) -> InputError:
    """The InputError of weights that do not load into ``model``: torch's message summarised, never cut
    mid-word (and never repeating torch's advice to load a file unsafely)."""
    if isinstance(exc, (pickle.UnpicklingError, safetensors_error(), EOFError, OSError, AssertionError)):
        detail = "the file could not be read; it may have changed since it was checked"
    else:
        detail = excerpt(exc, 300)
    return InputError(path, f"the weights do not load into {model} ({detail})",
                      f"pass weights made for {model_option} {model} to {weights_option}, or set {model_option} "
                      "to the architecture of these weights")


def check_weights_file(path: Path | None, option: str) -> None:
    """Fail before any work when a given weights file does not exist or cannot be read safely
    (``read_weights_file``: headers only, so this costs well under a second even for large files)."""
    if path is not None:
        read_weights_file(path, option)


def hub_reachable(url: str | None = None, timeout_s: float = 3.0) -> bool:
    """Whether the model hub (``HF_ENDPOINT`` or huggingface.co, or ``url``'s host) accepts a TCP
    connection within ``timeout_s``; False at once when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    target = urlparse(url or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def cached_hub_file(repo_id: str, filenames: list[str]) -> Path | None:
    """The first of ``filenames`` already in the local Hugging Face cache for ``repo_id``, else None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None
