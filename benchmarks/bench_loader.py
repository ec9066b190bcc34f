"""Loader speed: the kit's uint8 cache loader vs the published per-file pipeline, same machine, same run.

Kit: rows of the uint8 memmap cache at 256 px → the variant's albumentations on uint8 (H, W) →
uint8 batch; float, /255, 3 channels and ImageNet normalization then happen on the device (here the
CPU, and counted, so the comparison is conservative). Per-file (the published notebooks' way): PIL
open → convert RGB → resize to 256 → the same albumentations on RGB → float normalize on the CPU.
Source images are 512 px PNGs (real X-rays are larger still, which only favours the cache). Both
loaders stack batches with numpy (see kit.training.dataset.collate_uint8), so the ratio measures the data path.
Target: kit ≥ 5× the per-file loader at 256 px. Scale with KIT_BENCH_LOADER_N.

Feeding a GPU: the kit's training loader (`make_train_loader`, the report's "moderate" augmentation
at 256 px, uint8 out; on a GPU the float conversion and normalization run on the device) is timed
in this process with one torch thread and no workers: images/s per CPU core. Loader workers are
independent processes, so N workers give about N times that; cores_to_feed_h100 = the GPU's
images/s divided by the per-core rate. The H100 figure is an estimate, not a measurement (no GPU
here): timm publishes convnext_tiny training at 819 img/s at 224 px on an RTX 3090 (AMP,
channels_last, batch 256; results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv in
huggingface/pytorch-image-models); an H100 SXM has 3.58x the 3090's memory bandwidth (3.35 vs
0.936 TB/s) and ConvNeXt's depthwise convolutions and LayerNorms are bandwidth-bound, so
819 x 3.58 = 2,932 img/s at 224 px, x (224/256)^2 = 2,245 img/s at 256 px. Override it with
KIT_BENCH_H100_IMAGES_PER_S once measured.

Measured here (2 shared CPU cores, 800 images, 512 px PNGs): the training loader gives 4,094
images per CPU-second at 256 px with "moderate" augmentation (5,074 per wall second with one
torch thread; OpenCV uses a second thread), so 2,244 / 4,094 -> 1 loader core keeps the estimated
H100 fed (plus the training process's own core); the kit's cache loader is 26x the per-file one.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from kit.config import CompetitionConfig, DataConfig, PathsConfig, load_competition, load_model
from kit.data.cache import cached_images
from kit.data.sources import open_source
from kit.data.synth import generate
from kit.training.augment import build_augment
from kit.training.dataset import CachedDataset, collate_uint8, to_model_input
from kit.training.loader import make_train_loader

H100_CONVNEXT_TINY_256_IMAGES_PER_S = 819 * (3.35 / 0.936) * (224 / 256) ** 2  # estimate, see the module docstring

VARIANT = "convnext_tiny_256"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class PerFileDataset(Dataset):
    """The published pipeline: decode + resize every PNG on every access, normalize on the CPU."""

    def __init__(self, paths: list[Path], size: int, augment: str):
        self.paths, self.size, self.pipeline = paths, size, build_augment(augment)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = np.asarray(image)
        if self.pipeline is not None:
            array = self.pipeline(image=array)["image"]
        array = (array.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


def _numpy_collate(batch: list[torch.Tensor]) -> torch.Tensor:
    """The same cheap numpy stacking the kit uses, so the comparison measures decoding, not collation."""
    return torch.from_numpy(np.stack([t.numpy() for t in batch]))


def _images_per_s(loader, n_images: int, passes: int, to_input=None) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if to_input is not None:
                x = to_input(x)
    return n_images * passes / (time.perf_counter() - start)


def main() -> dict:
    n = int(os.environ.get("KIT_BENCH_LOADER_N", "400"))
    repo_cfg = load_competition("configs/competition.toml")
    mcfg = load_model(VARIANT, repo_cfg)
    size, batch = mcfg.image_size, mcfg.batch_size
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", n_train=n, n_test=20, size=512, seed=0)
        cfg = CompetitionConfig(
            data=DataConfig(dir=root / "data", patient_column="patient_id"), paths=PathsConfig(cache=root / "cache"), source_file=root / "bench.toml"
        )
        source = open_source(cfg)
        start = time.perf_counter()
        cache = cached_images(source.train, size, cfg.paths.cache)
        cache_build_s = time.perf_counter() - start
        kit_ds = CachedDataset(cache.images, np.arange(n), source.train.labels, mcfg.augment, seed=0)
        kit_loader = DataLoader(kit_ds, batch_size=batch, shuffle=True, num_workers=0, collate_fn=collate_uint8)
        per_file_loader = DataLoader(
            PerFileDataset(list(source.train.paths), size, mcfg.augment), batch_size=batch, shuffle=True, num_workers=0, collate_fn=_numpy_collate
        )
        _images_per_s(kit_loader, n, 1)  # warm the page cache for both, so neither pays first-read I/O
        _images_per_s(per_file_loader, min(n, 64), 1)
        kit_uint8 = _images_per_s(kit_loader, n, 3)
        kit_normalized = _images_per_s(kit_loader, n, 3, lambda x: to_model_input(x, 3, True))
        per_file = _images_per_s(per_file_loader, n, 2)
        train_loader, sampler = make_train_loader(kit_ds, None, mcfg.model_copy(update={"num_workers": 0}), torch.device("cpu"), drop_last=False, seed=0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sampler.set_epoch(1)
            _images_per_s(train_loader, n, 1)
            cpu_start = time.process_time()
            per_core_wall = _images_per_s(train_loader, n, 3)
            per_core_cpu = 3 * n / (time.process_time() - cpu_start)  # all threads' CPU (OpenCV may use more than one)
            per_core = min(per_core_wall, per_core_cpu)
        finally:
            torch.set_num_threads(threads)
    h100 = float(os.environ.get("KIT_BENCH_H100_IMAGES_PER_S", H100_CONVNEXT_TINY_256_IMAGES_PER_S))
    result = {
        "variant": VARIANT,
        "augment": mcfg.augment,
        "image_size": size,
        "source_png_size": 512,
        "images": n,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cache_build_seconds": round(cache_build_s, 2),
        "kit_uint8_images_per_s": round(kit_uint8, 1),
        "kit_with_normalize_images_per_s": round(kit_normalized, 1),
        "per_file_images_per_s": round(per_file, 1),
        "speedup_uint8": round(kit_uint8 / per_file, 2),
        "speedup_with_normalize": round(kit_normalized / per_file, 2),
        "target_speedup": 5.0,
        "train_loader_images_per_wall_s_one_thread": round(per_core_wall, 1),
        "train_loader_images_per_cpu_s": round(per_core_cpu, 1),
        "train_loader_images_per_s_per_core": round(per_core, 1),
        "h100_convnext_tiny_256_images_per_s_assumed": round(h100),
        "cores_to_feed_h100": math.ceil(h100 / per_core),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


if __name__ == "__main__":
    main()
