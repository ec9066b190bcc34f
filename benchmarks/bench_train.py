"""Training throughput per variant: images/s of real training steps (the kit's loader, loss, AdamW)
on this machine (CPU here; the same code uses CUDA + AMP where present). Pretrained weights are not
needed for speed, so every variant is built with pretrained = false. A few batches per variant;
KIT_BENCH_TRAIN_STEPS sets how many are timed (after one warm-up step).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from kit.config import CompetitionConfig, DataConfig, PathsConfig, available_variants, load_competition, load_model
from kit.data.cache import cached_images
from kit.data.sources import open_source
from kit.data.synth import generate
from kit.models import create_model
from kit.training.dataset import CachedDataset, collate_uint8, to_model_input
from kit.training.device import autocast
from kit.training.losses import make_loss


def _throughput(mcfg, source, cache_dir: Path, steps: int, device: torch.device) -> dict:
    cache = cached_images(source.train, mcfg.image_size, cache_dir)
    n_classes = len(source.classes)
    batch = min(mcfg.batch_size, 64 if mcfg.image_size <= 64 else 16)
    torch.manual_seed(0)
    model = create_model(mcfg, n_classes).to(device)
    if mcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    labels = source.train.labels
    loss_fn = make_loss(mcfg, source.task, labels, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=mcfg.lr)
    dataset = CachedDataset(cache.images, np.arange(len(labels)), labels, mcfg.augment)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate_uint8)
    model.train()
    seen, start, it = 0, None, iter(loader)
    for step in range(steps + 1):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if step == 1:
            start = time.perf_counter()
        x = to_model_input(x.to(device), mcfg.in_chans, mcfg.channels_last)
        with autocast(device, mcfg):
            logits = model(x)
        loss = loss_fn(logits, y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 1:
            seen += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"image_size": mcfg.image_size, "batch_size": batch, "timed_steps": steps, "images_per_s": round(seen / (time.perf_counter() - start), 1)}


def main() -> dict:
    steps = int(os.environ.get("KIT_BENCH_TRAIN_STEPS", "3"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repo_cfg = load_competition("configs/competition.toml")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", n_train=200, n_test=20, size=256, seed=0)
        cfg = CompetitionConfig(
            data=DataConfig(dir=root / "data", patient_column="patient_id"), paths=PathsConfig(cache=root / "cache"), source_file=root / "bench.toml"
        )
        source = open_source(cfg)
        for name in available_variants(repo_cfg):
            mcfg = load_model(name, repo_cfg)
            if mcfg.loss == "bce" and source.task == "multi-class":
                mcfg = mcfg.model_copy(update={"loss": "ce"})  # speed only: the multi-class synthetic data
            mcfg = mcfg.model_copy(update={"pretrained": False, "weights": None})
            results[name] = _throughput(mcfg, source, root / "cache", steps, device)
            print(f"{name}: {results[name]}", flush=True)
    return {
        "device": device.type,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "variants": results,
    }


if __name__ == "__main__":
    main()
