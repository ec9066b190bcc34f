"""Second-round training on soft-labelled test images: fold k reads only the first round's test_logits[k]."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from rich.console import Console

from kit.artifacts import OOF, save_oof
from kit.config import ModelConfig, load_model
from kit.data.folds import load_fold_assignment
from kit.data.sources import open_source
from kit.errors import KitError
from kit.stages.train import train
from kit.training.identity import fold_identity
from kit.training.loop import _split
from kit.training.pseudo import pseudo_label_source, soft_labels
from kit.training.seeding import JobSeeds


def quiet() -> Console:
    return Console(quiet=True)


def write_first_round(cfg, source, fold_of, test_logits: np.ndarray, name: str = "first", **changes) -> None:
    """A first round's OOF as `kit train` writes it (logits made up: only their shape and provenance matter)."""
    fields = dict(
        classes=np.asarray(source.classes, dtype=str), ids=np.asarray(source.train.ids, dtype=str), fold=fold_of.astype(np.int64),
        logits=np.zeros((len(source.train.ids), len(source.classes)), np.float32), test_ids=np.asarray(source.test.ids, dtype=str),
        test_logits=test_logits.astype(np.float32), train_prior=np.full(len(source.classes), 1 / len(source.classes)),
    )
    fields.update(changes)
    save_oof(cfg.paths.oof / f"{name}.npz", OOF(**fields))


@pytest.fixture()
def second_round(tiny_competition, tmp_path, variant_run):
    """A second-round variant over a made-up first round (random test logits, 3 folds)."""
    cfg = variant_run(tiny_competition, tmp_path, name="second", epochs=1, freeze_epochs=0, pseudo_label_from="first",
                      pseudo_label_temperature=2.0, pseudo_label_min_confidence=0.3)
    source = open_source(cfg)
    fold_of = load_fold_assignment(cfg, source.train.ids)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (cfg.folds.n_folds, len(source.test), len(source.classes)))
    write_first_round(cfg, source, fold_of, logits)
    return cfg, load_model("second", cfg), source, fold_of, logits


def test_soft_labels_are_tempered_softmax_above_the_floor():
    z = np.array([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 6.0, 0.0]])
    mcfg = ModelConfig(name="s", pseudo_label_from="f", pseudo_label_temperature=2.0, pseudo_label_min_confidence=0.5)
    rows, targets = soft_labels(z, mcfg, "multi-class", np.array([True, True, False]))
    assert rows.tolist() == [0]  # row 1 is unsure (≈ 1/3 each), row 2 unreadable
    expected = np.exp(z[0] / 2) / np.exp(z[0] / 2).sum()
    np.testing.assert_allclose(targets[0], expected, rtol=1e-6)
    assert targets.dtype == np.float32
    rows, targets = soft_labels(z, mcfg, "multi-label", np.ones(3, bool))  # sigmoid per class, least sure label decides
    assert rows.tolist() == [] or np.all(np.maximum(targets, 1 - targets).min(axis=1) >= 0.5)


@pytest.mark.slow
def test_fold_k_trains_on_its_own_first_round_slice_only(second_round):
    cfg, mcfg, source, fold_of, logits = second_round
    n_train = len(source.train.ids)
    for k in range(cfg.folds.n_folds):
        clean = _split(cfg, mcfg, source, fold_of, k, JobSeeds(cfg.seed, mcfg.name, k), console=quiet())
        poisoned = logits.copy()
        others = [j for j in range(cfg.folds.n_folds) if j != k]
        poisoned[others[0]] = 1e30  # (an OOF file refuses NaN, so huge values stand for poison)
        poisoned[others[1]] = -1e30 * np.sign(logits[others[1]])
        write_first_round(cfg, source, fold_of, poisoned)
        split = _split(cfg, mcfg, source, fold_of, k, JobSeeds(cfg.seed, mcfg.name, k), console=quiet())
        assert np.array_equal(split.train_idx, clean.train_idx) and np.array_equal(split.y_train, clean.y_train)
        assert np.isfinite(split.y_train).all() and 0 < split.n_pseudo < len(source.test)
        test_rows = split.train_idx[split.train_idx >= n_train] - n_train
        expected_rows, expected = soft_labels(logits[k], mcfg, source.task, np.ones(len(source.test), bool))
        assert np.array_equal(test_rows, expected_rows) and np.allclose(split.y_train[-split.n_pseudo :], expected)
        assert not np.isin(split.train_idx, np.flatnonzero(fold_of == k)).any()  # fold k's own rows stay held out
        poisoned[k] = logits[(k + 1) % cfg.folds.n_folds]  # its own slice does change its training set
        write_first_round(cfg, source, fold_of, poisoned)
        changed = _split(cfg, mcfg, source, fold_of, k, JobSeeds(cfg.seed, mcfg.name, k), console=quiet())
        assert not np.array_equal(changed.y_train, clean.y_train)
        write_first_round(cfg, source, fold_of, logits)


