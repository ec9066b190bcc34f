"""The OOF file contract (docs/files.md): `oof/<variant>.npz` + `oof/<variant>.json` (names: kit.paths; the JSON: kit.records.OofMeta).

Every stage after training reads only these files, so they are checked here once: shapes,
finite logits, ids matching folds.csv, class lists agreeing between files and with the competition,
logits rather than probabilities, the JSON beside it. A truncated or foreign file, a hand-made one
from an external model that breaks the contract, or a folds.csv with a fold that is not an integer,
fails here with one line naming it and saying what to write instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.config import relative_to_what
from kit.errors import KitError
from kit.files import atomic_write, read_csv, read_npz
from kit.hashing import digest
from kit.paths import oof_meta_json
from kit.records import OofMeta

_ARRAY_KINDS = {
    "classes": "U", "ids": "U", "fold": "iu", "logits": "f", "test_ids": "U", "test_logits": "f", "train_prior": "f",
}
# What each array must be, in the words of the refusals (an OOF written by hand from your own model).
ARRAY_CONTRACT = {
    "classes": "(C,) str", "ids": "(n,) str", "fold": "(n,) int", "logits": "(n, C) float32", "test_ids": "(m,) str",
    "test_logits": "(K, m, C) float32, one slice per fold model", "train_prior": "(C,) float, the class distribution the model was trained under",
}
OWN_MODEL_DOC = "docs/files.md, 'An OOF from your own model'"
TRAIN_PRIOR_MEANING = (
    "the class distribution the model was trained under: the training set's class frequencies for a plain model, the sampler's "
    "distribution for a re-weighting sampler, uniform for balanced softmax or logit adjustment (the decision layer's prior "
    "correction moves the logits from it to the test prior)"
)


@dataclass(frozen=True)
class OOF:
    """One variant's out-of-fold and test logits."""

    classes: np.ndarray  # (C,) str
    ids: np.ndarray  # (n,) str
    fold: np.ndarray  # (n,) int
    logits: np.ndarray  # (n, C) float32, each row from the fold model that never saw it
    test_ids: np.ndarray  # (m,) str
    test_logits: np.ndarray  # (K, m, C) float32, one slice per fold model
    train_prior: np.ndarray  # (C,) class distribution the model was trained under

    @property
    def n_folds(self) -> int:
        return int(self.test_logits.shape[0])

    def validate(self, source: str | Path) -> OOF:
        """Raise KitError naming `source` when a field breaks the contract."""
        n, c = len(self.ids), len(self.classes)
        checks = [
            (self.logits.shape == (n, c), f"logits has shape {self.logits.shape}, expected ({n}, {c})"),
            (self.fold.shape == (n,), f"fold has shape {self.fold.shape}, expected ({n},)"),
            (
                self.test_logits.ndim == 3 and self.test_logits.shape[1:] == (len(self.test_ids), c),
                f"test_logits has shape {self.test_logits.shape}, expected (K, {len(self.test_ids)}, {c}): one (test ids × classes) slice per fold model",
            ),
            (self.train_prior.shape == (c,), f"train_prior has shape {self.train_prior.shape}, expected ({c},): one value per class"),
            (self.classes.shape == (c,) and c >= 2, f"classes has shape {self.classes.shape}, expected (C,) with C >= 2 class names"),
            (len(set(self.ids.tolist())) == n, "ids contains duplicates"),
        ]
        for ok, message in checks:
            if not ok:
                raise KitError(f"{source}: {message}")
        for name, arr in (("logits", self.logits), ("test_logits", self.test_logits), ("train_prior", self.train_prior)):
            bad = ~np.isfinite(arr)
            if bad.any():
                where = np.argwhere(bad)[0]
                raise KitError(
                    f"{source}: {name} has {int(bad.sum())} NaN or infinite values (first at index {tuple(int(i) for i in where)}); "
                    "retrain that variant or fold (your own model: store finite values, e.g. log-probabilities clipped away from log 0)"
                )
        if (self.train_prior <= 0).any():
            raise KitError(f"{source}: train_prior must be positive for every class; it is {TRAIN_PRIOR_MEANING}")
        return self


