"""sha256 of files and of the parts that identify a dataset, a job or an OOF: one implementation for all of them.

The digests are stored (a job's identity in preds.npz, the data fingerprint in an OOF's JSON, `fitted_on` in a
decision): each caller keeps its own recipe (which parts, which separator, how many hex digits), so a digest
written by an earlier kit is still the same value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks (hashlib.file_digest)."""
    with open(path, "rb") as f:
        return stream_sha256(f)


def bytes_sha256(data: bytes) -> str:
    """The sha256 of bytes already read (a submission is read once, and those bytes are checked, hashed and sent)."""
    return hashlib.sha256(data).hexdigest()


def stream_sha256(f: BinaryIO) -> str:
    """The sha256 of what an open binary file (or a zip member) holds from here on."""
    return hashlib.file_digest(f, "sha256").hexdigest()


def digest(*parts: Any, sep: bytes = b"\0", length: int = 64) -> str:
    """The first `length` hex digits of the sha256 of `parts`, each followed by `sep`. A part is bytes as given,
    text as UTF-8, an array of text by its items one per line, any other array by its dtype, shape and bytes,
    anything else by its JSON (keys sorted)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(_as_bytes(part))
        h.update(sep)
    return h.hexdigest()[:length]


def _as_bytes(part: Any) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, np.ndarray):
        if part.dtype.kind in "OUS":
            return "\n".join(map(str, part.tolist())).encode()
        return f"{part.dtype.str}{part.shape}".encode() + np.ascontiguousarray(part).tobytes()
    return json.dumps(part, sort_keys=True, default=str).encode()
