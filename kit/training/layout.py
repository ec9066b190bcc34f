"""Where a (variant, fold) job keeps its files: light, so readers of them need not import the trainer."""

from __future__ import annotations

from pathlib import Path

from kit.config import CompetitionConfig

PREDS_FILE = "preds.npz"  # the job's result: held-out and test logits, priors, identity
LAST_FILE = "last.pt"  # full training state, written every epoch (resume)
BEST_FILE = "best.pt"  # weights and held-out logits of the best epoch
DECOUPLED_FILE = "decoupled.pt"  # after cRT/τ-norm: the re-balanced weights preds.npz's logits came from (else best.pt's are)


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
