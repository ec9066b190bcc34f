"""Every random draw of a training job is seeded from (competition seed, variant, fold, slot).

Epoch e draws from slot e (its sampler, augmentation, dropout and mixer), so a resumed epoch draws
exactly what it would have. The job's one-off draws use the negative slots below. Their values are
history: each is part of the bytes of every run made so far, so they stay as they are (the loader
and the cRT head share -3 for that reason).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MODEL_INIT_SLOT = -1  # the model's initial weights (and an LDAM cosine head's)
TRAIN_SUBSET_SLOT = -2  # which training images `max_train_images` keeps
LOADER_SLOT = -3  # the loader workers' base seed
CRT_HEAD_SLOT = -3  # the cRT head's re-initialisation and its sampler (shares -3 with the loader, see above)


def job_seed(seed: int, variant: str, fold: int, slot: int) -> int:
    """A 31-bit seed per (seed, variant, fold, slot)."""
    digest = hashlib.sha256(f"{seed}/{variant}/{fold}/{slot}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class _NamedSlot:
    """A seed of JobSeeds read by name: `seeds.loader` is the job's seed of LOADER_SLOT."""

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def __get__(self, seeds: JobSeeds | None, owner: type | None = None) -> int:
        if seeds is None:  # looked up on the class itself
            return self  # type: ignore[return-value]
        return job_seed(seeds.seed, seeds.variant, seeds.fold, self.slot)


@dataclass(frozen=True)
class JobSeeds:
    """The seeds of one (variant, fold) job, by name."""

    seed: int
    variant: str
    fold: int

    def epoch(self, epoch: int) -> int:
        """The seed of epoch `epoch`'s draws (its sampler, augmentation, dropout and mixer)."""
        return job_seed(self.seed, self.variant, self.fold, epoch)

    model_init = _NamedSlot(MODEL_INIT_SLOT)
    train_subset = _NamedSlot(TRAIN_SUBSET_SLOT)
    loader = _NamedSlot(LOADER_SLOT)
    crt_head = _NamedSlot(CRT_HEAD_SLOT)
