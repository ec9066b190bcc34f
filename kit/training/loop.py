"""K-fold trainer: one (variant, fold) is one independent job; OOF is assembled when all folds exist.

A job runs four steps, each a function below: set-up (model, split, trainer), resume (or a fresh
start), epochs, and finish (reload the best epoch, cRT/τ-norm, write `preds.npz`). Its files live in
`runs/<variant>/fold<k>/` (`kit.paths.run_dir`) and are owned by one `FoldCheckpoints` object;
when every fold has its `preds.npz`, `kit.training.assemble` writes `oof/<variant>.npz` + `.json`.

Checkpoints are chosen on the competition score under the decision rule of docs/decision.md (prior
correction + Bayes rule), never on accuracy: argmax is what made published runs score worse
than predicting `No Finding` everywhere. Every random draw is seeded per (seed, variant, fold,
slot) (`kit.training.seeding`), so `--resume` after an interruption ends with the same bytes as a
run never stopped. `preds.npz` and `last.pt` carry the job's identity (`kit.training.identity`):
`--resume` reuses them only when the config and the data are those they were made from.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from kit.config import CompetitionConfig, ModelConfig
from kit.data.cache import cached_images
from kit.data.common import DataSource
from kit.decision.metrics import build_metric, trivial_baseline
from kit.errors import KitError
from kit.files import ensure_writable_dir, write_text
from kit.paths import CURVES_FILE, METRICS_FILE, run_dir
from kit.plots import training_curves_png
from kit.training.augment import make_mixer
from kit.training.checkpoint import FoldCheckpoints, FoldState
from kit.training.crt import rebalance_classifier
from kit.training.dataset import CachedDataset
from kit.training.device import pick_device
from kit.training.evaluation import evaluate
from kit.training.identity import fold_identity, retrain_hint
from kit.training.layout import seeded_config
from kit.training.loader import EpochSampler, make_train_loader
from kit.training.losses import prior_basis, recipe_prior
from kit.training.pseudo import StackedImages, pseudo_label_source, soft_labels
from kit.training.samplers import sample_weights, smoothed_class_prior
from kit.training.seeding import JobSeeds
from kit.training.trainer import Trainer, build_model, build_trainer


@dataclass
class FoldSplit:
    """The images a job trains on and holds out (rows of the image caches), with their labels and priors."""

    train_images: np.ndarray  # the train cache (held-out rows are predicted from it)
    test_images: np.ndarray
    fit_images: np.ndarray | StackedImages  # what training draws from: the train cache (+ the test cache in a second round)
    train_idx: np.ndarray  # rows of fit_images
    val_idx: np.ndarray
    val_ok: np.ndarray  # held-out rows whose image was readable (the others are predicted but not scored)
    y_train: np.ndarray  # uint8 labels; float32 with the soft pseudo-labels of a second round
    y_val: np.ndarray
    weights: np.ndarray  # the sampler's per-image weights
    target_prior: np.ndarray  # the labelled training folds' class distribution: what the checkpoint's rule predicts under
    skipped_train: int
    n_pseudo: int = 0  # soft-labelled test images among the training rows


@dataclass(kw_only=True)
class FoldRun:
    """One job's fixed context, shared by its steps."""

    cfg: CompetitionConfig
    mcfg: ModelConfig
    fold: int
    task: str
    classes: list[str]
    split: FoldSplit
    trainer: Trainer
    loader: DataLoader
    sampler: EpochSampler
    checkpoints: FoldCheckpoints
    seeds: JobSeeds
    device: torch.device
    console: Console


def train_fold(
    cfg: CompetitionConfig,
    mcfg: ModelConfig,
    source: DataSource,
    fold_of: np.ndarray,
    fold: int,
    *,
    resume: bool = False,
    console: Console | None = None,
    stop_after_epoch: int | None = None,
    seed: int | None = None,
) -> Path | None:
    """Train on the other folds, predict fold `fold` and the test set; write runs/<v>/fold<k>/preds.npz.

    `stop_after_epoch` ends the job after that epoch as if it had been interrupted (tests, time boxes);
    it returns None then, the preds path otherwise. `seed` (a job of the variant's `seeds` list) replaces
    the competition seed (`seeded_config`) and writes to `run_dir(..., seed)`.
    """
    console = console or Console()
    out_dir = run_dir(cfg, mcfg.name, fold, seed)
    cfg = seeded_config(cfg, seed)
    checkpoints = FoldCheckpoints(out_dir, fold_identity(cfg, mcfg, source, fold_of, fold), retrain_hint(mcfg.name, fold))
    if resume and checkpoints.finished():
        console.print(f"{mcfg.name} fold {fold}: already done ({checkpoints.preds}), skipped")
        return checkpoints.preds
    ensure_writable_dir(checkpoints.out_dir)
    seeds, device = JobSeeds(cfg.seed, mcfg.name, fold), pick_device()
    model = build_model(mcfg, len(source.classes), device, init_seed=seeds.model_init)  # first: a weights problem fails before any caching
    split = _split(cfg, mcfg, source, fold_of, fold, seeds, console=console)
    trainer, loader, sampler = _set_up(model, split, mcfg, source.task, device, seeds)
    run = FoldRun(
        cfg=cfg, mcfg=mcfg, fold=fold, task=source.task, classes=list(source.classes), split=split, trainer=trainer, loader=loader,
        sampler=sampler, checkpoints=checkpoints, seeds=seeds, device=device, console=console,
    )
    state = _resume_or_start(run, resume)
    _print_header(run, len(source.test))
    while not state.finished and state.epoch < mcfg.epochs:
        _run_epoch(run, state)
        if stop_after_epoch is not None and state.epoch >= stop_after_epoch and not state.finished and state.epoch < mcfg.epochs:
            console.print(f"{mcfg.name} fold {fold}: stopped after epoch {state.epoch}; continue with --resume")
            return None
    return _finish(run, state, source)