@pytest.mark.slow
def test_second_round_records_its_source_and_retrains_when_it_changes(second_round):
    cfg, mcfg, source, fold_of, logits = second_round
    train(cfg, ["second"], None, resume=False, console=quiet())
    meta = json.loads((cfg.paths.oof / "second.json").read_text())
    provenance = meta["pseudo_labels"]
    assert provenance["round"] == 2 and provenance["source"] == "first" and len(provenance["source_fingerprint"]) == 16
    assert provenance["temperature"] == 2.0 and provenance["min_confidence"] == 0.3
    assert all(f["n_pseudo_labelled"] > 0 for f in meta["folds"])
    before = fold_identity(cfg, mcfg, source, fold_of, 0)
    write_first_round(cfg, source, fold_of, logits + 1.0)  # a new first round
    assert fold_identity(cfg, mcfg, source, fold_of, 0)["pseudo-label source"] != before["pseudo-label source"]
    with pytest.raises(KitError, match="pseudo-label source changed"):
        train(cfg, ["second"], [0], resume=True, console=quiet())


@pytest.mark.slow
def test_a_bad_source_is_refused_with_one_line(second_round):
    cfg, mcfg, source, fold_of, logits = second_round
    for changes, needle in (
        (dict(fold=(fold_of + 1) % cfg.folds.n_folds), "other folds"),
        (dict(test_ids=np.asarray([f"x{i}" for i in range(len(source.test))])), "other test ids"),
        (dict(classes=np.asarray([f"c{i}" for i in range(len(source.classes))])), "other classes"),
    ):
        write_first_round(cfg, source, fold_of, logits, **changes)
        with pytest.raises(KitError, match=needle) as err:
            pseudo_label_source(cfg, mcfg, source, fold_of)
        assert "\n" not in str(err.value) and "pseudo_label_from" in str(err.value)
    (cfg.paths.oof / "first.npz").unlink()
    with pytest.raises(KitError, match="does not exist; train the first round first"):
        pseudo_label_source(cfg, mcfg, source, fold_of)


@pytest.mark.parametrize(
    "keys, needle",
    [
        (dict(pseudo_label_from="t"), "not this one"),
        (dict(pseudo_label_from="f", pseudo_label_temperature=0.0), "pseudo_label_temperature"),
        (dict(pseudo_label_from="f", pseudo_label_temperature=float("inf")), "pseudo_label_temperature"),
        (dict(pseudo_label_from="f", pseudo_label_min_confidence=1.0), "pseudo_label_min_confidence"),
        (dict(pseudo_label_from="f", pseudo_label_min_confidence=-0.1), "pseudo_label_min_confidence"),
        (dict(pseudo_label_temperature=2.0), "pseudo_label_from is not set"),
    ],
)
def test_invalid_pseudo_label_keys_are_refused(keys, needle):
    with pytest.raises(ValidationError, match=needle):
        ModelConfig(name="t", **keys)


def test_default_keys_leave_the_job_identity_unchanged(tiny_competition, tmp_path, variant_run):
    from kit.training.identity import EXECUTION_ONLY_KEYS, _digest

    cfg = variant_run(tiny_competition, tmp_path)
    mcfg = load_model("tiny", cfg)
    source = open_source(cfg)
    fold_of = load_fold_assignment(cfg, source.train.ids)
    identity = fold_identity(cfg, mcfg, source, fold_of, 0)
    old_dump = {k: v for k, v in mcfg.model_dump(mode="json", exclude=set(EXECUTION_ONLY_KEYS)).items()
                if k not in ("pseudo_label_from", "pseudo_label_temperature", "pseudo_label_min_confidence", "tta_scales", "seeds")}
    assert identity["model config"] == _digest(old_dump)  # what the kit computed before these keys existed
    scaled = mcfg.model_copy(update={"tta_scales": [0.9, 1.0, 1.1]})
    assert fold_identity(cfg, scaled, source, fold_of, 0)["model config"] != identity["model config"]
