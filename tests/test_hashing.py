"""kit.hashing: one implementation for the file hashes and the four stored fingerprints, each still the value an
earlier kit wrote (a job's identity, a data fingerprint, an OOF's `fitted_on`, a pseudo-label source): the
recipes below are the former hand-written loops, kept here as the reference."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np

from kit.artifacts import OOF, oof_fingerprint
from kit.data.common import fingerprint
from kit.hashing import file_sha256, stream_sha256
from kit.training.identity import _digest


def _oof() -> OOF:
    rng = np.random.default_rng(0)
    return OOF(np.array(["a", "b", "c"]), np.array([f"id{i:02d}" for i in range(12)]), np.arange(12) % 3, rng.normal(size=(12, 3)).astype(np.float32),
               np.array(["t0", "t1"]), rng.normal(size=(3, 2, 3)).astype(np.float32), np.array([0.5, 0.3, 0.2]))


def _former_oof_fingerprint(oof: OOF) -> str:
    h = hashlib.sha256()
    for arr in (np.asarray(oof.ids, dtype=str), np.asarray(oof.fold, dtype=np.int64), np.asarray(oof.logits, dtype=np.float32),
                np.asarray(oof.train_prior, dtype=np.float64)):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:32]


def _former_digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            if part.dtype.kind in "OUS":
                part = "\n".join(map(str, part.tolist()))
            else:
                h.update(f"{part.dtype.str}{part.shape}".encode())
                part = np.ascontiguousarray(part).tobytes()
        elif not isinstance(part, (str, bytes)):
            part = json.dumps(part, sort_keys=True, default=str)
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _former_fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _former_pseudo(oof: OOF) -> str:
    h = hashlib.sha256()
    for arr in (oof.classes, oof.ids, oof.fold, oof.test_ids, oof.test_logits):
        arr = np.asarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update("\n".join(arr.tolist()).encode() if arr.dtype.kind == "U" else np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def test_stored_fingerprints_keep_their_values():
    oof = _oof()
    assert oof_fingerprint(oof) == _former_oof_fingerprint(oof)
    parts = (["a", "b"], np.array(["x", "y"]), np.arange(6, dtype=np.uint8).reshape(2, 3), "text", b"raw", {"k": 1, "a": [2]})
    assert _digest(*parts) == _former_digest(*parts)
    assert fingerprint("kaggle", "train", b"\x00\x01csv", "a\tb") == _former_fingerprint("kaggle", "train", b"\x00\x01csv", "a\tb")
    assert fingerprint("ab", "c") != fingerprint("a", "bc")


def test_pseudo_label_source_fingerprint_keeps_its_value():
    from kit.training.pseudo import source_fingerprint

    oof = _oof()
    assert source_fingerprint(oof) == _former_pseudo(oof)
    assert source_fingerprint(oof) != source_fingerprint(OOF(**{**oof.__dict__, "test_logits": oof.test_logits + 1}))


def test_file_and_zip_member_hashes(tmp_path):
    data = bytes(range(256)) * 5000
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("member.csv", data)
    with zipfile.ZipFile(buffer) as zf, zf.open("member.csv") as member:
        assert stream_sha256(member) == hashlib.sha256(data).hexdigest()
