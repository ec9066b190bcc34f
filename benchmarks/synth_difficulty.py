"""The realistic synthetic preset, calibrated and measured: per-class AUC of a reference recipe vs the
per-class test AUCs of a CheXNet reproduction on real chest X-rays.

    python -m benchmarks.synth_difficulty measure              # one 5-fold run of the current table
    python -m benchmarks.synth_difficulty calibrate --rounds 3  # update the table round by round
    python -m benchmarks.synth_difficulty speed                # images/s realistic vs easy, 128 px
    python -m benchmarks synth_difficulty                      # the speed ratio only (main())

Each round runs the kit itself: `kit synth --difficulty realistic` (with the round's contrast
table), `kit folds`, `kit train --variant reference_ce` (configs/models/reference_ce.toml: test_resnet
at 64 px, plain CE, no sampler), then the one-vs-rest AUC of each class on the out-of-fold softmax
probabilities. AUC grows with a class's contrast factor, so a round moves each factor along the
line of binormal d' over log factor fitted to the rounds so far, towards the target. Classes with few training images have
AUCs that are as much noise as signal: they move only when their bootstrap interval misses the
target. Results: benchmarks/synth_difficulty_results.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from kit.config import CompetitionConfig, DataConfig, FoldsConfig, PathsConfig
from kit.data.folds import make_folds
from kit.data.sources import open_source
from kit.data.synth import FINDING_NAMES, REALISTIC_CONTRAST, generate, scale_counts
from kit.decision.metrics import per_class_auc
from kit.files import write_json, write_text
from kit.stages.train import train

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"  # working files (rounds so far), not tracked
REPORT = REPO / "benchmarks" / "synth_difficulty_results"  # .md and .json: the measured table, tracked
ROUNDS = RESULTS / "synth_difficulty_rounds.json"
REFERENCE = "reference_ce"
# Per-class test AUCs of a CheXNet reproduction (DenseNet-121, 224 px, real NIH test images).
CHEXNET_AUC = {
    "Atelectasis": 0.818, "Cardiomegaly": 0.909, "Effusion": 0.883, "Infiltration": 0.716, "Mass": 0.838,
    "Nodule": 0.776, "Pneumonia": 0.762, "Pneumothorax": 0.878, "Consolidation": 0.800, "Edema": 0.894,
    "Emphysema": 0.932, "Fibrosis": 0.825, "Pleural Thickening": 0.789, "Hernia": 0.918,
}
OTHER_RANGE = (0.80, 0.90)  # the five classes CheXNet does not have
TOLERANCE = 0.05
RARE_TRAIN_IMAGES = 60  # below this many training images a class is calibrated with the pooled rare group


def target_auc(name: str) -> float:
    return CHEXNET_AUC.get(name, sum(OTHER_RANGE) / 2)


def within_target(name: str, auc: float) -> bool:
    if name in CHEXNET_AUC:
        return abs(auc - CHEXNET_AUC[name]) <= TOLERANCE
    return OTHER_RANGE[0] <= auc <= OTHER_RANGE[1]


def d_prime(auc: float) -> float:
    """Binormal separation of an AUC: roughly proportional to a finding's contrast, so secants work in it."""
    return math.sqrt(2) * norm.ppf(min(max(auc, 0.505), 0.995))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def bootstrap_interval(labels: np.ndarray, probs: np.ndarray, rng: np.random.Generator, draws: int = 200) -> np.ndarray:
    """(C, 2) 5th and 95th percentiles of the per-class AUC over image bootstraps: the noise of a table row."""
    aucs = np.stack([per_class_auc(labels[idx], probs[idx]) for idx in (rng.integers(0, len(labels), len(labels)) for _ in range(draws))])
    return np.nanpercentile(aucs, [5, 95], axis=0).T


