"""Assemble `oof/<variant>.npz` from the K per-fold `preds.npz` once every fold exists (docs/files.md).

Each fold's file must carry the current job identity (config, data, folds): an OOF is never made
from folds trained on other labels, images or folds. A variant with `seeds` gets one OOF per seed,
`oof/<variant>.seed<s>.npz`, and `oof/<variant>.npz` whose logits are the seeds' mean.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from kit.artifacts import OOF, TEST_IMAGES_KEY, save_oof, test_images_fingerprint
from kit.config import CompetitionConfig, ModelConfig
from kit.data.common import DataSource
from kit.decision.metrics import build_metric
from kit.errors import KitError
from kit.paths import PREDS_FILE, oof_meta_json, oof_npz, run_dir, seed_oof_stem
from kit.training.evaluation import evaluate
from kit.training.identity import fold_identity, identity_changes, read_preds
from kit.training.layout import seeded_config
from kit.training.pseudo import pseudo_label_source
from kit.training.samplers import smoothed_class_prior


def assemble_oof(
    cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, console: Console | None = None, seed: int | None = None,
) -> Path | None:
    """Write oof/<variant>.npz + .json from the K per-fold preds, or say which folds are missing.

    With `seed` (one of the variant's `seeds`): that seed's folds, to oof/<variant>.seed<s>.npz. A variant
    with `seeds` and no `seed` given: oof/<variant>.npz, the mean of every seed's logits (None, and a line
    saying what is missing, until every seed has all its folds)."""
    console = console or Console()
    if seed is None and mcfg.seeds is not None:
        return _assemble_seed_mean(cfg, mcfg, source, fold_of, console)
    collected = _collect_folds(cfg, mcfg, source, fold_of, seed, console)
    if collected is None:
        return None
    oof, meta = collected
    stem = mcfg.name if seed is None else seed_oof_stem(mcfg.name, seed)
    if seed is not None:
        meta = {**meta, "seed": seed, "seed_of": mcfg.name}
    out = oof_npz(cfg, stem)
    save_oof(out, oof, meta)
    overall = meta["oof_metrics_closed_form_rule"]
    console.print(
        f"[bold]{stem}[/]: OOF score {overall['score']:.4f} under the closed-form rule "
        f"(trivial baseline {overall['trivial_baseline']:.4f}), macro-F1 {overall['macro_f1']:.3f}, AUC {overall['auc']:.3f}; "
        f"wrote {out} and {oof_meta_json(out)}"
    )
    return out


def _collect_folds(
    cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, seed: int | None, console: Console,
) -> tuple[OOF, dict] | None:
    """The OOF of one (variant, seed) from its K preds files, each checked against the current identity; None
    (and a line naming the missing folds) while some fold is not trained."""
    n_folds = cfg.folds.n_folds
    paths = [run_dir(cfg, mcfg.name, k, seed) / PREDS_FILE for k in range(n_folds)]
    missing = [k for k, p in enumerate(paths) if not p.is_file()]
    what = mcfg.name if seed is None else f"{mcfg.name} seed {seed}"
    if missing:
        out = oof_npz(cfg, mcfg.name if seed is None else seed_oof_stem(mcfg.name, seed))
        console.print(
            f"{what}: folds {missing} not trained yet; {out} is written when all {n_folds} are there "
            f"(`kit train --variant {mcfg.name} --fold K`)"
        )
        return None
    job_cfg = seeded_config(cfg, seed)
    ids = np.asarray(source.train.ids, dtype=str)
    position = {i: r for r, i in enumerate(ids.tolist())}
    logits = np.full((len(ids), len(source.classes)), np.nan, dtype=np.float32)
    filled = np.zeros(len(ids), dtype=np.int64)
    test_logits, priors, fold_metrics = [], [], []
    for k, path in enumerate(paths):
        retrain = f"retrain it: `kit train --variant {mcfg.name} --fold {k}`"
        z, identity = read_preds(path, retrain)
        changed = identity_changes(identity, fold_identity(job_cfg, mcfg, source, fold_of, k))
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
    meta = _meta(cfg, mcfg, source, fold_of, oof)
    meta.update(folds=fold_metrics, train_prior_per_fold=[p.tolist() for p in priors], seconds_total=float(sum(m["seconds"] for m in fold_metrics)))
    return oof, meta


def _meta(cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, oof: OOF) -> dict:
    """The OOF JSON's fields every OOF of `kit train` carries (calibrate and blend check its metric)."""
    labels = source.train.labels
    overall = evaluate(
        oof.logits, labels, source.task, list(source.classes), oof.train_prior, smoothed_class_prior(labels, source.task),
        cfg=cfg, temperature=mcfg.temperature,
    )
    meta = {
        "variant": mcfg.name, "model_config": mcfg.model_dump(mode="json"), "competition_config": cfg.model_dump(mode="json"),
        "task": source.task, "oof_metrics_closed_form_rule": overall,
        "torch": torch.__version__, "python": platform.python_version(), "data_fingerprint": source.train.fingerprint,
        "metric": build_metric(cfg.metric).params(),  # checkpoints were chosen by it: calibrate and blend check it
        TEST_IMAGES_KEY: test_images_fingerprint(source),  # what the test logits saw: blend and submit refuse them once it changes
    }
    if mcfg.pseudo_label_from is not None:  # a second round: which first round soft-labelled its test images
        meta["pseudo_labels"] = {
            **pseudo_label_source(cfg, mcfg, source, fold_of).provenance(),
            "temperature": mcfg.pseudo_label_temperature, "min_confidence": mcfg.pseudo_label_min_confidence,
        }
    return meta


