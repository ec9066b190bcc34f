"""The probability and ranking metrics end to end, on two small synthetic competitions with a hidden test set.

1. binary (`image_name,target` built from `kit synth`'s multi-class data: target = 1 for a few findings): three tiny
   CNN variants trained with `[metric] name = "log_loss"`, one of them with a square-root sampler; `kit calibrate`
   chooses each variant's log-loss decision by nested CV; the hidden-test log-loss of the chosen decision is compared
   with the raw softmax's. The same OOFs blended under `roc_auc` (their JSON's metric rewritten: the checkpoints were
   chosen by log-loss) give the blend's hidden-test AUC beside each member's.
2. multi-label (`kit synth --task multi-label`, ChestMNIST layout): three tiny variants trained under `roc_auc`,
   blended; hidden-test AUC of the blend beside each member's.

Every submission is written in the sample's format (probabilities) and scored by `kit score` against the hidden
labels. Run: `python -m benchmarks.bench_metrics OUT_DIR [--n-train N] [--n-test N] [--epochs N]`; the numbers go to
OUT_DIR/bench_metrics.json. Tiny on purpose (32 / 28 px, a few epochs): it measures the decision layer, not the models.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
KIT = [sys.executable, "-m", "kit"]
POSITIVE = ("Effusion", "Atelectasis", "Cardiomegaly")  # the binary target: one of these findings


def run(args: list[str]) -> str:
    print("$ kit", " ".join(map(str, args)), flush=True)
    done = subprocess.run([*KIT, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kit {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def write_variants(models: Path, base: str, image_size: int, epochs: int, variants: dict[str, dict]) -> None:
    """Variant TOMLs: the repo's `base` recipe with these keys changed."""
    models.mkdir(parents=True, exist_ok=True)
    text = (REPO / "configs" / "models" / f"{base}.toml").read_text()
    lines = [line for line in text.splitlines() if line.split("=")[0].strip() not in ("image_size", "epochs", "early_stopping_patience")]
    for name, changes in variants.items():
        body = [line for line in lines if line.split("=")[0].strip() not in changes]
        extra = [f"image_size = {image_size}", f"epochs = {epochs}", "early_stopping_patience = 100"]
        extra += [f"{k} = {json.dumps(v)}" for k, v in changes.items()]
        (models / f"{name}.toml").write_text("\n".join(body + extra) + "\n")


def write_config(root: Path, name: str, task: str, metric: str, variants: list[str], data_lines: str, models: Path) -> Path:
    path = root / f"{name}.toml"
    path.write_text(f"""task = "{task}"
seed = 0
variants = {json.dumps(variants)}

[data]
{data_lines}

[metric]
name = "{metric}"

[folds]
n_folds = 3
seed = 0
path = "{root / name / 'folds.csv'}"

[calibrate]
storage = "sqlite:///{root / name / 'optuna.db'}"

[paths]
oof = "{root / name / 'oof'}"
submissions = "{root / name / 'submissions'}"
cache = "{root / 'cache'}"
models = "{models}"
runs = "{root / name / 'runs'}"
""")
    return path


def binary_data(root: Path, n_train: int, n_test: int) -> Path:
    """`kit synth` multi-class data turned into a binary `image_name,target` competition (images shared)."""
    syn = root / "synth_mc"
    if not syn.exists():
        run(["synth", syn, "--n-train", n_train, "--n-test", n_test, "--size", 32, "--seed", 7])
    out = root / "binary"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    for split in ("train", "test"):
        (out / split).symlink_to(syn / split)
    train, solution = pd.read_csv(syn / "train.csv", dtype=str), pd.read_csv(syn / "solution.csv", dtype=str)

    def target(frame):
        return frame[list(POSITIVE)].astype(int).max(axis=1)

    pd.DataFrame({"image_name": train["id"], "patient_id": train["patient_id"], "target": target(train)}).to_csv(out / "train.csv", index=False)
    pd.DataFrame({"image_name": solution["id"], "target": 0}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"image_name": solution["id"], "target": target(solution)}).to_csv(out / "solution.csv", index=False)
    return out


def hidden_scores(cfg_path: Path, submission: Path, solution: Path | None) -> dict:
    """`kit score` of a submission (with --compare-argmax: each member's raw softmax / sigmoid on the test set)."""
    from kit.config import load_competition
    from kit.stages.score import score_file

    args = [submission, solution, load_competition(cfg_path)]
    result = score_file(*args, compare_argmax=True)
    return {"score": result["score"], "trivial_baseline": result["trivial_baseline"], "members_raw": result.get("argmax", {})}