def run_round(work: Path, contrast: dict[str, float], n_train: int, n_test: int, size: int, seed: int, folds: list[int] | None) -> dict:
    """synth -> folds -> train (reference recipe) -> per-class AUC on the held-out folds; returns the round's table."""
    start = time.perf_counter()
    data = work / "data"
    summary = generate(data, n_train=n_train, n_test=n_test, size=size, seed=seed, difficulty="realistic", contrast=contrast)
    cfg = CompetitionConfig(
        seed=seed,
        data=DataConfig(dir=data, patient_column="patient_id", solution_csv="solution.csv"),
        folds=FoldsConfig(n_folds=5, seed=seed, path=work / "folds.csv"),
        paths=PathsConfig(oof=work / "oof", submissions=work / "submissions", cache=work / "cache", models=REPO / "configs" / "models", runs=work / "runs"),
        source_file=work / "calibration.toml",
    )
    make_folds(cfg)
    train(cfg, [REFERENCE], folds, resume=False)
    source = open_source(cfg)
    position = {i: r for r, i in enumerate(np.asarray(source.train.ids, dtype=str).tolist())}
    rows, logits, fold_of_row, seconds = [], [], [], 0.0
    for k in folds if folds is not None else range(cfg.folds.n_folds):
        with np.load(work / "runs" / REFERENCE / f"fold{k}" / "preds.npz", allow_pickle=False) as z:
            rows.append(np.array([position[i] for i in z["val_ids"].tolist()]))
            logits.append(z["val_logits"])
            fold_of_row.append(np.full(len(z["val_ids"]), k))
            seconds += json.loads(str(z["metrics"])).get("seconds", 0.0)
    rows = np.concatenate(rows)
    labels = source.train.labels[rows]
    probs = softmax(np.concatenate(logits))
    fold_of_row = np.concatenate(fold_of_row)
    auc = per_class_auc(labels, probs)
    auc_logits = per_class_auc(labels, np.concatenate(logits))
    interval = bootstrap_interval(labels, probs, np.random.default_rng(seed))
    per_fold = np.stack([per_class_auc(labels[fold_of_row == k], probs[fold_of_row == k]) for k in np.unique(fold_of_row)])
    classes = list(source.classes)
    table = {}
    for c, name in enumerate(classes):
        table[name] = {
            "n_train": int(summary["train_counts"][name]), "n_evaluated": int(labels[:, c].sum()),
            "contrast": contrast.get(name), "target": None if name == "No Finding" else target_auc(name),
            "auc": round(float(auc[c]), 4), "auc_on_logits": round(float(auc_logits[c]), 4),
            "bootstrap_90": [round(float(v), 4) for v in interval[c]],
            "fold_std": round(float(np.nanstd(per_fold[:, c])), 4) if len(per_fold) > 1 else None,
            "within": None if name == "No Finding" else within_target(name, float(auc[c])),
        }
    oof_meta = work / "oof" / f"{REFERENCE}.json"  # written by `kit train` once all 5 folds exist
    score = json.loads(oof_meta.read_text())["oof_metrics_closed_form_rule"] if oof_meta.is_file() else {}
    return {
        "table": table, "macro_auc": round(float(np.nanmean(auc)), 4), "train_seconds": round(seconds, 1),
        "oof_score": score.get("score"), "trivial_baseline": score.get("trivial_baseline"),
        "minutes": round((time.perf_counter() - start) / 60, 1), "folds": folds if folds is not None else list(range(5)),
    }


def update_contrast(history: list[dict]) -> dict[str, float]:
    """Next contrast table: per class a step along the fitted line of d' over log factor.

    A class with few training images moves only when its bootstrap interval misses the target:
    its AUC is mostly noise, so it follows the trend and not each round's draw.
    """
    last = history[-1]["table"]
    out = {}

    def step(points: list[tuple[float, float]], target: float) -> float:
        """points: (factor, d') of the rounds so far; the factor ratio that puts d' at target.

        With two or more factors: the least-squares line of d' over log factor (every round's
        point, so one noisy round does not steer alone); else, or where that line is flat or
        falling (noise), d' taken as proportional to the factor.
        """
        m_last, d_last = points[-1]
        logs = np.log([m for m, _ in points])
        ratio = target / max(d_last, 0.05)
        if np.ptp(logs) > 1e-3:
            slope, intercept = np.polyfit(logs, [d for _, d in points], 1)
            if slope >= 0.2:
                ratio = math.exp((target - intercept) / slope) / m_last
        return min(max(ratio, 0.5), 2.5)

    for f in FINDING_NAMES:
        row = last[f]
        points = [(r["table"][f]["contrast"], d_prime(r["table"][f]["auc"])) for r in history if not math.isnan(r["table"][f]["auc"])]
        if not points:
            out[f] = row["contrast"]
            continue
        ratio = step(points, d_prime(target_auc(f)))
        if row["n_train"] < RARE_TRAIN_IMAGES:
            lo, hi = row["bootstrap_90"]
            wanted = (CHEXNET_AUC[f] - TOLERANCE, CHEXNET_AUC[f] + TOLERANCE) if f in CHEXNET_AUC else OTHER_RANGE
            ratio = 1.0 if lo <= wanted[1] and hi >= wanted[0] else ratio
        out[f] = round(row["contrast"] * ratio, 4)
    return out


