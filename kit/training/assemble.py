"""Assemble `oof/<variant>.npz` from the K per-fold `preds.npz` once every fold exists (docs/files.md).

Each fold's file must carry the current job identity (config, data, folds): an OOF is never made
from folds trained on other labels, images or folds.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from kit.artifacts import OOF, save_oof
from kit.config import CompetitionConfig, ModelConfig
from kit.data.sources import DataSource
from kit.decision.metrics import build_metric
from kit.errors import KitError
from kit.training.evaluation import evaluate
from kit.training.identity import fold_identity, identity_changes, read_preds
from kit.training.layout import run_dir
from kit.training.pseudo import pseudo_label_source
from kit.training.samplers import smoothed_class_prior


def assemble_oof(cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, console: Console | None = None) -> Path | None:
    """Write oof/<variant>.npz + .json from the K per-fold preds, or say which folds are missing."""
    console = console or Console()
    n_folds = cfg.folds.n_folds
    paths = [run_dir(cfg, mcfg.name, k) / "preds.npz" for k in range(n_folds)]
    missing = [k for k, p in enumerate(paths) if not p.is_file()]
    if missing:
        console.print(
            f"{mcfg.name}: folds {missing} not trained yet; oof/{mcfg.name}.npz is written when all {n_folds} are there "
            f"(`kit train --variant {mcfg.name} --fold K`)"
        )
        return None
    ids = np.asarray(source.train.ids, dtype=str)
    position = {i: r for r, i in enumerate(ids.tolist())}
    logits = np.full((len(ids), len(source.classes)), np.nan, dtype=np.float32)
    filled = np.zeros(len(ids), dtype=np.int64)
    test_logits, priors, fold_metrics = [], [], []
    for k, path in enumerate(paths):
        retrain = f"retrain it: `kit train --variant {mcfg.name} --fold {k}`"
        z, identity = read_preds(path, retrain)
        changed = identity_changes(identity, fold_identity(cfg, mcfg, source, fold_of, k))
        if changed:
            raise KitError(f"{path}: fold {k} was trained on other inputs ({changed}); {retrain}")
        if z["classes"].tolist() != list(source.classes) or z["test_ids"].tolist() != np.asarray(source.test.ids, dtype=str).tolist():
            raise KitError(f"{path}: classes or test ids differ from the data source; {retrain}")
        expected = ids[fold_of == k]
        if z["val_ids"].tolist() != expected.tolist():
            raise KitError(f"{path}: held-out ids differ from fold {k} of {cfg.folds.path}; the folds changed: {retrain}")
        rows = np.fromiter((position[i] for i in z["val_ids"].tolist()), dtype=np.int64, count=len(expected))
        logits[rows] = z["val_logits"]
        filled[rows] += 1
        test_logits.append(z["test_logits"])
        priors.append(z["train_prior"])
        fold_metrics.append(json.loads(str(z["metrics"])))
    if not (filled == 1).all():
        raise KitError(f"{cfg.folds.path}: {int((filled != 1).sum())} train ids are not in exactly one fold; run `kit folds` and retrain")
    train_prior = np.mean(priors, axis=0)
    oof = OOF(
        classes=np.asarray(source.classes, dtype=str), ids=ids, fold=fold_of.astype(np.int64), logits=logits,
        test_ids=np.asarray(source.test.ids, dtype=str), test_logits=np.stack(test_logits), train_prior=train_prior,
    )
    labels = source.train.labels
    overall = evaluate(logits, labels, source.task, list(source.classes), train_prior, smoothed_class_prior(labels, source.task), cfg, mcfg.temperature)
    meta = {
        "variant": mcfg.name, "model_config": mcfg.model_dump(mode="json"), "competition_config": cfg.model_dump(mode="json"),
        "task": source.task, "folds": fold_metrics, "train_prior_per_fold": [p.tolist() for p in priors],
        "oof_metrics_closed_form_rule": overall, "seconds_total": float(sum(m["seconds"] for m in fold_metrics)),
        "torch": torch.__version__, "python": platform.python_version(), "data_fingerprint": source.train.fingerprint,
        "metric": build_metric(cfg.metric).params(),  # checkpoints were chosen by it: calibrate and blend check it
    }
    if mcfg.pseudo_label_from is not None:  # a second round: which first round soft-labelled its test images
        meta["pseudo_labels"] = {
            **pseudo_label_source(cfg, mcfg, source, fold_of).provenance(),
            "temperature": mcfg.pseudo_label_temperature, "min_confidence": mcfg.pseudo_label_min_confidence,
        }
    out = Path(cfg.paths.oof) / f"{mcfg.name}.npz"
    save_oof(out, oof, meta)
    console.print(
        f"[bold]{mcfg.name}[/]: OOF score {overall['score']:.4f} under the closed-form rule "
        f"(trivial baseline {overall['trivial_baseline']:.4f}), macro-F1 {overall['macro_f1']:.3f}, AUC {overall['auc']:.3f}; "
        f"wrote {out} and {out.with_suffix('.json')}"
    )
    return out