# --- set-up -------------------------------------------------------------------------------------


def _split(cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, fold: int, seeds: JobSeeds, *, console: Console) -> FoldSplit:
    """Cache the images; train on the other folds' readable images (at most `max_train_images`), hold out fold `fold`."""
    train_cache = cached_images(source.train, mcfg.image_size, cfg.paths.cache, cfg.data.on_bad_image, cfg.data.workers)
    test_cache = cached_images(source.test, mcfg.image_size, cfg.paths.cache, cfg.data.on_bad_image, cfg.data.workers)
    _warn_skipped(console, source, train_cache.ok, test_cache.ok)
    train_idx = np.flatnonzero((fold_of != fold) & train_cache.ok)
    val_idx = np.flatnonzero(fold_of == fold)
    if mcfg.max_train_images and len(train_idx) > mcfg.max_train_images:
        rng = np.random.default_rng(seeds.train_subset)
        train_idx = np.sort(rng.choice(train_idx, mcfg.max_train_images, replace=False))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise KitError(f"{cfg.folds.path}: fold {fold} leaves {len(train_idx)} training and {len(val_idx)} held-out images; run `kit folds` again")
    labels = source.train.labels
    y_train, fit_images, n_pseudo = labels[train_idx], train_cache.images, 0
    target_prior = smoothed_class_prior(y_train, source.task)
    if mcfg.pseudo_label_from is not None:  # second round: fold k's own first-round model labels the test images
        rows, soft = soft_labels(pseudo_label_source(cfg, mcfg, source, fold_of).test_logits[fold], mcfg, source.task, test_cache.ok)
        fit_images, n_pseudo = StackedImages(train_cache.images, test_cache.images), len(rows)
        train_idx = np.concatenate([train_idx, len(train_cache.images) + rows])
        y_train = np.concatenate([y_train.astype(np.float32), soft])
    return FoldSplit(
        train_images=train_cache.images, test_images=test_cache.images, fit_images=fit_images, train_idx=train_idx, val_idx=val_idx,
        val_ok=train_cache.ok[val_idx], y_train=y_train, y_val=labels[val_idx],
        weights=sample_weights(y_train, mcfg.sampler_power), target_prior=target_prior,
        skipped_train=int((~train_cache.ok).sum()), n_pseudo=n_pseudo,
    )


def _set_up(model, split: FoldSplit, mcfg: ModelConfig, task: str, device: torch.device, seeds: JobSeeds) -> tuple[Trainer, DataLoader, EpochSampler]:
    """The trainer around `model` (`build_trainer`: the one training core) and the seeded loader of the training rows."""
    dataset = CachedDataset(
        split.fit_images, split.train_idx, split.y_train, mcfg.augment,
        randaugment_magnitude=mcfg.randaugment_magnitude, randaugment_ops=mcfg.randaugment_ops,
    )
    n_train = len(split.train_idx)
    drop_last = n_train > mcfg.batch_size
    batches_per_epoch = n_train // mcfg.batch_size if drop_last else 1
    trainer = build_trainer(
        mcfg, model=model, device=device, task=task, train_labels=split.y_train,
        optimizer_steps_per_epoch=math.ceil(batches_per_epoch / mcfg.grad_accum_steps),
    )
    weights = split.weights if mcfg.sampler_power > 0 else None
    loader, sampler = make_train_loader(dataset, weights, mcfg, device, drop_last, seeds.loader)
    return trainer, loader, sampler


# --- resume -------------------------------------------------------------------------------------