def markdown(result: dict, others: dict[str, dict] | None = None) -> str:
    """The target-vs-reached table with N and the noise of each row, and the run's conditions.

    `others`: measurements of the same table with other seeds (other data, other folds), one AUC
    column each: how far a row moves between seeds.
    """
    cond = result["conditions"]
    others = others or {}
    lines = [
        f"Realistic preset, reference recipe `{REFERENCE}` ({cond['recipe']}); {cond['n_train']} train images at {cond['size']} px, "
        f"seed {cond['seed']}, folds {cond['folds']} of 5, {cond['epochs']} epochs; one-vs-rest AUC of the out-of-fold softmax "
        f"probabilities; {cond['minutes']} min on {cond['machine']}. Target: CheXNet reproduction ±{TOLERANCE}, or {OTHER_RANGE[0]}–{OTHER_RANGE[1]} "
        "for the five classes it lacks. 90% interval: image bootstrap; fold sd: spread of the per-fold AUCs"
        + (f"; seed columns: the same table measured on the data and folds of other seeds ({', '.join(others)})." if others else "."),
        "",
        "| class | N train | contrast | target | reached | 90% interval | fold sd | within |" + "".join(f" seed {s} |" for s in others),
        "|---|---:|---:|---:|---:|---:|---:|:---:|" + "---:|" * len(others),
    ]
    for name, row in result["table"].items():
        target = "—" if row["target"] is None else (f"{row['target']:.3f}" if name in CHEXNET_AUC else f"{OTHER_RANGE[0]:.2f}–{OTHER_RANGE[1]:.2f}")
        contrast = "—" if row["contrast"] is None else f"{row['contrast']:.2f}"
        within = "—" if row["within"] is None else ("yes" if row["within"] else "no")
        lo, hi = row["bootstrap_90"]
        sd = "—" if row["fold_std"] is None else f"{row['fold_std']:.3f}"
        extra = "".join(f" {other['table'][name]['auc']:.3f} |" for other in others.values())
        lines.append(f"| {name} | {row['n_train']} | {contrast} | {target} | {row['auc']:.3f} | {lo:.3f}–{hi:.3f} | {sd} | {within} |{extra}")
    for label, res in {f"seed {cond['seed']}": result, **{f"seed {s}": o for s, o in others.items()}}.items():
        hits = [r["within"] for r in res["table"].values() if r["within"] is not None]
        line = f"{label}: within target {sum(hits)} of {len(hits)} classes; macro AUC {res['macro_auc']:.3f} (all 20 classes)"
        if res.get("oof_score") is not None:
            line += f"; OOF competition score {res['oof_score']:.3f} under the kit's closed-form rule (trivial baseline {res['trivial_baseline']:.3f})"
        lines.append(("" if label != f"seed {cond['seed']}" else "\n") + line + ".")
    return "\n".join(lines) + "\n"


def _conditions(args, result: dict) -> dict:
    from kit.config import load_model

    mcfg = load_model(REFERENCE, CompetitionConfig(paths=PathsConfig(models=REPO / "configs" / "models")))
    return {
        "n_train": args.n_train, "n_test": args.n_test, "size": args.size, "seed": args.seed, "folds": result["folds"],
        "epochs": mcfg.epochs, "recipe": f"{mcfg.backbone} {mcfg.image_size} px, loss {mcfg.loss}, sampler power {mcfg.sampler_power}, augment {mcfg.augment}",
        "minutes": result["minutes"], "train_seconds": result["train_seconds"],
        "machine": f"{os.cpu_count()} CPU cores, {args.threads or 'default'} torch threads, load average {os.getloadavg()[0]:.1f} at the end",
        "n_train_design_counts": scale_counts(args.n_train),
    }


