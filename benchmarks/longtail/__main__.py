"""`python -m benchmarks.longtail [--quick] [--difficulty realistic] [--recipes ce,crt] ...`

Drives the kit through its CLI (`kit synth`, `folds`, `train`, `calibrate`, `blend`) in a scratch
directory and scores each submission against the synthetic `solution.csv`. Each stage's output goes to
`<workdir>/logs/`; a failed stage stops the run with the tail of its log.

Sizing of the full run (about 45 minutes on 2 CPU cores): 5,000 training / 1,700 test images at 64 px
(the size of `make demo`), every class with at least 10 training images so that each of the 5 folds holds at least one image of
every class (the harness checks it after `kit folds` and stops if a class is missing from a fold: its
metric term would be undefined there), test_resnet from scratch, 5 epochs, 8 recipes. `--quick`
(400 / 200 images at 32 px, 1 epoch, recipes ce, logit_adjusted and crt, on the data
`kit synth` makes by default) checks the plumbing, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.special import softmax

from benchmarks.longtail.recipes import BASE, model_toml, recipes
from kit.progress import make_progress

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
KIT = [sys.executable, "-m", "kit"]

FULL = dict(n_train=5000, n_test=1700, size=64, min_per_class=10, epochs=5, difficulty="realistic", recipes=None)
QUICK = dict(n_train=400, n_test=200, size=32, min_per_class=5, epochs=1, difficulty=None, recipes="ce,logit_adjusted,crt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.longtail", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch: checks the plumbing")
    parser.add_argument("--difficulty", default=None, help="passed to `kit synth --difficulty` (full run: realistic; --quick: not passed)")
    parser.add_argument("--recipes", default=None, help="comma list of recipe names (default: all; --quick: ce,logit_adjusted,crt)")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--min-per-class", type=int, default=None, help="smallest class in train (>= 5 folds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--backbone", default=BASE["backbone"], help="demo backbone: test_resnet, test_efficientnet or chestmnist_cnn")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the kit commands (default: torch's, one per core)")
    parser.add_argument("--data", type=Path, default=None, help="an existing `kit synth` dataset to use instead of writing one")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (emptied first)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.difficulty in ("", "none"):
        args.difficulty = None
    name = "longtail_quick" if args.quick else "longtail"
    args.workdir = args.workdir or RESULTS / f"{name}_work"
    args.out = args.out or RESULTS / f"{name}.json"
    return args


def competition_toml(work: Path, data: Path, variants: list[str]) -> str:
    return f"""# written by benchmarks/longtail: the synthetic competition in {work}
task = "multi-class"
seed = 0
variants = {json.dumps(variants)}

[data]
source = "kaggle"
dir = "{data}"
patient_column = "patient_id"
solution_csv = "solution.csv"

[folds]
n_folds = 5
seed = 0
path = "{work / 'folds' / 'folds.csv'}"

[calibrate]
storage = "sqlite:///{work / 'oof' / 'optuna.db'}"

