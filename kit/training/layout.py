"""The config a seed job trains under (where its files lie is kit.paths.run_dir)."""

from __future__ import annotations

from kit.config import CompetitionConfig


def seeded_config(cfg: CompetitionConfig, seed: int | None) -> CompetitionConfig:
    """The config a seed job trains under: its seed replaces the competition's in every draw and in the identity."""
    return cfg if seed is None or seed == cfg.seed else cfg.model_copy(update={"seed": seed})