def calibrate(args) -> list[dict]:
    """Rounds of run + update; every round is kept in benchmarks/results/synth_difficulty_rounds.json."""
    work = Path(args.work)
    contrast = json.loads(Path(args.contrast).read_text()) if args.contrast else dict(REALISTIC_CONTRAST)
    history = json.loads(ROUNDS.read_text()) if args.resume and ROUNDS.is_file() else []
    if history:
        contrast = update_contrast(history)
    for _ in range(args.rounds):
        round_dir = work / f"round{len(history)}"
        result = _run(args, round_dir, contrast)
        history.append(result)
        write_json(ROUNDS, history)
        print(markdown(result))
        contrast = update_contrast(history)
        print(f"round {len(history) - 1}: {result['minutes']} min; next contrast table (copy into REALISTIC_CONTRAST when done):")
        print(json.dumps(contrast, indent=1))
    return history


def measure(args) -> dict:
    """One run of the table in kit/data/synth.py (or --contrast); the tracked report keeps one entry per seed."""
    contrast = json.loads(Path(args.contrast).read_text()) if args.contrast else dict(REALISTIC_CONTRAST)
    result = _run(args, Path(args.work) / f"measure_seed{args.seed}", contrast)
    path = REPORT.with_suffix(".json")
    report = json.loads(path.read_text()) if path.is_file() else {}
    same = {s: r for s, r in report.get("measurements", {}).items() if r["conditions"]["n_train"] == args.n_train}
    measured = {s: r for s, r in same.items() if all(r["table"][f]["contrast"] == contrast[f] for f in FINDING_NAMES)}  # same table only
    measured[str(args.seed)] = result
    rounds = json.loads(ROUNDS.read_text()) if ROUNDS.is_file() else report.get("calibration_rounds", [])
    write_json(path, {"measurements": measured, "calibration_rounds": rounds})
    main_seed = "42" if "42" in measured else str(args.seed)
    write_text(REPORT.with_suffix(".md"), markdown(measured[main_seed], {s: r for s, r in measured.items() if s != main_seed}))
    print(REPORT.with_suffix(".md").read_text())
    print(f"wrote {REPORT.with_suffix('.md')} and {path}")
    return result


def _run(args, round_dir: Path, contrast: dict[str, float]) -> dict:
    shutil.rmtree(round_dir, ignore_errors=True)
    result = run_round(round_dir, contrast, args.n_train, args.n_test, args.size, args.seed, args.folds)
    result["conditions"] = _conditions(args, result)
    shutil.rmtree(round_dir / "data", ignore_errors=True)  # the images: regenerated from the seed on demand
    shutil.rmtree(round_dir / "cache", ignore_errors=True)
    return result


def speed(n_train: int = 1500, size: int = 128, repeats: int = 2) -> dict:
    """Images/s of `kit synth` realistic vs easy at `size` px, alternated in one run (the ratio is what holds)."""
    seconds = {"easy": [], "realistic": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for difficulty in ("easy", "realistic"):
                out = Path(tmp) / f"{difficulty}{r}"
                start = time.perf_counter()
                generate(out, n_train=n_train, n_test=100, size=size, seed=r, difficulty=difficulty)
                seconds[difficulty].append(time.perf_counter() - start)
                shutil.rmtree(out)
    n = n_train + 100
    rate = {d: round(n / min(s), 1) for d, s in seconds.items()}
    return {
        "size": size, "images": n, "repeats": repeats, "processes": min(2, os.cpu_count() or 1),
        "images_per_s": rate, "realistic_over_easy": round(rate["realistic"] / rate["easy"], 3),
    }


def main() -> dict:
    """`python -m benchmarks synth_difficulty`: the speed ratio (the calibration itself takes hours, see the CLI)."""
    return speed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("measure", "calibrate", "speed"))
    parser.add_argument("--n-train", type=int, default=15000)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folds", type=lambda s: [int(k) for k in s.split(",")], default=None, help="e.g. 0,1 (default: all 5)")
    parser.add_argument("--contrast", help="JSON file with a starting contrast table (default: REALISTIC_CONTRAST)")
    parser.add_argument("--resume", action="store_true", help="continue from benchmarks/results/synth_difficulty_rounds.json")
    parser.add_argument("--work", default=str(REPO / ".cache" / "synth_difficulty"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is faster on a crowded machine")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "speed":
        result = speed()
        write_json(RESULTS / "synth_difficulty_speed.json", result)
        print(json.dumps(result, indent=1))
    elif args.command == "calibrate":
        calibrate(args)
    else:
        measure(args)
