"""K-fold trainer: one (variant, fold) is one independent job; OOF is assembled when all folds exist.

Per job, `runs/<variant>/fold<k>/` holds `last.pt` (full state, written every epoch),
`best.pt` (weights and held-out logits of the best epoch), `metrics.csv`, `curves.png` and, when
done, `preds.npz` (held-out ids and logits, test logits, train_prior). When every fold has its
`preds.npz`, `kit.training.assemble` writes `oof/<variant>.npz` + `.json` (docs/files.md).

Checkpoints are chosen on the competition score under the decision rule of docs/decision.md (prior
correction + Bayes rule), never on accuracy: argmax is what made published runs score worse
than predicting `No Finding` everywhere. Every random draw is seeded per (seed, variant, fold,
epoch), so `--resume` after an interruption ends with the same bytes as a run never stopped.
`preds.npz` and `last.pt` carry the job's identity (`kit.training.identity`): `--resume` reuses them
only when the config and the data are those they were made from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import TextColumn
from torch import nn

from kit.config import CompetitionConfig, ModelConfig, model_file
from kit.data.cache import cached_images
from kit.data.sources import DataSource
from kit.decision.metrics import balanced_accuracy, build_metric, macro_auc, macro_f1, trivial_baseline
from kit.decision.rules import closed_form_decision
from kit.errors import KitError
from kit.files import atomic_write, ensure_writable_dir, write_text
from kit.models import classifier_of, create_model
from kit.plots import training_curves_png
from kit.progress import make_progress
from kit.training.augment import make_mixer
from kit.training.crt import rebalance_classifier
from kit.training.dataset import CachedDataset, to_model_input
from kit.training.device import Precision, pick_device, pick_precision, prepare_model
from kit.training.heads import use_cosine_head
from kit.training.identity import BEST_KEYS, LAST_KEYS, fold_identity, identity_changes, read_checkpoint, read_preds, retrain_hint
from kit.training.loader import make_train_loader
from kit.training.losses import make_loss, prior_basis, recipe_prior
from kit.training.optim import build_optimizer
from kit.training.samplers import class_prior, sample_weights

SYNC_EVERY = 16  # training steps between reads of the running loss (host syncs on a GPU)


def job_seed(seed: int, variant: str, fold: int, epoch: int) -> int:
    """A 31-bit seed per (seed, variant, fold, epoch): a resumed epoch draws exactly what it would have."""
    digest = hashlib.sha256(f"{seed}/{variant}/{fold}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class WeightEMA:
    """Exponential moving average of weights (buffers copied), kept as a plain module for eval."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)



@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    mcfg: ModelConfig,
    device: torch.device,
    batch_size: int | None = None,
) -> np.ndarray:
    """float32 (len(indices), C) logits; with tta_hflip the mean of image and mirrored image."""
    model.eval()
    batch_size = batch_size or max(mcfg.batch_size, 64)
    precision = pick_precision(device, mcfg.amp)
    out = []
    for start in range(0, len(indices), batch_size):
        idx = np.asarray(indices[start : start + batch_size])
        x = torch.from_numpy(np.array(images[idx], dtype=np.uint8))[:, None].to(device, non_blocking=True)
        x = to_model_input(x, mcfg.in_chans, mcfg.channels_last)
        with precision.autocast():
            logits = model(x).float()
            if mcfg.tta_hflip:
                logits = (logits + model(x.flip(-1)).float()) / 2
        out.append(logits.cpu().numpy())
    n_classes = out[0].shape[1] if out else 0
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, n_classes), np.float32)


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray,
    task: str,
    classes: list[str],
    train_prior: np.ndarray,
    target_prior: np.ndarray,
    cfg: CompetitionConfig,
    temperature: float,
) -> dict[str, float]:
    """The metric under its closed-form decision rule (what checkpoints are chosen by), with macro-F1,
    balanced accuracy, AUC and the trivial baseline."""
    metric = build_metric(cfg.metric)
    decision = closed_form_decision(task, classes, train_prior, target_prior, metric, temperature=temperature)
    pred = decision.predict(logits)
    if task == "multi-label":
        probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    else:
        z = logits.astype(np.float64)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    return {
        "score": metric.score(labels, pred),
        "trivial_baseline": trivial_baseline(labels, metric, task=task),
        "macro_f1": macro_f1(labels, pred),
        "balanced_accuracy": balanced_accuracy(labels, pred) if task == "multi-class" else float("nan"),
        "auc": macro_auc(labels, probs),
    }