[paths]
oof = "{work / 'oof'}"
submissions = "{work / 'submissions'}"
cache = "{work / 'cache'}"
models = "{work / 'models'}"
runs = "{work / 'runs'}"
"""


class Runner:
    """Runs one kit command per stage, logging to <work>/logs/<name>.log; a failure stops the benchmark."""

    def __init__(self, work: Path, config: Path, threads: int | None = None):
        self.work, self.config = work, config
        self.env = {**os.environ, "COLUMNS": "160"}
        if threads:  # on a machine shared with other jobs, one thread per process avoids OpenMP oversubscription
            self.env["OMP_NUM_THREADS"] = str(threads)
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, *args: str, config: bool = True) -> float:
        log = self.work / "logs" / f"{name}.log"
        command = [*KIT, *(["--config", str(self.config)] if config else []), *args]
        start = time.perf_counter()
        with log.open("w") as out:
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.work)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise SystemExit(f"benchmarks.longtail: `{' '.join(args)}` failed (exit {done.returncode}); end of {log}:\n{tail}")
        return seconds


def check_every_class_in_every_fold(work: Path, data: Path) -> int:
    """The smallest (class, fold) count of held-out images; stops the run when it is 0."""
    train = pd.read_csv(data / "train.csv", dtype={"id": str})
    folds = pd.read_csv(work / "folds" / "folds.csv", dtype={"id": str})
    classes = [c for c in train.columns if c not in ("id", "patient_id")]
    merged = train.merge(folds, on="id")
    per_fold = merged.groupby("fold")[classes].sum()
    smallest = int(per_fold.values.min())
    if smallest == 0:
        missing = [(c, int(f)) for f in per_fold.index for c in classes if per_fold.loc[f, c] == 0]
        raise SystemExit(f"benchmarks.longtail: classes missing from folds {missing[:5]}; raise --min-per-class")
    return smallest


def recipe_figures(work: Path, name: str, labels_of) -> dict:
    """Nested-CV (kit decision and argmax) from the calibration report, bAcc and macro AUC from the OOF logits."""
    from kit.artifacts import load_oof
    from kit.decision.metrics import balanced_accuracy, macro_auc

    oof = load_oof(work / "oof" / f"{name}.npz")
    labels = labels_of(oof.ids)
    report = json.loads((work / "oof" / f"{name}.calibration.json").read_text())
    return {
        "nested_cv": float(report["chosen_nested_cv"]),
        "argmax": float(report["nested_cv"]["argmax"]),
        "balanced_accuracy": balanced_accuracy(labels, np.eye(labels.shape[1], dtype=np.uint8)[oof.logits.argmax(axis=1)]),
        "macro_auc": float(macro_auc(labels, softmax(oof.logits.astype(np.float64), axis=1))),
        "decision": str(report["chosen"]),
    }


def solution_score(config: Path, submission: Path) -> tuple[float, float]:
    """(score, trivial baseline) of a submission on the synthetic solution.csv, as `kit score` computes them."""
    from kit.config import load_competition
    from kit.stages.score import score_file

    result = score_file(submission, None, load_competition(config), console=Console(quiet=True))
    return float(result["score"]), float(result["trivial_baseline"])


def run(args: argparse.Namespace, console: Console) -> dict:
    import shutil

    all_recipes = recipes(args.epochs)
    names = [n.strip() for n in (args.recipes or ",".join(all_recipes)).split(",") if n.strip()]  # FULL: all recipes
    unknown = [n for n in names if n not in all_recipes]
    if unknown or not names:
        raise SystemExit(f"benchmarks.longtail: unknown recipes {unknown}; choose from {list(all_recipes)}")
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "models").mkdir(parents=True)
    config = work / "competition.toml"
    data = args.data.resolve() if args.data else work / "data"
    if args.data and not (data / "SYNTHETIC").is_file():
        raise SystemExit(f"benchmarks.longtail: --data {data} is not a `kit synth` dataset (no SYNTHETIC marker)")
    config.write_text(competition_toml(work, data, names))
    base = {**BASE, "backbone": args.backbone, "image_size": args.size, "epochs": args.epochs}
    if args.backbone == "chestmnist_cnn":
        base.update(in_chans=1, cnn_width=16)
    for name in names:
        (work / "models" / f"{name}.toml").write_text(model_toml({**base, **all_recipes[name]}, f"benchmarks/longtail recipe '{name}'"))
    kit = Runner(work, config, args.threads)
    synth = ["synth", str(work / "data"), "--n-train", str(args.n_train), "--n-test", str(args.n_test), "--size", str(args.size),
             "--seed", "0", "--min-per-class", str(args.min_per_class)]
    if args.difficulty:
        synth += ["--difficulty", args.difficulty]

    minutes: dict[str, float] = {}
    steps = 3 + 2 * len(names) + 1
    with make_progress(console) as progress:
        bar = progress.add_task("longtail: synth", total=steps)

        def stage(description: str, name: str, *cli: str, config: bool = True) -> float:
            progress.update(bar, description=f"longtail: {description}")
            seconds = kit(name, *cli, config=config)
            progress.advance(bar)
            return seconds

        if args.data:
            progress.advance(bar)
        else:
            stage("synth", "synth", *synth, config=False)
        stage("folds", "folds", "folds")
        smallest = check_every_class_in_every_fold(work, data)
        for name in names:
            minutes[name] = stage(f"train {name}", f"train_{name}", "train", "--variant", name) / 60
        stage("calibrate", "calibrate", "calibrate")
        for name in names:
            stage(f"blend {name} alone", f"blend_{name}", "blend", "--variants", name, "--name", name)
        if len(names) > 1:
            stage("blend of all recipes", "blend_all", "blend", "--name", "all_recipes")

    from kit.config import load_competition
    from kit.data.sources import open_source

    cfg = load_competition(config)
    source = open_source(cfg)
    results: dict = {"recipes": {}}
    for name in names:
        figures = recipe_figures(work, name, lambda ids: source.train_labels_for(ids, cfg.data.dir))
        figures["minutes"] = minutes[name]
        figures["solution"], trivial_solution = solution_score(config, work / "submissions" / f"{name}.csv")
        results["recipes"][name] = figures
    first = json.loads((work / "submissions" / f"{names[0]}.json").read_text())
    results["trivial"] = float(first["trivial_baseline"])
    results["trivial_solution"] = trivial_solution
    if len(names) > 1:
        blend = json.loads((work / "submissions" / "all_recipes.json").read_text())
        results["blend"] = {
            "nested_cv": float(blend["nested_cv_score"]),
            "solution": solution_score(config, work / "submissions" / "all_recipes.csv")[0],
            "weights": blend.get("weights"),
        }
    results["goals"] = goals(results)
    results["conditions"] = {
        "quick": args.quick, "difficulty": args.difficulty or "kit synth default", "data": str(data), "n_train": args.n_train, "n_test": args.n_test,
        "image_size": args.size, "min_per_class": args.min_per_class, "smallest_class_per_fold": smallest, "folds": 5,
        "epochs": args.epochs, "backbone": args.backbone, "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or _torch_threads(), "workdir": str(work),
    }
    if args.data and (data / "synth.json").is_file():  # the dataset's own sizes, not the command line's
        made = json.loads((data / "synth.json").read_text())
        results["conditions"].update(n_train=made.get("n_train"), n_test=made.get("n_test"), difficulty=made.get("difficulty", "easy"))
    return results


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def goals(results: dict) -> dict:
    """The issue's targets: best recipe ≥ CE + 0.3 (nested CV), and the blend above every single recipe."""
    recipes_ = results["recipes"]
    out: dict = {}
    if "ce" in recipes_ and len(recipes_) > 1:
        best = max((n for n in recipes_ if n != "ce"), key=lambda n: recipes_[n]["nested_cv"])
        gain = recipes_[best]["nested_cv"] - recipes_["ce"]["nested_cv"]
        out["best_recipe"] = best
        out["best_minus_ce"] = gain
        out["best_beats_ce_by_0.3"] = bool(gain >= 0.3)
    if "blend" in results:
        top = max(r["nested_cv"] for r in recipes_.values())
        out["blend_minus_best_single"] = results["blend"]["nested_cv"] - top
        out["blend_beats_every_recipe"] = bool(results["blend"]["nested_cv"] > top)
    return out