def _resume_or_start(run: FoldRun, resume: bool) -> FoldState:
    """The state in `last.pt` when resuming from one; otherwise a fresh state and no stale files."""
    if resume and run.checkpoints.can_resume():
        state = run.checkpoints.restore(run.trainer)
        run.console.print(f"{run.mcfg.name} fold {run.fold}: resuming at epoch {state.epoch + 1}/{run.mcfg.epochs} from {run.checkpoints.last}")
        return state
    run.checkpoints.clear()
    return FoldState()


def _pseudo_note(run: FoldRun) -> str:
    if run.mcfg.pseudo_label_from is None:
        return ""
    return f" (of which {run.split.n_pseudo} test images soft-labelled by {run.mcfg.pseudo_label_from}'s fold-{run.fold} model)"


def _print_header(run: FoldRun, n_test: int) -> None:
    mcfg, split = run.mcfg, run.split
    trivial = trivial_baseline(split.y_val[split.val_ok], build_metric(run.cfg.metric), task=run.task)
    run.console.print(
        f"[bold]{mcfg.name}[/] fold {run.fold}/{run.cfg.folds.n_folds}: {len(split.train_idx)} train{_pseudo_note(run)}, {len(split.val_idx)} held-out, "
        f"{n_test} test images at {mcfg.image_size} px on {run.device.type}; "
        f"sampler power {mcfg.sampler_power}, loss {mcfg.loss}{_recipe_extras(mcfg)}; trivial baseline on this fold {trivial:.4f}"
    )


# --- epochs -------------------------------------------------------------------------------------


def _run_epoch(run: FoldRun, state: FoldState) -> None:
    """Train one epoch, score the held-out fold, keep the best epoch, write metrics.csv and last.pt."""
    mcfg, split, trainer, epoch = run.mcfg, run.split, run.trainer, state.epoch
    t0 = time.perf_counter()
    trainer.start_epoch(epoch)  # the freeze schedule and the loss at this epoch
    seed = run.seeds.epoch(epoch)
    torch.manual_seed(seed)
    run.sampler.set_epoch(seed)
    train_prior = recipe_prior(split.y_train, split.weights, mcfg, run.task, epoch)
    train_loss = trainer.train_epoch(
        run.loader, console=run.console, description=f"{mcfg.name} f{run.fold} e{epoch + 1}/{mcfg.epochs}",
        mixer=make_mixer(mcfg, len(run.classes), run.task, seed, soft_targets=split.y_train.dtype.kind == "f"),
    )
    val_logits, val_loss = trainer.evaluate(split.train_images, split.val_idx, split.y_val, scored=split.val_ok)
    metrics = _held_out_metrics(run, val_logits, train_prior)
    objective = build_metric(run.cfg.metric).sign * metrics["score"]  # higher is better (log-loss negated)
    if mcfg.scheduler == "plateau":
        trainer.scheduler.step(objective)
    improved = state.is_better(objective, val_loss)
    if improved:
        state.best_score, state.best_val_loss, state.best_epoch, state.bad_epochs = objective, val_loss, epoch, 0
        run.checkpoints.save_best(trainer, val_logits, epoch)
    else:
        state.bad_epochs += 1
    elapsed = time.perf_counter() - t0
    state.seconds += elapsed
    state.history.append({
        "epoch": epoch + 1, "lr": float(trainer.optimizer.param_groups[0]["lr"]), "train_loss": train_loss["loss"],
        "val_loss": val_loss, **_prefixed(metrics), "images_per_s": train_loss["images_per_s"], "seconds": elapsed, "best": improved,
    })
    state.epoch = epoch + 1
    state.finished = state.bad_epochs >= mcfg.early_stopping_patience
    run.console.print(
        f"  epoch {epoch + 1}: train loss {train_loss['loss']:.4f}, val loss {val_loss:.4f}, "
        f"score {metrics['score']:.4f} (trivial {metrics['trivial_baseline']:.4f}), macro-F1 {metrics['macro_f1']:.3f}, "
        f"AUC {metrics['auc']:.3f}{'  [best]' if improved else ''}"
        + (f"; early stop after {state.bad_epochs} epochs without gain" if state.finished else "")
    )
    write_text(run.checkpoints.out_dir / METRICS_FILE, pd.DataFrame(state.history).to_csv(index=False))
    run.checkpoints.save_last(trainer, state, sampler=run.sampler)


def _held_out_metrics(run: FoldRun, val_logits: np.ndarray, train_prior: np.ndarray) -> dict[str, float]:
    ok = run.split.val_ok
    return evaluate(
        val_logits[ok], run.split.y_val[ok], run.task, run.classes, train_prior, run.split.target_prior, cfg=run.cfg, temperature=run.mcfg.temperature,
    )


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    """History and summary names: val_<metric>, but the trivial baseline keeps its name."""
    return {f"val_{k}" if k != "trivial_baseline" else k: float(v) for k, v in metrics.items()}