@dataclass
class FoldState:
    """Everything that changes between epochs and must survive an interruption."""

    epoch: int = 0  # next epoch to run
    best_score: float = -math.inf
    best_val_loss: float = math.inf  # breaks ties: early on the rule often predicts the majority class everywhere
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False  # early-stopped or all epochs done
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def run_dir(cfg: CompetitionConfig, variant: str, fold: int, seed: int | None = None) -> Path:
    """runs/<variant>/fold<k>; a job of a variant's `seeds` list: runs/<variant>/seed<s>/fold<k>, except the
    competition's own seed, which is the variant's own job (same identity, same draws) and shares its folder."""
    base = Path(cfg.paths.runs) / variant
    if seed is not None and seed != cfg.seed:
        base = base / f"seed{seed}"
    return base / f"fold{fold}"


def seeded_config(cfg: CompetitionConfig, seed: int | None) -> CompetitionConfig:
    """The config a seed job trains under: its seed replaces the competition's in every draw and in the identity."""
    return cfg if seed is None or seed == cfg.seed else cfg.model_copy(update={"seed": seed})


def _set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    head = {id(p) for p in classifier_of(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(trainable or id(p) in head)


def _make_scheduler(optimizer, mcfg: ModelConfig, steps_per_epoch: int):
    if mcfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)
    warmup = mcfg.warmup_epochs * steps_per_epoch
    total = max(mcfg.epochs * steps_per_epoch, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_torch(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def train_fold(
    cfg: CompetitionConfig,
    mcfg: ModelConfig,
    source: DataSource,
    fold_of: np.ndarray,
    fold: int,
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
    preds_path, last_path, best_path = out_dir / "preds.npz", out_dir / "last.pt", out_dir / "best.pt"
    identity, hint = fold_identity(cfg, mcfg, source, fold_of, fold), retrain_hint(mcfg.name, fold)
    if resume and preds_path.is_file():
        changed = identity_changes(read_preds(preds_path, hint)[1], identity)
        if changed:
            raise KitError(f"{preds_path}: this fold was trained on other inputs ({changed}); {hint}")
        console.print(f"{mcfg.name} fold {fold}: already done ({preds_path}), skipped")
        return preds_path
    ensure_writable_dir(out_dir)
    task, classes = source.task, list(source.classes)
    device = pick_device()
    torch.manual_seed(job_seed(cfg.seed, mcfg.name, fold, -1))
    model = create_model(mcfg, len(classes)).to(device)  # first: a weights problem fails before any caching
    if mcfg.loss == "ldam":
        model = use_cosine_head(model, mcfg)

    train_cache = cached_images(source.train, mcfg.image_size, cfg.paths.cache, cfg.data.on_bad_image)
    test_cache = cached_images(source.test, mcfg.image_size, cfg.paths.cache, cfg.data.on_bad_image)
    _warn_skipped(console, source, train_cache.ok, test_cache.ok)

    labels = source.train.labels
    train_idx = np.flatnonzero((fold_of != fold) & train_cache.ok)
    val_idx = np.flatnonzero(fold_of == fold)
    if mcfg.max_train_images and len(train_idx) > mcfg.max_train_images:
        rng = np.random.default_rng(job_seed(cfg.seed, mcfg.name, fold, -2))
        train_idx = np.sort(rng.choice(train_idx, mcfg.max_train_images, replace=False))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise KitError(f"{cfg.folds.path}: fold {fold} leaves {len(train_idx)} training and {len(val_idx)} held-out images; run `kit folds` again")
    val_ok = train_cache.ok[val_idx]
    y_train, y_val = labels[train_idx], labels[val_idx]

    weights = sample_weights(y_train, mcfg.sampler_power)
    target_prior = class_prior(y_train, task)

    model, step_model = prepare_model(model, mcfg)
    precision = pick_precision(device, mcfg.amp)
    ema = WeightEMA(model, mcfg.ema_decay) if mcfg.ema_decay > 0 else None
    optimizer = build_optimizer(model, mcfg, device)
    dataset = CachedDataset(
        train_cache.images, train_idx, y_train, mcfg.augment,
        randaugment_magnitude=mcfg.randaugment_magnitude, randaugment_ops=mcfg.randaugment_ops,
    )
    drop_last = len(train_idx) > mcfg.batch_size
    batches_per_epoch = len(train_idx) // mcfg.batch_size if drop_last else 1
    scheduler = _make_scheduler(optimizer, mcfg, math.ceil(batches_per_epoch / mcfg.grad_accum_steps))
    scaler = precision.grad_scaler()
    loader, sampler = make_train_loader(dataset, weights if mcfg.sampler_power > 0 else None, mcfg, device, drop_last, job_seed(cfg.seed, mcfg.name, fold, -3))
    state = FoldState()

    if resume and last_path.is_file():
        ckpt = read_checkpoint(last_path, LAST_KEYS, hint)
        changed = identity_changes(ckpt.get("identity"), identity)
        if changed:
            raise KitError(f"{last_path}: the checkpoint was made from other inputs ({changed}); {hint}")
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            if ema is not None:
                ema.module.load_state_dict(ckpt["ema"])
            state = FoldState(**ckpt["state"])
            torch.set_rng_state(ckpt["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise KitError(f"{last_path}: the checkpoint does not fit this variant ({type(exc).__name__}); {hint}") from None
        if state.best_epoch >= 0:  # read now: a damaged best.pt must stop the resume before it writes anything
            read_checkpoint(best_path, BEST_KEYS, hint)
        console.print(f"{mcfg.name} fold {fold}: resuming at epoch {state.epoch + 1}/{mcfg.epochs} from {last_path}")
    else:
        for stale in (preds_path, last_path, best_path):
            stale.unlink(missing_ok=True)

    trivial = trivial_baseline(y_val[val_ok], build_metric(cfg.metric), task=task)
    console.print(
        f"[bold]{mcfg.name}[/] fold {fold}/{cfg.folds.n_folds}: {len(train_idx)} train, {len(val_idx)} held-out, "
        f"{len(source.test)} test images at {mcfg.image_size} px on {device.type}; "
        f"sampler power {mcfg.sampler_power}, loss {mcfg.loss}{_recipe_extras(mcfg)}; trivial baseline on this fold {trivial:.4f}"
    )
    while not state.finished and state.epoch < mcfg.epochs:
        epoch = state.epoch
        t0 = time.perf_counter()
        if mcfg.freeze_epochs:
            _set_backbone_trainable(model, epoch >= mcfg.freeze_epochs)
            if epoch == mcfg.freeze_epochs:
                _scale_lr(optimizer, scheduler, mcfg.unfreeze_lr_factor)
        epoch_seed = job_seed(cfg.seed, mcfg.name, fold, epoch)
        torch.manual_seed(epoch_seed)
        sampler.set_epoch(epoch_seed)
        loss_fn = make_loss(mcfg, task, y_train, device, epoch)  # deferred re-weighting changes it per epoch
        train_prior = recipe_prior(y_train, weights, mcfg, task, epoch)
        train_loss = _train_epoch(
            step_model, loader, loss_fn, optimizer, scheduler, scaler, ema, mcfg, device, precision, console,
            f"{mcfg.name} f{fold} e{epoch + 1}/{mcfg.epochs}", make_mixer(mcfg, len(classes), task, epoch_seed),
        )
        eval_model = ema.module if ema is not None else model
        val_logits = predict_logits(eval_model, train_cache.images, val_idx, mcfg, device)
        with torch.no_grad():
            val_loss = float(loss_fn(torch.from_numpy(val_logits[val_ok]).to(device), torch.from_numpy(y_val[val_ok]).to(device)))
        metrics = evaluate(val_logits[val_ok], y_val[val_ok], task, classes, train_prior, target_prior, cfg, mcfg.temperature)
        if mcfg.scheduler == "plateau":
            scheduler.step(metrics["score"])
        improved = (metrics["score"], -val_loss) > (state.best_score, -state.best_val_loss)
        if improved:
            state.best_score, state.best_val_loss, state.best_epoch, state.bad_epochs = metrics["score"], val_loss, epoch, 0
            _save_torch(best_path, {"model": eval_model.state_dict(), "val_logits": torch.from_numpy(val_logits), "epoch": epoch})
        else:
            state.bad_epochs += 1
        elapsed = time.perf_counter() - t0
        state.seconds += elapsed
        state.history.append({
            "epoch": epoch + 1, "lr": float(optimizer.param_groups[0]["lr"]), "train_loss": train_loss["loss"],
            "val_loss": val_loss, **{f"val_{k}" if k != "trivial_baseline" else k: float(v) for k, v in metrics.items()},
            "images_per_s": train_loss["images_per_s"], "seconds": elapsed, "best": improved,
        })
        state.epoch = epoch + 1
        if state.bad_epochs >= mcfg.early_stopping_patience:
            state.finished = True
        console.print(
            f"  epoch {epoch + 1}: train loss {train_loss['loss']:.4f}, val loss {val_loss:.4f}, "
            f"score {metrics['score']:.4f} (trivial {metrics['trivial_baseline']:.4f}), macro-F1 {metrics['macro_f1']:.3f}, "
            f"AUC {metrics['auc']:.3f}{'  [best]' if improved else ''}"
            + (f"; early stop after {state.bad_epochs} epochs without gain" if state.finished else "")
        )
        write_text(out_dir / "metrics.csv", pd.DataFrame(state.history).to_csv(index=False))
        _save_torch(last_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
            "state": state.__dict__, "torch_rng": torch.get_rng_state(), "sampler_generator": sampler.generator.get_state(),
            "identity": identity,
        })
        if stop_after_epoch is not None and state.epoch >= stop_after_epoch and not state.finished and state.epoch < mcfg.epochs:
            console.print(f"{mcfg.name} fold {fold}: stopped after epoch {state.epoch}; continue with --resume")
            return None

    best = read_checkpoint(best_path, BEST_KEYS, hint, map_location=device)
    eval_model = ema.module if ema is not None else model
    eval_model.load_state_dict(best["model"])
    train_prior = recipe_prior(y_train, weights, mcfg, task, int(best["epoch"]))
    val_logits = best["val_logits"].cpu().numpy().astype(np.float32)
    decoupled = rebalance_classifier(
        eval_model, train_cache.images, train_idx, y_train, mcfg, task, device, job_seed(cfg.seed, mcfg.name, fold, -3), console
    )
    if decoupled is not None:  # cRT or τ-norm: a new head, so new held-out logits and the head's prior
        train_prior = decoupled
        val_logits = predict_logits(eval_model, train_cache.images, val_idx, mcfg, device)
        decoupled_metrics = evaluate(val_logits[val_ok], y_val[val_ok], task, classes, train_prior, target_prior, cfg, mcfg.temperature)
        console.print(
            f"  {'cRT' if mcfg.crt_epochs else 'τ-norm'} head: score {decoupled_metrics['score']:.4f} "
            f"(trivial {decoupled_metrics['trivial_baseline']:.4f}), macro-F1 {decoupled_metrics['macro_f1']:.3f}, AUC {decoupled_metrics['auc']:.3f}"
        )
    test_logits = predict_logits(eval_model, test_cache.images, np.arange(len(source.test)), mcfg, device)
    curves = training_curves_png(pd.DataFrame(state.history), out_dir / "curves.png", title=f"{mcfg.name} fold {fold}")
    summary = {
        "fold": fold, "best_epoch": int(best["epoch"]) + 1, "epochs_run": state.epoch, "seconds": state.seconds,
        **{k: v for k, v in state.history[int(best["epoch"])].items() if k.startswith("val_") or k == "trivial_baseline"},
        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "skipped_train_images": int((~train_cache.ok).sum()),
        "device": device.type, "train_prior_basis": prior_basis(mcfg),
    }
    if decoupled is not None:
        summary.update({f"val_{k}" if k != "trivial_baseline" else k: float(v) for k, v in decoupled_metrics.items()})
        summary["val_score_before_decoupling"] = float(state.history[int(best["epoch"])]["val_score"])
    arrays = {
        "classes": np.asarray(classes, dtype=str), "val_ids": np.asarray(source.train.ids[val_idx], dtype=str),
        "val_logits": val_logits,
        "test_ids": np.asarray(source.test.ids, dtype=str), "test_logits": test_logits,
        "train_prior": train_prior, "target_prior": target_prior, "fold": np.int64(fold),
        "identity": np.asarray(json.dumps(identity)), "metrics": np.asarray(json.dumps(summary)),
    }
    atomic_write(preds_path, lambda f: np.savez(f, **arrays))
    console.print(
        f"{mcfg.name} fold {fold}: best epoch {summary['best_epoch']} score {summary['val_score']:.4f} "
        f"(trivial {summary['trivial_baseline']:.4f}); wrote {preds_path}; curves {curves}"
    )
    return preds_path


def _scale_lr(optimizer, scheduler, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] *= factor
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]


def _train_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, ema, mcfg, device, precision: Precision, console, description, mixer=None) -> dict:
    """One epoch; the optimizer steps every `grad_accum_steps` batches (the last group may be shorter: its
    loss is averaged over the batches it has, as in timm's train.py). The loss is summed on the device and
    read back (one host sync) every SYNC_EVERY steps and at the end: a `.item()` per step would make a GPU
    wait for every step before the next is queued. A non-finite loss is still caught within SYNC_EVERY
    steps, before any checkpoint is written."""
    model.train()
    loss_sum, seen, steps = torch.zeros((), dtype=torch.float64, device=device), 0, len(loader)
    accum = mcfg.grad_accum_steps
    t0 = time.perf_counter()
    progress = make_progress(console, TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"), refresh_per_second=2)
    optimizer.zero_grad(set_to_none=True)
    with progress:
        task = progress.add_task(description, total=steps, loss=float("nan"), ips=0.0)
        for step, (x, y) in enumerate(loader, 1):
            x = to_model_input(x.to(device, non_blocking=True), mcfg.in_chans, mcfg.channels_last)
            y = y.to(device, non_blocking=True)
            if mixer is not None:
                x, y = mixer(x, y)
            with precision.autocast():
                logits = model(x)
            loss = loss_fn(logits, y)
            group_start = (step - 1) - (step - 1) % accum
            group_size = min(accum, steps - group_start)
            scaler.scale(loss / group_size).backward()
            if step == group_start + group_size:
                if mcfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), mcfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                if mcfg.scheduler == "cosine":
                    scheduler.step()
            loss_sum += loss.detach().double() * len(x)
            seen += len(x)
            if step % SYNC_EVERY == 0 or step == steps:
                total_loss = loss_sum.item()
                if not math.isfinite(total_loss):
                    raise KitError(f"variant '{mcfg.name}': training loss became {total_loss}; lower lr in {model_file(mcfg)}")
                progress.update(task, completed=step, loss=total_loss / seen, ips=seen / max(time.perf_counter() - t0, 1e-9))
    total_loss = loss_sum.item()
    return {"loss": total_loss / max(seen, 1), "images_per_s": seen / max(time.perf_counter() - t0, 1e-9)}


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