def seed_mean(oofs: list[OOF]) -> OOF:
    """The seeds' OOF: logits, test logits and train prior averaged over the seeds (in float64, stored as the
    OOF's float32), so `oof/<v>.npz` is exactly the mean of the per-seed files' arrays."""
    first = oofs[0]

    def mean(arrays: list[np.ndarray]) -> np.ndarray:
        return np.mean(np.stack([np.asarray(a, dtype=np.float64) for a in arrays]), axis=0)

    return OOF(
        classes=first.classes, ids=first.ids, fold=first.fold,
        logits=mean([o.logits for o in oofs]).astype(np.float32),
        test_ids=first.test_ids, test_logits=mean([o.test_logits for o in oofs]).astype(np.float32),
        train_prior=mean([o.train_prior for o in oofs]),
    )


def _assemble_seed_mean(cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, console: Console) -> Path | None:
    """oof/<variant>.npz of a variant with `seeds`: the mean of every seed's OOF, once all exist."""
    seeds = list(mcfg.seeds or [])
    collected = {s: _collect_folds(cfg, mcfg, source, fold_of, s, console) for s in seeds}
    waiting = [s for s, c in collected.items() if c is None]
    if waiting:
        console.print(f"{mcfg.name}: seeds {waiting} are not complete; {oof_npz(cfg, mcfg.name)} (the mean of seeds {seeds}) is written when they are")
        return None
    per_seed = {s: c for s, c in collected.items() if c is not None}
    oof = seed_mean([c[0] for c in per_seed.values()])
    meta = _meta(cfg, mcfg, source, fold_of, oof)
    meta.update(
        seeds=seeds,
        per_seed={str(s): {"oof": oof_npz(cfg, seed_oof_stem(mcfg.name, s)).name, "score_closed_form_rule": c[1]["oof_metrics_closed_form_rule"]["score"]}
                  for s, c in per_seed.items()},
        seconds_total=float(sum(c[1]["seconds_total"] for c in per_seed.values())),
    )
    out = oof_npz(cfg, mcfg.name)
    save_oof(out, oof, meta)
    scores = ", ".join(f"{s}: {c[1]['oof_metrics_closed_form_rule']['score']:.4f}" for s, c in per_seed.items())
    overall = meta["oof_metrics_closed_form_rule"]
    console.print(
        f"[bold]{mcfg.name}[/]: mean of {len(seeds)} seeds, OOF score {overall['score']:.4f} under the closed-form rule "
        f"(seeds {scores}; trivial baseline {overall['trivial_baseline']:.4f}), macro-F1 {overall['macro_f1']:.3f}, AUC {overall['auc']:.3f}; "
        f"wrote {out} and {oof_meta_json(out)}"
    )
    return out
