"""Run a finished ensemble on images: every fold model of every member, then the blend `kit blend` fitted.

Nothing is decided here. The members' logits come from the training code's own preprocessing (the image
cache: decode, grayscale, resize) and its training core (`kit.training.trainer.load_trainer` and
`Trainer.predict`, with each variant's TTA), through `fold_logits`, the one seam to it. The blend is the very
object `kit blend` fitted, rebuilt from its record (`kit.ensemble.record`), and its test aggregation
(`kit.ensemble.aggregate`) turns the fold models' logits into the prediction. So on the config's own test
set the logits equal the OOF file's `test_logits` and the CSV equals `kit blend`'s byte for byte.

What is read, and refused with one line when missing or not matching:
- `oof/blend_<name>.json` (its "fitted_blend"), or with `variant`: `oof/<variant>.decision.json` of `kit calibrate`;
- each member's `oof/<m>.npz` + `.json` (its model config, folds and seeds; the blend's fingerprint of it);
- each fold's weights, `runs/<m>/[seed<s>/]fold<k>/decoupled.pt` after cRT/τ-norm, else `best.pt`, whose
  held-out logits must be the OOF file's rows of that fold (a fold retrained since is caught).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import TextColumn

from kit.artifacts import OOF, load_oof, oof_fingerprint
from kit.config import CompetitionConfig, ModelConfig
from kit.data.cache import cached_images
from kit.data.common import Split
from kit.decision.calibration import Calibrator
from kit.decision.metrics import trivial_prediction
from kit.decision.rules import Decision
from kit.ensemble.aggregate import TEST_AGGREGATION, aggregate_predict
from kit.ensemble.pipeline import Blend
from kit.ensemble.record import blend_from_record
from kit.errors import KitError
from kit.paths import BEST_FILE, DECOUPLED_FILE, blend_oof_npz, decision_json, oof_in, oof_meta_json, oof_npz, run_dir, seed_oof_stem
from kit.records import read_json
from kit.training.device import pick_device
from kit.training.identity import BEST_KEYS, read_checkpoint
from kit.training.trainer import Trainer, load_trainer


def fold_logits(trainer: Trainer, images: np.ndarray, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The seam to the training core: one fold model's (len(rows), C) float32 logits, TTA included, exactly as
    training predicted its held-out and test rows (`Trainer.predict`)."""
    return trainer.predict(images, rows, batch_size=batch_size)


@dataclass(frozen=True)
class MemberModels:
    """One member as predict runs it: its training config and, per fold, one weights file per seed."""

    name: str
    mcfg: ModelConfig
    weights: list[list[Path]]  # [fold][seed]
    n_classes: int

    @property
    def n_models(self) -> int:
        return sum(len(w) for w in self.weights)


@dataclass(frozen=True)
class Plan:
    """What predict applies: the fitted blend, how its fold models meet, and the members to run."""

    target: str  # "blend 'x'" or "variant 'v'": for messages
    blend: Blend
    aggregation: str
    classes: list[str]
    members: list[MemberModels]
    trivial_class: int | None = None


# --- what training and blending wrote -----------------------------------------------------------


def _read(path: Path) -> dict | None:
    return read_json(path, "`kit train` or `kit blend`")


def blend_record_path(cfg: CompetitionConfig, name: str) -> Path:
    """oof/blend_<name>.json: the blend's provenance, with the fitted blend under "fitted_blend"."""
    return oof_meta_json(blend_oof_npz(cfg, name))


