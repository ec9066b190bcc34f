"""kit doctor + kit plan against a real `kit train` of the same grid, on this machine, in one process.

A synthetic competition (KIT_BENCH_DOCTOR_N training images, default 1000, 64 px, 300 test) is written to a
temp dir; the demo variants (KIT_BENCH_DOCTOR_VARIANTS, default the default config's) are checked by
`doctor` and planned by `plan` with the same quick-run overrides `kit train` then runs with
(KIT_BENCH_DOCTOR_EPOCHS, default 2; KIT_BENCH_DOCTOR_MAX_TRAIN, default 400 training images per fold;
KIT_BENCH_DOCTOR_FOLDS, e.g. "0", trains only those folds and compares with their share of the plan).

Reported: plan's grid time on one device against the measured training time (the sum over jobs of the
trainer's own epoch timer, plus each job's test prediction, i.e. what plan counts) and against the whole
`kit train` wall time (which adds the cache build, model creation and OOF assembly); and doctor's predicted
job peak (`memory.job_peak_bytes`: training steps, evaluation pass, and on the CPU the mapped cache) against
the peak during each real job, measured the same way (CPU: growth of the process's peak RSS from just before
the job builds its model, reset through /proc/self/clear_refs; GPU: torch.cuda.max_memory_allocated), read
twice: after the epochs (training + held-out predictions, the best epoch reloaded) and after the test
prediction (before the job draws its curves PNG). Goals (issue #19): time within 25%, memory within 15%.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console

import kit.training.loop as loop
import kit.training.trainer as core
from kit.config import load_competition
from kit.data.folds import make_folds
from kit.data.synth import generate
from kit.stages import doctor as doctor_stage
from kit.stages.plan import plan
from kit.stages.train import train


def main() -> dict:
    n = int(os.environ.get("KIT_BENCH_DOCTOR_N", "1000"))
    epochs = int(os.environ.get("KIT_BENCH_DOCTOR_EPOCHS", "2"))
    max_train = int(os.environ.get("KIT_BENCH_DOCTOR_MAX_TRAIN", "400"))
    folds = [int(k) for k in os.environ["KIT_BENCH_DOCTOR_FOLDS"].split(",")] if os.environ.get("KIT_BENCH_DOCTOR_FOLDS") else None
    repo = Path(__file__).resolve().parent.parent
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", n_train=n, n_test=300, size=64, seed=0)
        config = root / "competition.toml"
        base = load_competition(repo / "configs" / "competition.toml")
        names = os.environ.get("KIT_BENCH_DOCTOR_VARIANTS", ",".join(base.variants)).split(",")
        config.write_text(
            f'variants = {json.dumps(names)}\n[data]\ndir = "{root / "data"}"\npatient_column = "patient_id"\n'
            f'[folds]\npath = "{root / "folds.csv"}"\n[paths]\noof = "{root / "oof"}"\nsubmissions = "{root / "sub"}"\n'
            f'cache = "{root / "cache"}"\nmodels = "{repo / "configs" / "models"}"\nruns = "{root / "runs"}"\n'
        )
        cfg = load_competition(config)
        make_folds(cfg, console=quiet)
        overrides = {"epochs": epochs, "max_train_images": max_train}
        start = time.perf_counter()
        report = doctor_stage.doctor(cfg, names, overrides, console=Console())
        doctor_s = time.perf_counter() - start
        planned = plan(cfg, gpus=1, console=Console())

        peaks: dict[str, list[int]] = {}
        peaks_with_test: dict[str, list[int]] = {}
        current: dict[str, object] = {}
        real_create = core.create_model  # what build_model calls: the job's first step of its set-up
        real_rebalance = loop.rebalance_classifier
        real_curves = loop.training_curves_png

        def create_model(mcfg, num_classes):  # the job is about to build its model: the doctor's starting point
            import gc

            gc.collect()
            current["meter"] = doctor_stage._PeakMeter(loop.pick_device())
            current["name"] = mcfg.name
            return real_create(mcfg, num_classes)

        def rebalance_classifier(*args, **kwargs):  # all epochs (and held-out predictions) done
            peaks.setdefault(str(current["name"]), []).append(current["meter"].peak())
            return real_rebalance(*args, **kwargs)

        def training_curves_png(*args, **kwargs):  # the test set predicted too
            peaks_with_test.setdefault(str(current["name"]), []).append(current["meter"].peak())
            return real_curves(*args, **kwargs)

        core.create_model, loop.rebalance_classifier, loop.training_curves_png = create_model, rebalance_classifier, training_curves_png
        try:
            start = time.perf_counter()
            train(cfg, names, folds, resume=False, console=quiet, overrides=overrides)
            train_wall = time.perf_counter() - start
        finally:
            core.create_model, loop.rebalance_classifier, loop.training_curves_png = real_create, real_rebalance, real_curves

        measured_jobs = 0.0
        per_variant = {}
        for name in names:
            seconds = []
            for k in folds or range(cfg.folds.n_folds):
                summary = json.loads(str(__import__("numpy").load(root / "runs" / name / f"fold{k}" / "preds.npz")["metrics"]))
                seconds.append(summary["seconds"])
            measured_jobs += sum(seconds)
            memory = report["variants"][name]["memory"]
            predicted_peak = memory["job_peak_bytes"]
            epochs_peak = max(peaks.get(name, [0]))
            real_peak = max(peaks_with_test.get(name, [0]))
            mib = 2**20
            per_variant[name] = {
                "planned_fold_s": round(planned["variants"][name]["fold_s"], 1), "measured_fold_epochs_s": [round(s, 1) for s in seconds],
                "doctor_train_step_peak_mib": round(memory["train_step_peak_bytes"] / mib, 1),
                "doctor_predict_peak_mib": round(memory["predict_peak_bytes"] / mib, 1),
                "doctor_cache_resident_mib": round(memory["cache_resident_bytes"] / mib, 1),
                "doctor_peak_mib": round(predicted_peak / mib, 1),
                "train_epochs_peak_mib": round(epochs_peak / mib, 1), "train_peak_mib": round(real_peak / mib, 1),
                "peak_ratio_doctor_over_epochs": round(predicted_peak / max(epochs_peak, 1), 3),
                "peak_ratio_doctor_over_train": round(predicted_peak / max(real_peak, 1), 3),
                "doctor_train_images_per_s": round(report["variants"][name]["train_images_per_s"], 1),
            }
        grid = planned["grid_seconds"][1] * (len(folds) / cfg.folds.n_folds if folds else 1)  # the folds trained
        result = {
            "device": report["machine"]["device"], "cpu_cores": report["machine"]["cpu_cores"], "load_average_1min": round(os.getloadavg()[0], 2),
            "n_train": n, "n_test": 300, "image_size": 64, "epochs": epochs, "max_train_images": max_train, "folds": cfg.folds.n_folds,
            "folds_trained": folds or list(range(cfg.folds.n_folds)),
            "doctor_seconds": round(doctor_s, 1),
            "plan_grid_s": round(grid, 1), "train_epochs_s_sum": round(measured_jobs, 1), "train_wall_s": round(train_wall, 1),
            "ratio_plan_over_epochs": round(grid / measured_jobs, 3), "ratio_plan_over_wall": round(grid / train_wall, 3),
            "variants": per_variant, "goals": {"time_within": 0.25, "memory_within": 0.15},
        }
        print(json.dumps(result, indent=2))
        return result


if __name__ == "__main__":
    main()
