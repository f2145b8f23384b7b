"""Reading ``torch.save`` files from elsewhere (the authors' ``.th`` checkpoints) without running their code.

A pickle can name any Python callable and have the loader call it (``os.system`` through ``__reduce__``),
so a checkpoint is data only if the loader refuses every callable but a few. ``read_torch_checkpoint``
accepts exactly: tensors (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` over typed
storages), ``collections.OrderedDict``, numeric numpy arrays (``numpy[._core|.core].multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype`` and ``_codecs.encode`` for their bytes, as ``np.packbits`` masks pickle),
and plain values (dict, list, tuple, str, bytes, int, float, bool, None). Three checks, each of which
refuses with an ``InputError`` naming what it found:

1. before anything is unpickled, every global the pickle names (``GLOBAL``/``STACK_GLOBAL`` opcodes,
   read with ``pickletools``, which executes nothing) must be on that list;
2. the file is then read by ``torch.load(weights_only=True)`` (torch's own restricted unpickler, which
   interprets the opcodes itself and calls only allow-listed globals), with the numpy names above
   added for the duration of the call;
3. the loaded tree may hold only the types above (numpy arrays of booleans or numbers, no object arrays).

``torch.load(weights_only=True)`` alone refuses the authors' files (numpy's ``_reconstruct`` is not on
its list), and its own list is wider than ours (``torch.device``, ``set``, ``Counter``, ...).
"""

from __future__ import annotations

import _codecs
import io
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovs3d.errors import InputError, excerpt

try:
    from numpy._core import multiarray as _multiarray   # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

ALLOWED_KINDS = ("only tensors, storages, numpy arrays and plain containers are read: unpickling anything else "
                 "could run code")
FIX = "use a checkpoint written by torch.save of tensors and plain containers (the authors' train.py / train_seg.py)"
STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
ALLOWED_GLOBALS = frozenset(
    {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
     "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
     "_codecs.encode"} | {f"torch.{kind}Storage" for kind in STORAGES})
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_NUMERIC_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                   np.float16, np.float32, np.float64)
_LEGACY_PICKLES = 5   # legacy torch.save: magic number, protocol, sys info, the object, storage keys


def pickle_globals(data: bytes | io.BufferedIOBase, count: int = 1) -> list[str]:
    """``module.name`` of every global referenced by the first ``count`` pickles of ``data`` (nothing is
    executed). A ``STACK_GLOBAL`` whose two names are not the two strings pushed just before it (names
    computed at load time) is reported as ``<computed name>``."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    found: list[str] = []
    for _ in range(count):
        recent: list[str | None] = []         # the values pushed lately: a string, or None for anything else
        memo: dict[int, str | None] = {}
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name == "GLOBAL" or name == "INST":
                found.append(".".join(str(arg).split(" ", 1)))
            elif name == "STACK_GLOBAL":
                pair = recent[-2:]
                found.append(f"{pair[0]}.{pair[1]}" if len(pair) == 2 and None not in pair else "<computed name>")
            if name in _STRING_OPS:
                recent.append(str(arg))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = recent[-1] if recent else None
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(int(arg)))
            elif name not in ("FRAME", "PROTO"):
                recent.append(None)
        if stream.read(1) == b"":
            break
        stream.seek(-1, io.SEEK_CUR)
    return found


def _main_pickle(path: Path) -> tuple[bytes, int]:
    """(bytes to scan, number of pickles in them) of a torch.save file (zip or legacy) or a bare pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(names) != 1:
                raise InputError(path, "the zip file is not a torch checkpoint (it holds no single data.pkl)", FIX)
            return archive.read(names[0]), 1
    return path.read_bytes(), _LEGACY_PICKLES


def _numpy_globals() -> list:
    """The numpy callables of a pickled ndarray, under their numpy-2 and numpy-1 names, for torch's list."""
    dtypes = [type(np.dtype(t)) for t in _NUMERIC_DTYPES]
    aliases = [(_multiarray._reconstruct, f"numpy.{core}.multiarray._reconstruct") for core in ("core", "_core")]
    return [_multiarray._reconstruct, *aliases, np.ndarray, np.dtype, _codecs.encode, *dtypes]


def check_tree(value: Any, path: Path, where: str = "<root>", depth: int = 0) -> None:
    """InputError naming the first value (and its place) that is not a tensor, a numeric numpy array or a
    plain container/value."""
    if depth > 64:
        raise InputError(path, f"the checkpoint nests containers more than 64 deep at {where}", FIX)
    if isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise InputError(path, f"the checkpoint has a key of type {type(key).__name__} at {where} "
                                 f"({ALLOWED_KINDS})", FIX)
            check_tree(item, path, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_tree(item, path, f"{where}[{i}]", depth + 1)
    elif isinstance(value, np.ndarray):
        if type(value) is not np.ndarray or value.dtype.kind not in "biuf" or value.dtype.fields is not None:
            raise InputError(path, f"the checkpoint holds a numpy {type(value).__name__} of dtype {value.dtype} at "
                             f"{where} ({ALLOWED_KINDS}: numpy arrays of booleans or numbers)", FIX)
    elif isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise InputError(path, f"the checkpoint holds a tensor subclass {type(value).__name__} at {where} "
                             f"({ALLOWED_KINDS})", FIX)
    elif value is not None and type(value) not in (str, bytes, int, float, bool):
        raise InputError(path, f"the checkpoint holds a {type(value).__module__}.{type(value).__qualname__} at "
                         f"{where} ({ALLOWED_KINDS})", FIX)


def read_torch_checkpoint(path: str | Path) -> Any:
    """The contents of a ``torch.save`` file, on the CPU, read as data only (see the module docstring);
    InputError for a missing or unreadable file and for anything but tensors, storages, numeric numpy
    arrays and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the checkpoint file does not exist (or is not a file)", "pass the path of a .th/.pth file")
    try:
        data, count = _main_pickle(path)
        names = pickle_globals(data, count)
    except (ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, IndexError, KeyError) as exc:
        raise InputError(path, f"not a readable torch checkpoint ({type(exc).__name__}: {excerpt(exc, 120)})", FIX) from None
    refused = sorted({n for n in names if n not in ALLOWED_GLOBALS})
    if refused:
        raise InputError(path, f"the checkpoint pickles {', '.join(refused)}: refused ({ALLOWED_KINDS})", FIX)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            value = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError, AttributeError, EOFError, KeyError) as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global|got <class '([^']+)'>", str(exc))
        what = f"it pickles {found.group(1) or found.group(2)}" if found else \
            f"{type(exc).__name__}: {excerpt(str(exc).split('WeightsUnpickler error:')[-1], 160)}"
        raise InputError(path, f"the checkpoint cannot be read as data only ({what}; {ALLOWED_KINDS})", FIX) from None
    check_tree(value, path)
    return value