def save_oof(path: str | Path, oof: OOF, meta: OofMeta | dict[str, Any] | None = None) -> None:
    """Write the npz (and the JSON beside it when `meta` is given), each atomically."""
    path = Path(path)
    oof.validate(path)
    arrays = {
        "classes": np.asarray(oof.classes, dtype=str),
        "ids": np.asarray(oof.ids, dtype=str),
        "fold": np.asarray(oof.fold, dtype=np.int64),
        "logits": np.asarray(oof.logits, dtype=np.float32),
        "test_ids": np.asarray(oof.test_ids, dtype=str),
        "test_logits": np.asarray(oof.test_logits, dtype=np.float32),
        "train_prior": np.asarray(oof.train_prior, dtype=np.float64),
    }
    atomic_write(path, lambda f: np.savez(f, **arrays))
    if meta is not None:
        meta_path = oof_meta_json(path)
        (meta if isinstance(meta, OofMeta) else OofMeta.parse(meta, meta_path)).write(meta_path)


def load_oof(path: str | Path) -> OOF:
    """Read and check an OOF file; KitError naming it when it is missing, truncated or not an OOF file."""
    path = Path(path)
    remedy = f"a variant of `kit train`: run `kit train --variant {path.stem}` to write it again; your own model: see {OWN_MODEL_DOC}"
    if not path.is_file():
        raise KitError(f"{path}: OOF file not found{relative_to_what(path)}; run `kit train` for that variant first")
    arrays = read_npz(path, remedy)
    missing = [k for k in OOF.__dataclass_fields__ if k not in arrays]
    if missing:
        needed = "; ".join(f"{k} {ARRAY_CONTRACT[k]}" for k in missing)
        prior = f" ({TRAIN_PRIOR_MEANING})" if "train_prior" in missing else ""
        raise KitError(f"{path}: missing array{'s' if len(missing) > 1 else ''} {needed}{prior} (an OOF holds all seven of {list(ARRAY_CONTRACT)}); {remedy}")
    for name, kinds in _ARRAY_KINDS.items():
        if arrays[name].dtype.kind not in kinds:
            hint = " (write it with .astype(str))" if kinds == "U" else ""
            raise KitError(f"{path}: array '{name}' has dtype {arrays[name].dtype}, expected {ARRAY_CONTRACT[name]}{hint}; {remedy}")
    oof = OOF(**{k: arrays[k] for k in OOF.__dataclass_fields__})
    if oof.fold.shape == oof.ids.shape and (oof.fold < 0).any():
        raise KitError(f"{path}: negative fold numbers; `fold` must be each row's fold in folds.csv; {remedy}")
    return oof.validate(path)


def check_against_folds(oof: OOF, folds_csv: str | Path, source: str | Path) -> None:
    """The OOF ids and folds must be exactly those of folds.csv."""
    folds = read_folds(folds_csv)
    expected = dict(zip(folds["id"], folds["fold"]))
    got_ids = set(oof.ids.tolist())
    missing = [i for i in expected if i not in got_ids]
    extra = [i for i in oof.ids.tolist() if i not in expected]
    if missing or extra:
        parts = [f"{len(missing)} ids of the folds missing (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(extra)} ids unknown to the folds (e.g. {extra[:3]})"] if extra else []
        raise KitError(
            f"{source}: OOF ids do not match {folds_csv} ({'; '.join(parts)}); "
            "retrain after `kit folds` or restore the old folds.csv (your own model: one row per id of folds.csv, "
            "each row's logits from the fold model that did not see it)"
        )
    wrong = [i for i, f in zip(oof.ids.tolist(), oof.fold.tolist()) if expected[i] != f]
    if wrong:
        raise KitError(
            f"{source}: {len(wrong)} ids sit in another fold than in {folds_csv} (e.g. {wrong[:3]}); "
            "the folds changed after training: retrain or restore the old folds.csv (your own model: train on folds.csv's folds, "
            "`fold` equal to its column, each row's logits from the fold model that did not see it)"
        )


def check_same_classes(oofs: dict[str, OOF]) -> None:
    """All files of one ensemble must share class names, order, ids and test ids."""
    names = list(oofs)
    ref_name, ref = names[0], oofs[names[0]]
    for name in names[1:]:
        other = oofs[name]
        if other.classes.tolist() != ref.classes.tolist():
            raise KitError(f"{name}: classes differ from {ref_name} ({other.classes.tolist()} vs {ref.classes.tolist()})")
        if other.ids.tolist() != ref.ids.tolist():
            raise KitError(f"{name}: train ids differ from {ref_name} (order or content); retrain on the same folds.csv")
        if other.test_ids.tolist() != ref.test_ids.tolist():
            raise KitError(f"{name}: test ids differ from {ref_name}")


