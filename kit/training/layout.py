"""Where a (variant, fold) job keeps its files: light, so readers of them need not import the trainer."""

from __future__ import annotations

from pathlib import Path

from kit.config import CompetitionConfig

PREDS_FILE = "preds.npz"  # the job's result: held-out and test logits, priors, identity
LAST_FILE = "last.pt"  # full training state, written every epoch (resume)
BEST_FILE = "best.pt"  # weights and held-out logits of the best epoch


def run_dir(cfg: CompetitionConfig, variant: str, fold: int) -> Path:
    return Path(cfg.paths.runs) / variant / f"fold{fold}"
