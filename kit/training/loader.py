"""The training DataLoader of one job: built once, re-seeded per epoch, its workers kept between epochs.

The sampler yields (epoch seed, row) pairs, so a loader worker that outlives an epoch learns the
new epoch's seed from the first row it is asked for and re-seeds its augmentation exactly as a
freshly started worker would (`CachedDataset.set_epoch_seed` + `worker_init`). Every epoch thus
draws the same samples and augmentations whether workers persist or not, and `--resume` stays
bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler, get_worker_info

from kit.config import ModelConfig
from kit.training.dataset import CachedDataset, collate_uint8


class EpochSampler(Sampler):
    """Shuffled rows (or rows drawn with replacement by `weights`), tagged with the epoch's seed."""

    def __init__(self, n: int, weights: np.ndarray | None = None):
        self.generator = torch.Generator()
        self.seed = 0
        if weights is None:
            self.inner: Sampler = RandomSampler(range(n), generator=self.generator)
        else:
            self.inner = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), n, replacement=True, generator=self.generator)

    def set_epoch(self, seed: int) -> None:
        self.seed = seed
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = self.seed
        return ((seed, int(j)) for j in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class EpochSeededDataset(Dataset):
    """A CachedDataset indexed by (epoch seed, row): re-seeds the augmentation when the epoch changes."""

    def __init__(self, dataset: CachedDataset):
        self.dataset = dataset
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        seed, row = item
        if seed != self._seed:
            self._seed = seed
            self.dataset.set_epoch_seed(seed)
            worker = get_worker_info()
            if worker is not None:
                self.dataset.worker_init(worker.id)
        return self.dataset[row]


def make_train_loader(
    dataset: CachedDataset, weights: np.ndarray | None, mcfg: ModelConfig, device: torch.device, drop_last: bool, seed: int
) -> tuple[DataLoader, EpochSampler]:
    """The job's loader and its sampler (call `sampler.set_epoch(seed)` before each epoch).

    With workers, the loader draws its workers' base seed from its own generator rather than the
    global RNG: the global stream (dropout) is then the same whether workers were started this
    epoch or kept from the last one, which keeps a resumed run identical to an uninterrupted one.
    """
    sampler = EpochSampler(len(dataset), weights)
    workers = mcfg.num_workers
    loader = DataLoader(
        EpochSeededDataset(dataset), batch_size=mcfg.batch_size, sampler=sampler, drop_last=drop_last,
        num_workers=workers, collate_fn=collate_uint8, pin_memory=device.type == "cuda",
        persistent_workers=mcfg.persistent_workers and workers > 0,
        prefetch_factor=mcfg.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed) if workers > 0 else None,
    )
    return loader, sampler