def print_table(results: dict, console: Console) -> None:
    c = results["conditions"]
    table = Table(
        title=f"long-tail recipes: {c['backbone']} at {c['image_size']} px, {c['epochs']} epochs, {c['n_train']} train / {c['n_test']} test "
        f"images ({c['difficulty']}), 5 folds; competition score (higher is better)"
    )
    for column in ("recipe", "rule", "nested CV", "argmax", "bAcc", "AUC", "solution", "min"):
        table.add_column(column, justify="left" if column in ("recipe", "rule") else "right")
    table.add_row("trivial", "majority", f"{results['trivial']:+.3f}", "", "", "", f"{results['trivial_solution']:+.3f}", "", style="dim")
    for name, r in results["recipes"].items():
        table.add_row(
            name, r["decision"], f"{r['nested_cv']:+.3f}", f"{r['argmax']:+.3f}", f"{r['balanced_accuracy']:.3f}",
            f"{r['macro_auc']:.3f}", f"{r['solution']:+.3f}", f"{r['minutes']:.1f}",
        )
    if "blend" in results:
        b = results["blend"]
        table.add_row("[bold]blend[/]", "all recipes", f"[bold]{b['nested_cv']:+.3f}", "", "", "", f"[bold]{b['solution']:+.3f}", "")
    console.print(table)
    console.print(
        "nested CV: the kit's decision (rule column) fitted on 4 folds, scored on the 5th; argmax: the same for plain argmax; "
        "bAcc: balanced accuracy of the raw OOF argmax (the long-tail papers' figure); AUC: macro one-vs-rest on OOF; "
        "solution: the recipe's own submission (`kit blend --variants <recipe>`) on the synthetic solution.csv; min: wall minutes of `kit train`"
    )
    g = results["goals"]
    if "best_minus_ce" in g:
        mark = "met" if g["best_beats_ce_by_0.3"] else "NOT met"
        console.print(f"goal best recipe ≥ ce + 0.3: {mark} ({g['best_recipe']} {g['best_minus_ce']:+.4f} over ce)")
    if "blend_minus_best_single" in g:
        mark = "met" if g["blend_beats_every_recipe"] else "NOT met"
        console.print(f"goal blend > every recipe: {mark} (blend − best single {g['blend_minus_best_single']:+.4f})")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    console = Console()
    start = time.perf_counter()
    results = run(args, console)
    results["conditions"]["total_minutes"] = (time.perf_counter() - start) / 60
    print_table(results, console)
    from kit.files import write_json

    write_json(args.out, results)
    console.print(f"{results['conditions']['total_minutes']:.1f} minutes in all; wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