def decision_test_scores(cfg_path: Path, variant: str, solution: Path | None) -> dict:
    """Hidden-test score of a variant's chosen calibrate decision and of its raw softmax (mean of the fold models' probabilities)."""
    from kit.artifacts import load_oof
    from kit.config import load_competition
    from kit.decision.metrics import build_metric
    from kit.decision.rules import Decision
    from kit.stages.score import align_rows, default_solution, raw_probabilities, solution_indicator
    from kit.submission import read_csv_str

    cfg = load_competition(cfg_path)
    metric = build_metric(cfg.metric)
    oof = load_oof(cfg.paths.oof / f"{variant}.npz")
    decision = Decision.load(cfg.paths.oof / f"{variant}.decision.json")
    frame = read_csv_str(solution) if solution is not None else default_solution(cfg)[0]
    classes = oof.classes.astype(str).tolist()
    sol_ids, y = solution_indicator(frame, classes, cfg.data.id_column if solution is not None else "id", "solution")
    test_ids = oof.test_ids.astype(str)
    chosen = np.mean([decision.probabilities(z) for z in oof.test_logits], axis=0)  # the kit's aggregation: mean of probabilities
    raw = np.mean([raw_probabilities(z, cfg.task) for z in oof.test_logits], axis=0)
    report = json.loads((cfg.paths.oof / f"{variant}.calibration.json").read_text())
    return {"rule": decision.rule, "temperature": decision.temperature, "alpha": decision.alpha,
            "nested_cv": {k: report["nested_cv"][k] for k in ("trivial", "raw", decision.rule)},
            "test_chosen": metric.score(y, align_rows(test_ids, chosen, sol_ids, "chosen")),
            "test_raw": metric.score(y, align_rows(test_ids, raw, sol_ids, "raw")),
            "test_prior": metric.score(y, np.tile(oof_prior(cfg, oof), (len(y), 1)))}


def oof_prior(cfg, oof) -> np.ndarray:
    from kit.data.sources import open_source

    return open_source(cfg).train_labels_for(oof.ids, "oof").mean(axis=0)


def retag_metric(src: Path, dst: Path, variants: list[str], metric: dict) -> None:
    """Copy OOFs to another folder, their JSON naming another metric (the checkpoints stay those chosen by the first)."""
    dst.mkdir(parents=True, exist_ok=True)
    for v in variants:
        shutil.copy(src / f"{v}.npz", dst / f"{v}.npz")
        meta = json.loads((src / f"{v}.json").read_text())
        meta["metric"] = metric
        (dst / f"{v}.json").write_text(json.dumps(meta))


