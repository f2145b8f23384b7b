"""Model weights on the hub: is it reachable, what is cached, and what identifies a local weights file.

Offline rule: weights are looked up in the local hub cache first; a download is attempted only when
the hub answers within a few seconds. Otherwise ``WeightsUnavailableError`` names the model and the
``--clip.weights`` / ``--dino.weights`` option, immediately (no minute of silent retries).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ovs3d.errors import InputError


def weights_identity(path: Path | None) -> dict | None:
    """What identifies a local weights file in cache metadata: resolved path, size and mtime."""
    if path is None:
        return None
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def check_weights_file(path: Path | None, option: str) -> None:
    """Fail before any work when a given weights file does not exist."""
    if path is not None and not Path(path).is_file():
        raise InputError(path, "the weights file does not exist", f"pass an existing file to {option}, or omit it")


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
