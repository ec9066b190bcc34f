"""The training loader: uint8 rows of the image cache, augmented on uint8, normalized on the device."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from kit.training.augment import augment_image, build_augment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CachedDataset(Dataset):
    """uint8 (1, H, W) tensors from the memmapped cache, augmented on uint8.

    The augmentation pipeline is seeded once per epoch (`set_epoch_seed`) and per worker
    (`worker_init`): with the seeded sampler's fixed order, every epoch's draws are reproducible.
    """

    def __init__(
        self, images: np.ndarray, indices: np.ndarray, labels: np.ndarray, augment: str, *, seed: int = 0,
        randaugment_magnitude: int = 0, randaugment_ops: int = 2,
    ):
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        soft = np.asarray(labels).dtype.kind == "f"  # a second round's soft pseudo-labels stay probabilities
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32 if soft else np.uint8))
        self.pipeline = build_augment(augment, randaugment_magnitude, randaugment_ops)
        self.set_epoch_seed(seed)

    def set_epoch_seed(self, seed: int) -> None:
        self.seed = seed
        if self.pipeline is not None:
            self.pipeline.set_random_seed(seed)

    def worker_init(self, worker_id: int) -> None:
        if self.pipeline is not None:
            self.pipeline.set_random_seed((self.seed * 1_000_003 + worker_id + 1) & 0x7FFFFFFF)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = augment_image(self.pipeline, np.asarray(self.images[self.indices[j]]))
        return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))[None], self.labels[j]


def collate_uint8(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a batch with numpy: torch.stack's threaded copy is up to 100× slower for small uint8
    tensors on a busy 2-core machine (measured: 134 ms vs 0.2 ms for 32 images at 256 px)."""
    images = torch.from_numpy(np.stack([image.numpy() for image, _ in batch]))
    labels = torch.from_numpy(np.stack([label.numpy() for _, label in batch]))
    return images, labels


def to_model_input(x: torch.Tensor, in_chans: int, channels_last: bool) -> torch.Tensor:
    """uint8 (B, 1, H, W) on the device → normalized float (B, in_chans, H, W): done on the device,
    so the loader only moves bytes. One fused multiply-add: (x/255 − mean)/std = x·scale + shift."""
    mean = torch.tensor(IMAGENET_MEAN if in_chans == 3 else (sum(IMAGENET_MEAN) / 3,) * in_chans, device=x.device)
    std = torch.tensor(IMAGENET_STD if in_chans == 3 else (sum(IMAGENET_STD) / 3,) * in_chans, device=x.device)
    scale, shift = (1.0 / (255.0 * std)).view(1, -1, 1, 1), (-mean / std).view(1, -1, 1, 1)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = x.expand(-1, in_chans, -1, -1).to(dtype=torch.float32, memory_format=memory_format)
    return x.mul_(scale).add_(shift)