def blend_plan(cfg: CompetitionConfig, name: str) -> Plan:
    """The blend `kit blend --name name` fitted, and its members' fold models, all checked."""
    path = blend_record_path(cfg, name)
    meta = _read(path)
    if meta is None:
        raise KitError(f"{path}: not found; run `kit blend --name {name}` first (predict applies the blend it fitted)")
    record = meta.get("fitted_blend")
    if not isinstance(record, dict):
        raise KitError(f"{path}: has no fitted blend (written by an older `kit blend`); run `kit blend --name {name}` again")
    try:
        blend = blend_from_record(record)
        classes = [str(c) for c in record["classes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise KitError(f"{path}: the fitted blend is damaged ({exc}); run `kit blend --name {name}` again") from None
    fingerprints = meta.get("member_oof_fingerprints") or {}
    members = []
    for member, calibration in zip(blend.members, blend.calibrations):
        oof, models = member_models(cfg, member, classes, where=f"blend '{name}'")
        if fingerprints.get(member) != oof_fingerprint(oof):
            raise KitError(f"{oof_npz(cfg, member)}: changed since blend '{name}' was fitted (retrained?); "
                           f"run `kit blend --name {name}` again")
        _check_calibration(calibration, oof, member, path)
        members.append(models)
    return Plan(f"blend '{name}'", blend, str(record.get("test_aggregation", TEST_AGGREGATION)), classes, members,
                record.get("trivial_class"))


def variant_plan(cfg: CompetitionConfig, variant: str) -> Plan:
    """One variant alone under its own decision (`kit calibrate`'s), as a blend of one member: the member's
    calibration is the decision's, and the decision reads the calibrated log-probabilities unchanged."""
    path = decision_json(oof_npz(cfg, variant))
    if not path.is_file():
        raise KitError(f"{path}: not found; run `kit calibrate --variant {variant}` first (predict applies the decision it chose)")
    decision = Decision.load(path)
    oof, models = member_models(cfg, variant, list(decision.classes), where=f"{path}")
    if decision.fitted_on != oof_fingerprint(oof):
        raise KitError(f"{path}: fitted on another {oof_npz(cfg, variant)} (retrained since?); run `kit calibrate --variant {variant}` again")
    target = decision.target_prior
    identity = Calibrator(decision.task, 1.0, 0.0, target, target)  # log_probs(lp) = lp: the decision sees the member's calibration
    blend = Blend((variant,), (decision.calibrator,), np.ones(1), decision.with_(calibrator=identity))
    return Plan(f"variant '{variant}'", blend, TEST_AGGREGATION, list(decision.classes), [models])


def member_models(cfg: CompetitionConfig, member: str, classes: list[str], *, where: str) -> tuple[OOF, MemberModels]:
    """A member's OOF and fold weights: its model config from the OOF's JSON, every fold's weights file present
    and holding the OOF's held-out logits of that fold (so it is the model whose logits were blended)."""
    oof_path = oof_npz(cfg, member)
    if not oof_path.is_file():
        raise KitError(f"{oof_path}: not found; {where} has member '{member}': train it (`kit train --variant {member}`) or restore the file")
    oof = load_oof(oof_path)
    meta = _read(oof_meta_json(oof_path)) or {}
    if "model_config" not in meta or "competition_config" not in meta:
        raise KitError(f"{oof_path.with_suffix('.json')}: no model config: member '{member}' was not trained by `kit train`, "
                       "so there are no fold models to run; blend only trained variants for `kit predict`")
    if oof.classes.astype(str).tolist() != classes:
        raise KitError(f"{oof_path}: classes {oof.classes.astype(str).tolist()} differ from {where}'s {classes}; "
                       f"retrain or re-run the blend so both use one class order")
    try:
        mcfg = trained_model_config(meta["model_config"])
        train_seed = int(meta["competition_config"]["seed"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KitError(f"{oof_path.with_suffix('.json')}: unreadable model config ({str(exc).splitlines()[0]}); retrain `{member}`") from None
    seeds = meta.get("seeds") or [None]
    run_cfg = cfg.model_copy(update={"seed": train_seed})
    weights = []
    for k in range(oof.n_folds):
        per_seed = []
        for seed in seeds:
            folder = run_dir(run_cfg, member, k, seed)  # the competition seed shares the variant's own folder
            per_seed.append(_fold_weights(folder, mcfg, member, k))
        weights.append(per_seed)
    return oof, MemberModels(member, mcfg, weights, len(classes))


def trained_model_config(dumped: dict) -> ModelConfig:
    """A variant's config as its OOF JSON recorded it (overrides such as --epochs included); keys at their
    default are left unset, as in the TOML it came from (some checks concern only keys a file sets)."""
    defaults = ModelConfig().model_dump(mode="json")
    return ModelConfig.model_validate({k: v for k, v in dumped.items() if k not in defaults or defaults[k] != v})


def _fold_weights(folder: Path, mcfg: ModelConfig, member: str, fold: int) -> Path:
    decoupled = mcfg.crt_epochs > 0 or mcfg.tau_norm > 0
    path = folder / (DECOUPLED_FILE if decoupled else BEST_FILE)
    if not path.is_file():
        why = " (a cRT/τ-norm variant trained by an older kit keeps no re-balanced head)" if decoupled and (folder / BEST_FILE).is_file() else ""
        raise KitError(f"{path}: fold {fold} checkpoint of '{member}' not found{why}; retrain it (`kit train --variant {member} --fold {fold}`) "
                       "or restore the runs folder")
    return path


def _check_calibration(calibration: Calibrator, oof: OOF, member: str, record: Path) -> None:
    if not np.array_equal(np.asarray(calibration.train_prior, dtype=np.float64), np.asarray(oof.train_prior, dtype=np.float64)):
        raise KitError(f"{record}: member '{member}''s calibration was fitted for another training prior than "
                       f"oof/{member}.npz's; run `kit blend` again")


def check_weights_match(member: MemberModels, oof_path: Path, fold: int, seed_index: int, val_logits: np.ndarray) -> None:
    """The checkpoint's held-out logits must be the OOF's rows of its fold (per seed: the seed's own OOF file)."""
    seeds = [None] if len(member.weights[fold]) == 1 else None
    if seeds is None:  # a variant with seeds: its OOF is the mean; compare with the seed's own file when present
        meta = _read(oof_path.with_suffix(".json")) or {}
        seed = (meta.get("seeds") or [])[seed_index]
        oof_path = oof_in(oof_path.parent, seed_oof_stem(member.name, seed))
        if not oof_path.is_file():
            return
    oof = load_oof(oof_path)
    rows = oof.logits[oof.fold == fold]
    if rows.shape != val_logits.shape or not np.array_equal(rows, val_logits):
        raise KitError(f"{member.weights[fold][seed_index]}: this checkpoint's held-out logits are not {oof_path}'s fold {fold} rows "
                       f"(the fold was retrained after the OOF was assembled?); run `kit train --variant {member.name} --resume` and blend again")


# --- running the models -------------------------------------------------------------------------


def load_fold_model(member: MemberModels, path: Path, device: torch.device, task: str) -> tuple[Trainer, np.ndarray]:
    """The fold's network as training built it, with the checkpoint's weights (`load_trainer`: nothing is
    downloaded), and the checkpoint's held-out logits."""
    trainer = load_trainer(member.mcfg, n_classes=member.n_classes, checkpoint=path, task=task, device=device)
    ckpt = read_checkpoint(path, BEST_KEYS, f"retrain it: `kit train --variant {member.name}`", map_location="cpu")
    return trainer, ckpt["val_logits"].numpy().astype(np.float32)


class TimeBudget:
    """--max-minutes: after each batch, the time so far plus the rest at the rate measured so far; over the
    budget, stop now with one line (a notebook is better told early than killed at its limit)."""

    def __init__(self, minutes: float | None, total_images: int, clock: Callable[[], float] = time.perf_counter):
        self.limit = None if minutes is None else 60.0 * minutes
        self.total, self.clock, self.start, self.done = total_images, clock, clock(), 0
        self.run_start: float | None = None

    def started(self) -> None:
        if self.run_start is None:
            self.run_start = self.clock()

    def rate(self) -> float:
        """Images per second since the models started."""
        return self.done / max(self.clock() - (self.run_start if self.run_start is not None else self.start), 1e-9)

    def advance(self, n: int) -> None:
        self.done += n
        if self.limit is None or self.done == 0:
            return
        now, rate = self.clock(), self.rate()
        projected = (now - self.start) + (self.total - self.done) / rate
        if projected > self.limit and self.done < self.total:
            raise KitError(
                f"kit predict: stopped after {self.done} of {self.total} image passes: at {rate:.1f} images/s the whole run would take about "
                f"{projected / 60:.1f} min, more than --max-minutes {self.limit / 60:g}; use a faster device, a larger --batch-size or fewer members"
            )


def member_logits(member: MemberModels, images: np.ndarray, device: torch.device, *, task: str, batch_size: int | None, oof_path: Path | None,
                  on_batch: Callable[[int], None]) -> np.ndarray:
    """(K, m, C) float32: each fold model's logits on `images` (the seeds' mean per fold, as `kit train` assembles it)."""
    batch = batch_size or max(member.mcfg.batch_size, 64)
    rows = np.arange(len(images))
    per_fold = []
    for k, paths in enumerate(member.weights):
        per_seed = []
        for s, path in enumerate(paths):
            trainer, val_logits = load_fold_model(member, path, device, task)
            if oof_path is not None:
                check_weights_match(member, oof_path, k, s, val_logits)
            chunks = []
            for start in range(0, len(rows), batch):  # one batch per call: the same batches as one call over all rows
                chunks.append(fold_logits(trainer, images, rows[start : start + batch], batch))
                on_batch(len(chunks[-1]))
            per_seed.append(np.concatenate(chunks) if chunks else np.zeros((0, member.n_classes), np.float32))
            del trainer
        if len(per_seed) == 1:
            per_fold.append(per_seed[0])
        else:  # kit.training.assemble.seed_mean: the mean in float64, stored as float32
            per_fold.append(np.mean(np.stack([z.astype(np.float64) for z in per_seed]), axis=0).astype(np.float32))
    return np.stack(per_fold)


def run_plan(plan: Plan, split: Split, cfg: CompetitionConfig, *, batch_size: int | None = None, max_minutes: float | None = None,
             console: Console | None = None, check_weights: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """((m, C) uint8 prediction, {member: (K, m, C) logits}) for the images of `split`."""
    from kit.progress import make_progress

    console = console or Console()
    device = pick_device()
    total = sum(m.n_models for m in plan.members) * len(split)
    budget = TimeBudget(max_minutes, total)
    logits: dict[str, np.ndarray] = {}
    rate = TextColumn("{task.fields[rate]} images/s")
    with make_progress(console, rate) as progress:
        bar = progress.add_task(f"predict {plan.target}: {len(split)} images × {sum(m.n_models for m in plan.members)} models on {device.type}",
                                total=total, rate="-")

        def on_batch(n: int) -> None:
            budget.advance(n)
            progress.update(bar, advance=n, rate=f"{budget.rate():.1f}")

        for member in plan.members:
            cache = cached_images(split, member.mcfg.image_size, cfg.paths.cache, cfg.data.on_bad_image)
            budget.started()
            oof_path = oof_npz(cfg, member.name) if check_weights else None
            logits[member.name] = member_logits(member, cache.images, device, task=plan.blend.decision.task, batch_size=batch_size,
                                                oof_path=oof_path, on_batch=on_batch)
    if plan.trivial_class is not None:  # the blend had no skill: `kit blend` submitted the majority class (multi-label: none)
        pred = trivial_prediction(np.zeros((len(split), len(plan.classes)), dtype=np.uint8), plan.blend.decision.task, plan.trivial_class)
    else:
        pred = aggregate_predict(plan.blend, [logits[m] for m in plan.blend.members], how=plan.aggregation)
    return pred, logits