def simulated(seed: int = 0, n: int = 3000, prior: float = 0.1, signal: float = 1.5, overconfidence: float = 1.3) -> dict:
    """Simulated OOF and hidden test of a binary competition (positive rate `prior`): a model trained under a
    square-root sampler (its logits are the log-odds under the sampler's prior, times `overconfidence`), and three
    members seeing one signal through their own noise. The log-loss decision and the AUC blend, by the kit's code."""
    from kit.config import CalibrateConfig
    from kit.decision.candidates import FitContext, candidates_for
    from kit.decision.metrics import build_metric
    from kit.decision.select import select_decision
    from kit.ensemble.pipeline import Member
    from kit.ensemble.select import blend_rules, blend_weightings, select_blend
    from kit.stages.score import raw_probabilities

    rng = np.random.default_rng(seed)
    q = np.sqrt(prior) / (np.sqrt(prior) + np.sqrt(1 - prior))  # the sqrt sampler's training prior
    pri = np.array([1 - prior, prior])
    qq = np.array([1 - q, q])

    def draw(m: int):
        y = (rng.random(m) < prior).astype(int)
        latent = signal * y + rng.normal(size=m)
        views = [latent + 0.8 * rng.normal(size=m) for _ in range(3)]

        def logits(v):  # log-odds under q of a view with signal/noise ratio signal/sqrt(1 + 0.64)
            s = signal / np.sqrt(1.64)
            lr = s * v / np.sqrt(1.64) - s**2 / 2
            return np.stack([np.zeros(m), overconfidence * (np.log(q / (1 - q)) + lr)], axis=1)

        return np.eye(2, dtype=np.uint8)[y], [logits(v) for v in views]

    labels, member_logits = draw(n)
    test_labels, test_logits = draw(n)
    fold = rng.permutation(np.arange(n) % 3)
    out: dict = {"n_oof": n, "n_test": n, "positive_rate": prior, "sampler_prior": float(q), "overconfidence": overconfidence}
    ll = build_metric({"name": "log_loss"})
    ctx = FitContext("multi-class", ("0", "1"), ll, qq, CalibrateConfig())
    sel = select_decision(member_logits[0], labels, fold, ctx, candidates_for("multi-class", ll))
    chosen = sel.decision
    out["log_loss"] = {"chosen": sel.choice.chosen, "nested_cv": {k: v.mean for k, v in sel.scores.items()},
                       "test_chosen": ll.score(test_labels, chosen.predict(test_logits[0])),
                       "test_raw": ll.score(test_labels, raw_probabilities(test_logits[0], "multi-class")),
                       "test_prior": ll.score(test_labels, np.tile(pri, (n, 1)))}
    auc = build_metric({"name": "roc_auc"})
    ctx = FitContext("multi-class", ("0", "1"), auc, np.full(2, 0.5), CalibrateConfig())
    members = [Member(f"m{i}", z, z[None], qq) for i, z in enumerate(member_logits)]
    rules = [c for c in candidates_for("multi-class", auc) if c.name in blend_rules("multi-class", "ranking")]
    blend = select_blend(members, labels, fold, ctx, blend_weightings("ranking"), rules)
    from kit.ensemble.aggregate import aggregate_predict

    test_pred = aggregate_predict(blend.final, [z[None] for z in test_logits])
    out["auc_blend"] = {"chosen": list(blend.chosen), "test_blend": auc.score(test_labels, test_pred),
                        "test_members": [auc.score(test_labels, raw_probabilities(z, "multi-class")) for z in test_logits],
                        "test_constant": 0.5}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", choices=("binary", "multi-label", "simulated"), default=None)
    a = parser.parse_args()
    root = a.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "bench_metrics.json"
    results: dict = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["conditions"] = {"n_train": a.n_train, "n_test": a.n_test, "epochs": a.epochs, "folds": 3,
                             "machine": "shared 2-core CPU under load (other sessions' tests and training)"}
    t0 = time.perf_counter()
    if a.only in (None, "simulated"):
        results["simulated"] = [simulated(seed) for seed in range(3)]

    if a.only in (None, "binary"):
        data = binary_data(root, a.n_train, a.n_test)
        models = root / "models_binary"
        variants = {"bin_cnn": {}, "bin_sqrt": {"sampler_power": 0.5}}
        write_variants(models, "cnn_demo", 32, a.epochs, variants)
        lines = f'source = "kaggle"\ndir = "{data}"\nid_column = "image_name"\nlabel_column = "target"\npatient_column = "patient_id"\n' \
                'train_images = "train/{id}.png"\ntest_images = "test/{id}.png"\nsolution_csv = "solution.csv"'
        cfg = write_config(root, "binary_logloss", "multi-class", "log_loss", list(variants), lines, models)
        run(["--config", cfg, "folds"])
        run(["--config", cfg, "train", "--cpus-per-job", 1])
        run(["--config", cfg, "calibrate"])
        run(["--config", cfg, "blend", "--name", "blend"])
        binary = {"positive_rate_train": float(pd.read_csv(data / "train.csv")["target"].mean()),
                  "log_loss_decisions": {v: decision_test_scores(cfg, v, data / "solution.csv") for v in variants},
                  "log_loss_blend": hidden_scores(cfg, root / "binary_logloss" / "submissions" / "blend.csv", data / "solution.csv")}
        auc_cfg = write_config(root, "binary_auc", "multi-class", "roc_auc", list(variants), lines, models)
        shutil.copy(root / "binary_logloss" / "folds.csv", (root / "binary_auc").mkdir(exist_ok=True) or root / "binary_auc" / "folds.csv")
        retag_metric(root / "binary_logloss" / "oof", root / "binary_auc" / "oof", list(variants), {"name": "roc_auc"})
        run(["--config", auc_cfg, "blend", "--name", "blend"])
        binary["auc_blend"] = hidden_scores(auc_cfg, root / "binary_auc" / "submissions" / "blend.csv", data / "solution.csv")
        binary["auc_blend"]["chosen"] = json.loads((root / "binary_auc" / "submissions" / "blend.json").read_text())["weighting"]
        binary["sample_format"] = list(pd.read_csv(root / "binary_auc" / "submissions" / "blend.csv", nrows=1).columns)
        results["binary"] = binary

    if a.only in (None, "multi-label"):
        syn = root / "synth_ml"
        if not syn.exists():
            run(["synth", syn, "--task", "multi-label", "--n-train", a.n_train, "--n-test", a.n_test, "--size", 28, "--seed", 7])
        models = root / "models_ml"
        variants = {"ml_cnn": {}, "ml_cnn_w24": {"cnn_width": 24}, "ml_cnn_lr": {"lr": 3e-3, "dropout": 0.1}}
        write_variants(models, "chestmnist_cnn", 28, a.epochs, variants)
        cfg = write_config(root, "ml_auc", "multi-label", "roc_auc", list(variants), f'source = "medmnist"\ndir = "{syn}"\nnpz = "chestmnist.npz"', models)
        run(["--config", cfg, "folds"])
        run(["--config", cfg, "train", "--cpus-per-job", 1])
        run(["--config", cfg, "calibrate"])
        run(["--config", cfg, "blend", "--name", "blend"])
        ml = hidden_scores(cfg, root / "ml_auc" / "submissions" / "blend.csv", None)
        ml["chosen"] = json.loads((root / "ml_auc" / "submissions" / "blend.json").read_text())["weighting"]
        results["multi_label_auc"] = ml

    results["seconds"] = round(time.perf_counter() - t0, 1)
    results_path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