# --- finish -------------------------------------------------------------------------------------


def _finish(run: FoldRun, state: FoldState, source: DataSource) -> Path:
    """Reload the best epoch, re-balance its head (cRT/τ-norm) if asked, predict the test set, write preds.npz."""
    mcfg, split, trainer = run.mcfg, run.split, run.trainer
    best_epoch, val_logits = run.checkpoints.load_best(trainer, run.device)
    train_prior = recipe_prior(split.y_train, split.weights, mcfg, run.task, best_epoch)
    decoupled = rebalance_classifier(
        trainer.eval_model, split.fit_images, split.train_idx, split.y_train, mcfg, run.task, device=run.device, seed=run.seeds.crt_head, console=run.console
    )
    decoupled_metrics = None
    if decoupled is not None:  # cRT or τ-norm: a new head, so new held-out logits and the head's prior
        train_prior = decoupled
        val_logits = trainer.predict(split.train_images, split.val_idx)
        decoupled_metrics = _held_out_metrics(run, val_logits, train_prior)
        run.checkpoints.save_decoupled(trainer, val_logits, best_epoch)  # the weights `kit predict` loads
        run.console.print(
            f"  {'cRT' if mcfg.crt_epochs else 'τ-norm'} head: score {decoupled_metrics['score']:.4f} "
            f"(trivial {decoupled_metrics['trivial_baseline']:.4f}), macro-F1 {decoupled_metrics['macro_f1']:.3f}, AUC {decoupled_metrics['auc']:.3f}"
        )
    test_logits = trainer.predict(split.test_images, np.arange(len(source.test)))
    curves = training_curves_png(pd.DataFrame(state.history), run.checkpoints.out_dir / CURVES_FILE, title=f"{mcfg.name} fold {run.fold}")
    best_row = state.history[best_epoch]
    summary = {
        "fold": run.fold, "best_epoch": best_epoch + 1, "epochs_run": state.epoch, "seconds": state.seconds,
        **{k: v for k, v in best_row.items() if k.startswith("val_") or k == "trivial_baseline"},
        "n_train": int(len(split.train_idx)), "n_val": int(len(split.val_idx)), "skipped_train_images": split.skipped_train,
        "device": run.device.type, "train_prior_basis": prior_basis(mcfg),
    }
    if mcfg.pseudo_label_from is not None:
        summary["n_pseudo_labelled"] = split.n_pseudo
    if decoupled_metrics is not None:
        summary.update(_prefixed(decoupled_metrics))
        summary["val_score_before_decoupling"] = float(best_row["val_score"])
    preds = run.checkpoints.write_preds({
        "classes": np.asarray(run.classes, dtype=str), "val_ids": np.asarray(source.train.ids[split.val_idx], dtype=str),
        "val_logits": val_logits, "test_ids": np.asarray(source.test.ids, dtype=str), "test_logits": test_logits,
        "train_prior": train_prior, "target_prior": split.target_prior, "fold": np.int64(run.fold),
    }, summary)
    run.console.print(
        f"{mcfg.name} fold {run.fold}: best epoch {summary['best_epoch']} score {summary['val_score']:.4f} "
        f"(trivial {summary['trivial_baseline']:.4f}); wrote {preds}; curves {curves}"
    )
    return preds


def _recipe_extras(mcfg: ModelConfig) -> str:
    """The long-tail and timm options a job runs with, for its header line (empty for the plain recipe)."""
    extras = {
        "τ": mcfg.logit_adjust_tau if mcfg.loss == "logit_adjusted" else 0,
        "class weights from epoch": mcfg.class_weights_from_epoch + 1 if mcfg.class_weights != "none" else 0,
        "cRT epochs": mcfg.crt_epochs, "τ-norm": mcfg.tau_norm, "mixup α": mcfg.mixup_alpha, "cutmix α": mcfg.cutmix_alpha,
        "drop path": mcfg.drop_path_rate, "grad accumulation": mcfg.grad_accum_steps if mcfg.grad_accum_steps > 1 else 0,
        "layer decay": mcfg.layer_decay or 0, "RandAugment m": mcfg.randaugment_magnitude,
    }
    return "".join(f", {k} {v}" for k, v in extras.items() if v)


def _warn_skipped(console: Console, source: DataSource, train_ok: np.ndarray, test_ok: np.ndarray) -> None:
    for name, split, ok in (("train", source.train, train_ok), ("test", source.test, test_ok)):
        if not ok.all():
            bad = split.ids[~ok]
            shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            extra = "excluded from training; their held-out rows are" if name == "train" else "their rows are"
            console.print(f"[yellow]warning:[/] {len(bad)} unreadable {name} images skipped ({shown}): {extra} predicted from a blank image")