def check_for_competition(oof: OOF, classes: list[str], task: str, source: str | Path, classes_from: str) -> None:
    """What an OOF must be for this competition, beyond its own shapes: the competition's class names in its
    order, logits rather than probabilities, a train_prior that is a distribution of the task's kind.
    One line each, saying what to write instead (a hand-made OOF from your own model is the usual cause)."""
    got = oof.classes.astype(str).tolist()
    if got != list(classes):
        if set(got) == set(classes):
            i = next(k for k, (a, b) in enumerate(zip(got, classes)) if a != b)
            detail = f"same names in another order: classes[{i}] is {got[i]!r} where it has {classes[i]!r}"
        else:
            unknown, absent = [c for c in got if c not in classes], [c for c in classes if c not in got]
            detail = "; ".join([f"not competition classes: {unknown[:3]}"] * bool(unknown) + [f"missing: {absent[:3]}"] * bool(absent))
        raise KitError(
            f"{source}: classes differ from {classes_from} ({detail}); store `classes` and the logits' columns in its class "
            f"order {list(classes)} (a variant of `kit train`: retrain it on the current data)"
        )
    for name, arr in (("logits", oof.logits), ("test_logits", oof.test_logits)):
        if arr.size and arr.min() >= 0 and arr.max() <= 1:
            sums_to_one = np.allclose(np.asarray(arr, dtype=np.float64).sum(axis=-1), 1.0, atol=1e-3)
            if task == "multi-label" or sums_to_one:
                what = "every row sums to 1, every value in [0, 1]" if sums_to_one else "every value in [0, 1]"
                store = "log-odds before the sigmoid, not sigmoid outputs" if task == "multi-label" else "log-probabilities are fine, e.g. np.log(p)"
                raise KitError(f"{source}: {name} look like probabilities ({what}); store logits ({store}), not probabilities")
    prior = np.asarray(oof.train_prior, dtype=np.float64)
    if task == "multi-label" and (prior >= 1).any():
        raise KitError(f"{source}: train_prior has values >= 1 ({prior.max():g}); for multi-label it is each class's positive rate in (0, 1), "
                       "the rate the model was trained under (the training set's, or the sampler's)")
    if task != "multi-label" and abs(prior.sum() - 1.0) > 1e-3:
        raise KitError(f"{source}: train_prior sums to {prior.sum():g}, not 1; it must be {TRAIN_PRIOR_MEANING}")


def check_oof_meta(path: str | Path, metric: dict, data_fingerprint: str, accept_stale: bool, config: str | Path | None = None) -> OofMeta:
    """The JSON beside an OOF (`kit train` writes it): it must exist and name the metric the model's checkpoints were
    chosen for, which must be the config's; its data fingerprint, when present, must be the data source's now. A
    hand-made OOF needs at least `{"metric": ...}` (the refusal prints it); without "data_fingerprint" the data is not checked."""
    path = Path(path)
    json_path = oof_meta_json(path)
    meta = OofMeta.read_if_exists(json_path)
    minimal = json.dumps({"metric": metric})
    if meta is None or "metric" not in meta.model_fields_set:
        what = f"no {json_path.name} beside it" if meta is None else f"{json_path.name} has no key 'metric'"
        raise KitError(
            f"{path}: {what}; a variant of `kit train`: run `kit train --variant {path.stem}` again; your own model: write {json_path} "
            f"holding {minimal} (the metric its checkpoints were chosen for; see {OWN_MODEL_DOC})"
        )
    if not isinstance(meta.metric, dict) or not _same_metric(meta.metric, metric):
        recorded = _metric_text(meta.metric) if isinstance(meta.metric, dict) else repr(meta.metric)
        raise KitError(
            f"{json_path}: made for metric {recorded} but {config or 'the config'} has {_metric_text(metric)}; rerun "
            f"`kit train --variant {path.stem}` (or restore the metric); your own model: its checkpoints were chosen for another metric, "
            f"choose them for this one and write \"metric\": {json.dumps(metric)}"
        )
    require_same_data(meta, data_fingerprint, path, path.stem, accept_stale, config)
    return meta


