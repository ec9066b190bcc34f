"""A second round of training on the test images, soft-labelled without a leak.

Fold k of a second round (`pseudo_label_from = "<first>"`) adds the test images soft-labelled by the
first round's fold-k model only: `test_logits[k]` of `oof/<first>.npz`. That model never saw fold k's
rows, so fold k's held-out logits stay out-of-fold and the nested-CV score stays honest; the other
folds' test logits are never read by fold k. Soft labels are softmax(logits / T) (multi-label: a sigmoid
per class); a test image less confident than `pseudo_label_min_confidence` is left out (multi-class: its
top probability; multi-label: its least certain label's max(p, 1 − p)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax

from kit.artifacts import load_oof
from kit.config import CompetitionConfig, ModelConfig, model_file
from kit.data.common import DataSource
from kit.errors import KitError
from kit.hashing import digest
from kit.paths import oof_meta_json, oof_npz
from kit.records import OofMeta


@dataclass(frozen=True)
class PseudoLabelSource:
    """The first round a second round learns from: its per-fold test logits and their fingerprint."""

    variant: str
    path: Path
    round: int  # the source's own round (1: a variant trained on labels only)
    fingerprint: str  # of the source's ids, folds, classes, test ids and test logits
    test_logits: np.ndarray  # (K, n_test, C)

    def provenance(self) -> dict:
        """What the second round's OOF JSON records."""
        return {"round": self.round + 1, "source": self.variant, "source_fingerprint": self.fingerprint, "source_file": str(self.path)}


def pseudo_label_source(cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray) -> PseudoLabelSource:
    """Read `oof/<pseudo_label_from>.npz` and check it was made on these folds, classes and test ids."""
    name = mcfg.pseudo_label_from
    path = oof_npz(cfg, name)
    where = f"{model_file(mcfg)}: key 'pseudo_label_from' = \"{name}\""
    if not path.is_file():
        raise KitError(f"{where}: {path} does not exist; train the first round first (`kit train --variant {name}`)")
    oof = load_oof(path)
    retrain = f"retrain the first round (`kit train --variant {name}`) on the current data and folds"
    if oof.classes.tolist() != list(source.classes):
        raise KitError(f"{where}: {path} has other classes than the data source; {retrain}")
    if oof.test_ids.tolist() != np.asarray(source.test.ids, dtype=str).tolist():
        raise KitError(f"{where}: {path} has other test ids than the data source; {retrain}")
    if oof.ids.tolist() != np.asarray(source.train.ids, dtype=str).tolist() or not np.array_equal(oof.fold, fold_of):
        raise KitError(f"{where}: {path} was made on other folds than {cfg.folds.path}: its fold-k model may have seen fold k; {retrain}")
    if len(oof.test_logits) != cfg.folds.n_folds:
        raise KitError(f"{where}: {path} has test logits of {len(oof.test_logits)} folds, not {cfg.folds.n_folds}; {retrain}")
    meta = OofMeta.read_if_exists(oof_meta_json(path))
    round_ = int(((meta.pseudo_labels if meta is not None else None) or {}).get("round", 1))
    return PseudoLabelSource(name, path, round_, source_fingerprint(oof), oof.test_logits)


def source_fingerprint(oof) -> str:
    """Of the first round's ids, folds, classes, test ids and test logits: what a second round learnt from."""
    arrays = [np.asarray(a) for a in (oof.classes, oof.ids, oof.fold, oof.test_ids, oof.test_logits)]
    # text arrays with their dtype and shape in front (digest adds them to numeric arrays only)
    parts = [p for a in arrays for p in ((f"{a.dtype.str}{a.shape}", a) if a.dtype.kind == "U" else (a,))]
    return digest(*parts, sep=b"", length=16)


def soft_labels(fold_test_logits: np.ndarray, mcfg: ModelConfig, task: str, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(test rows kept, their float32 soft targets) from one fold's test logits; `usable`: readable test images."""
    z = np.asarray(fold_test_logits, dtype=np.float64) / mcfg.pseudo_label_temperature
    if task == "multi-label":
        probs = expit(z)
        confidence = np.maximum(probs, 1 - probs).min(axis=1)
    else:
        probs = softmax(z, axis=1)
        confidence = probs.max(axis=1)
    keep = np.flatnonzero(usable & np.isfinite(confidence) & (confidence >= mcfg.pseudo_label_min_confidence))
    return keep, probs[keep].astype(np.float32)


class StackedImages:
    """The train cache's rows, then the test cache's rows, indexed as one array (what a second round trains on)."""

    def __init__(self, train: np.ndarray, test: np.ndarray):
        self.train, self.test, self.offset = train, test, len(train)

    def __len__(self) -> int:
        return self.offset + len(self.test)

    def __getitem__(self, index):
        index = np.asarray(index)
        if index.ndim == 0:
            return self.train[index] if index < self.offset else self.test[index - self.offset]
        out = np.empty((len(index), *self.train.shape[1:]), dtype=self.train.dtype)
        in_train = index < self.offset
        out[in_train] = self.train[index[in_train]]
        out[~in_train] = self.test[index[~in_train] - self.offset]
        return out
