"""`kit predict` throughput against a plain `model.eval()` loop over the same checkpoints and images, same run.

A tiny variant (the demo's chestmnist_cnn at 64 px, one epoch, 3 folds) is trained on synthetic data and
calibrated; then both paths predict the same test PNGs with the same three fold checkpoints, batch size and
flip TTA, on the CPU:
- kit: `kit.inference.predict.run_plan` with a cold image cache (decode, grayscale, resize into the uint8
  cache), every checkpoint checked against the OOF, the evaluation pass, the test aggregation and the decision;
- plain: per fold, build the network, load `best.pt`, `model.eval()`, and per batch open each PNG with PIL,
  convert to grayscale, resize, normalize, and average the logits of the image and its mirror.
Each is run REPEATS times, alternating; the best time of each counts. Goal: kit ≥ 0.9× plain (images/s).
Scale with KIT_BENCH_PREDICT_N (test images, default 1,000).

Measured (KIT_BENCH_PREDICT_N=600, 2 shared CPU cores at load average ~25): kit 40.6 images/s, plain 25.6,
ratio 1.59; the plain loop decodes each PNG once per fold model, the kit once for all folds (its cache),
which is most of the difference. Logits agree to 1.2e-7.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from kit.config import load_competition
from kit.inference.predict import variant_plan
from kit.training.dataset import to_model_input

REPEATS = 3
N_TEST = int(os.environ.get("KIT_BENCH_PREDICT_N", "1000"))
VARIANT = """backbone = "chestmnist_cnn"
pretrained = false
image_size = 64
in_chans = 1
cnn_width = 16
epochs = 1
batch_size = 64
lr = 3e-3
loss = "ce"
augment = "none"
sampler_power = 0.0
scheduler = "cosine"
tta_hflip = true
"""


def _competition(root: Path) -> Path:
    from kit.data.synth import generate

    generate(root / "data", n_train=300, n_test=N_TEST, size=128, seed=0, processes=1)
    (root / "models").mkdir()
    (root / "models" / "bench.toml").write_text(VARIANT)
    config = root / "competition.toml"
    config.write_text(
        f'task = "multi-class"\nseed = 0\nvariants = ["bench"]\n[data]\ndir = "{root / "data"}"\npatient_column = "patient_id"\n'
        f'[folds]\nn_folds = 3\nseed = 0\npath = "{root / "folds.csv"}"\n[calibrate]\nstorage = "sqlite:///{root / "optuna.db"}"\n'
        f'[paths]\noof = "{root / "oof"}"\nsubmissions = "{root / "submissions"}"\ncache = "{root / "cache"}"\nmodels = "{root / "models"}"\n'
        f'runs = "{root / "runs"}"\n'
    )
    return config


def _plain(plan, paths: list[str]) -> np.ndarray:
    """The loop a user would write: per checkpoint, model.eval() over PIL-decoded batches with flip TTA."""
    from kit.models import create_model

    member = plan.members[0]
    mcfg = member.mcfg.model_copy(update={"pretrained": False})
    size, batch = mcfg.image_size, max(mcfg.batch_size, 64)
    out = []
    for per_seed in member.weights:
        model = create_model(mcfg, member.n_classes)
        model.load_state_dict(torch.load(per_seed[0], map_location="cpu", weights_only=True)["model"])
        model.eval()
        fold = []
        with torch.no_grad():
            for start in range(0, len(paths), batch):
                images = [np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
                          for p in paths[start : start + batch]]
                x = to_model_input(torch.from_numpy(np.stack(images))[:, None], mcfg.in_chans, False)
                fold.append(((model(x) + model(x.flip(-1))) / 2).numpy())
        out.append(np.concatenate(fold))
    return np.stack(out)


def main() -> dict:
    from kit.data.folds import make_folds
    from kit.data.sources import open_source
    from kit.inference.predict import run_plan
    from kit.stages.calibrate import calibrate
    from kit.stages.train import train

    quiet = Console(quiet=True)
    root = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        cfg = load_competition(_competition(root))
        make_folds(cfg, console=quiet)
        train(cfg, ["bench"], None, resume=False, console=quiet, cpus_per_job=1)
        calibrate(cfg, [cfg.paths.oof / "bench.npz"], console=quiet)
        plan = variant_plan(cfg, "bench")
        split = open_source(cfg).test
        paths = [str(p) for p in split.paths]
        times: dict[str, list[float]] = {"kit": [], "plain": []}
        for repeat in range(REPEATS):
            cold = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"cache": root / f"cache_predict_{repeat}"})})
            start = time.perf_counter()
            _, logits = run_plan(plan, split, cold, console=quiet)
            times["kit"].append(time.perf_counter() - start)
            start = time.perf_counter()
            plain = _plain(plan, paths)
            times["plain"].append(time.perf_counter() - start)
        passes = len(paths) * plan.members[0].n_models
        kit_rate, plain_rate = passes / min(times["kit"]), passes / min(times["plain"])
        return {
            "test_images": len(paths), "fold_models": plan.members[0].n_models, "image_size": plan.members[0].mcfg.image_size,
            "source_png_px": 128, "torch_threads": torch.get_num_threads(), "repeats": REPEATS,
            "kit_seconds": times["kit"], "plain_seconds": times["plain"],
            "kit_images_per_s": kit_rate, "plain_images_per_s": plain_rate, "ratio_kit_to_plain": kit_rate / plain_rate,
            "goal": ">= 0.9", "max_abs_logit_difference": float(np.abs(logits["bench"] - plain).max()),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