def read_folds(path: str | Path) -> pd.DataFrame:
    """folds.csv as (id: str, fold: int64); KitError naming the file and row when it is not what `kit folds` writes."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: folds file not found{relative_to_what(path)}; run `kit folds` first")
    remedy = "run `kit folds` to write it again"
    df = read_csv(path, "id", remedy)
    if list(df.columns[:2]) != ["id", "fold"]:
        raise KitError(f"{path}: expected columns id,fold; got {list(df.columns)}; {remedy}")
    fold = pd.to_numeric(df["fold"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(fold) | (fold != np.round(fold)) | (fold < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = df["fold"].iloc[row]
        shown = "an empty fold" if pd.isna(value) else f"fold {str(value)!r}"
        raise KitError(f"{path}: row {row + 2} has {shown}, not a fold number 0, 1, ...; {remedy}")
    duplicated = df["id"].duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise KitError(f"{path}: row {row + 2}: id '{df['id'].iloc[row]}' appears twice; {remedy}")
    return df.assign(fold=fold.astype(np.int64))


def oof_fingerprint(oof: OOF) -> str:
    """sha256 of what a decision is fitted on (ids, folds, logits, train_prior): a decision or report
    carrying another fingerprint was fitted on other logits and must not be applied to these."""
    arrays = (np.asarray(oof.ids, dtype=str), np.asarray(oof.fold, dtype=np.int64), np.asarray(oof.logits, dtype=np.float32),
              np.asarray(oof.train_prior, dtype=np.float64))
    return digest(*(p for arr in arrays for p in (str(arr.shape), np.ascontiguousarray(arr).tobytes())), sep=b"", length=32)


def require_same_data(meta: OofMeta | None, current: str, source: str | Path, variant: str, accept: bool,
                      config: str | Path | None = None) -> None:
    """One line when an OOF was trained on other data than the data source holds now (a label fixed in
    train.csv, images replaced): fitting or scoring its logits against the new labels would be silently wrong.
    `calibrate.accept_stale_oof = true` accepts it on purpose; an OOF with no recorded fingerprint is accepted."""
    recorded = None if meta is None else meta.data_fingerprint
    if recorded is None or recorded == current or accept:
        return
    raise KitError(
        f"{source}: trained on other data than the data source holds now (train labels or images changed after `kit train`); "
        f"retrain it with `kit train --variant {variant}`, or set calibrate.accept_stale_oof = true in {config or 'the config'} "
        "to use the old logits anyway (your own model: retrain it on the current data and copy \"data_fingerprint\" from an "
        "oof/<variant>.json that `kit train` wrote on it)"
    )


TEST_IMAGES_KEY = "test_images_fingerprint"  # in an OOF's JSON and a submission's provenance: the test images its test logits saw


def test_images_fingerprint(source) -> str:
    """The test images as the data source holds them now (their ids, and each file's name, size and mtime):
    what test logits were predicted on. `kit train` records it in oof/<v>.json, `kit blend` in the provenance."""
    from kit.data.common import fingerprint

    return fingerprint("test images", "\n".join(np.asarray(source.test.ids, dtype=str).tolist()), source.test.images_fingerprint)[:32]


def require_same_test_images(meta, source, where: str | Path, fix: str) -> None:
    """One line when test logits (an OOF's, a submission's) were predicted on other test images than the data
    source holds now (images replaced, added or removed after training): a submission from them would be for
    other images. `fix` says what makes fresh ones. A file that recorded no test fingerprint (an older kit,
    a hand-made OOF) is accepted. The check `kit blend`, `kit submit` (and `kit predict`) share."""
    data = meta.to_dict() if hasattr(meta, "to_dict") else (meta or {})  # a kit.records record or a plain dict
    recorded = data.get(TEST_IMAGES_KEY)
    if recorded is None or recorded == test_images_fingerprint(source):
        return
    raise KitError(
        f"{where}: its test predictions were made from other test images than the data source holds now (test images "
        f"replaced, added or removed after `kit train`); {fix}"
    )


def _same_metric(a: dict, b: dict) -> bool:
    def normal(d: dict) -> dict:
        return {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in d.items()}

    return normal(a) == normal(b)


def _metric_text(params: dict) -> str:
    extra = ", ".join(f"{k}={v:g}" if isinstance(v, float | int) else f"{k}={v}" for k, v in params.items() if k != "name")
    return f"{params.get('name', '?')}({extra})"
