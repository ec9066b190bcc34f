"""`python -m benchmarks.longtail [--quick] [--difficulty realistic] [--recipes ce,crt|core] [--pipelines ...]`

Drives the kit through its CLI (`kit synth`, `folds`, `train`, `calibrate`, `blend`) in a scratch
directory and scores each submission against the synthetic `solution.csv`. Each stage's output goes to
`<workdir>/logs/`; a failed recipe stage stops the run with the tail of its log.

Beside the recipes, pipeline rows built on them (v2, issue 21): `stack` (the blend of all recipes with the
level-2 "stack" weighting), `pseudo` (a second round of the best recipe, by nested CV, with pseudo-labels
from its first round), `seeds3` (the best recipe with three seeds: seed 0 is the recipe's own run, reused
when its job identity allows, so two seeds are trained) and `blend_all` (`kit blend` over the recipes and
the pipelines that have an OOF). A pipeline whose kit feature is missing, or whose stage fails, is skipped
with one line saying why, and the JSON says so under "skipped". The JSON compares the best pipeline with
the best recipe by the paired standard error of their per-fold nested-CV differences (the same 5 outer
folds), and benchmarks/results/longtail.md holds the table as markdown (`--render` rewrites it from a JSON).

Sizing of the full run (estimated 40-45 minutes alone on 2 CPU cores: the 8 recipes took 22.8 in v1; the
pipelines add 3 trainings, one on 1.3x the images, and two blends with the stacker): 5,000 training / 1,700 test images at 64 px (the size of `make demo`),
every class with at least 10 training images so that each of the 5 folds holds at least one image of
every class (the harness checks it after `kit folds` and stops if a class is missing from a fold: its
metric term would be undefined there), test_resnet from scratch, 5 epochs. `--recipes core` (4 recipes)
should take about 25. `--quick` (400 / 200 images at 32 px, 1 epoch, recipes ce, logit_adjusted and
crt, on the data `kit synth` makes by default) checks the plumbing, not the numbers.
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
# Named recipe subsets for --recipes (a comma list works too); "core": the best four of the v1 run, about 25 minutes in all.
SUBSETS = {"all": None, "core": "ce,sqrt_sampler,logit_adjusted,crt"}
PIPELINES = ("stack", "pseudo", "seeds3", "blend_all")
# The pseudo-label round's keys (the train helper's interface): the first round's soft labels at T = 1, no floor.
PSEUDO_KEYS = {"pseudo_label_temperature": 1.0, "pseudo_label_min_confidence": 0.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.longtail", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch: checks the plumbing")
    parser.add_argument("--difficulty", default=None, help="passed to `kit synth --difficulty` (full run: realistic; --quick: not passed)")
    parser.add_argument("--recipes", default=None,
                        help=f"comma list of recipe names, or a subset {list(SUBSETS)} (default: all; --quick: ce,logit_adjusted,crt)")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help=f"comma list of {list(PIPELINES)}, or none")
    parser.add_argument("--render", type=Path, default=None, help="only print the table and write the markdown of this results JSON")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--min-per-class", type=int, default=None, help="smallest class in train (>= 5 folds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--backbone", default=BASE["backbone"], help="demo backbone: test_resnet, test_efficientnet or chestmnist_cnn")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the kit commands (default: torch's, one per core)")
    parser.add_argument("--data", type=Path, default=None, help="an existing `kit synth` dataset to use instead of writing one")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (emptied first)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (its markdown goes beside it, .md)")
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

    def __call__(self, name: str, *args: str, config: bool | Path = True, check: bool = True) -> float:
        """Seconds the command took. `config`: True for the run's config, a path for another one, False for none.
        `check` False: a failure raises StageFailed (the caller skips what needed it) instead of stopping the run."""
        log = self.work / "logs" / f"{name}.log"
        config_path = self.config if config is True else config
        command = [*KIT, *(["--config", str(config_path)] if config_path else []), *args]
        start = time.perf_counter()
        with log.open("w") as out:
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.work)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            if not check:
                raise StageFailed(f"`kit {' '.join(args)}` failed (exit {done.returncode}): {lines[-1] if lines else ''} (log {log})")
            tail = "\n".join(lines[-15:])
            raise SystemExit(f"benchmarks.longtail: `{' '.join(args)}` failed (exit {done.returncode}); end of {log}:\n{tail}")
        return seconds


class StageFailed(Exception):
    """A pipeline's stage failed: its row is skipped with this one line, the rest of the benchmark goes on."""


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
    """Nested-CV (kit decision and argmax, with the per-fold held-out scores) from the calibration report,
    bAcc and macro AUC from the OOF logits."""
    from kit.artifacts import load_oof
    from kit.decision.metrics import balanced_accuracy, macro_auc

    oof = load_oof(work / "oof" / f"{name}.npz")
    labels = labels_of(oof.ids)
    report = json.loads((work / "oof" / f"{name}.calibration.json").read_text())
    chosen = next(row for row in report["rows"] if row["key"] == report["chosen"])
    return {
        "nested_cv": float(report["chosen_nested_cv"]),
        "se": float(chosen["se"]),
        "per_fold": [float(x) for x in chosen["per_fold"]],
        "argmax": float(report["nested_cv"]["argmax"]),
        "balanced_accuracy": balanced_accuracy(labels, np.eye(labels.shape[1], dtype=np.uint8)[oof.logits.argmax(axis=1)]),
        "macro_auc": float(macro_auc(labels, softmax(oof.logits.astype(np.float64), axis=1))),
        "decision": str(report["chosen"]),
    }


def blend_row(report: dict, key: str | None = None) -> dict:
    """A blend's nested-CV row from its provenance JSON: the chosen (weighting + rule), or `key`."""
    rows = report["nested_cv_table"]
    row = next(r for r in rows if (r["key"] == key if key else r["chosen"]))
    return {"nested_cv": float(row["nested_cv"]), "se": float(row["se"]), "per_fold": [float(x) for x in row["per_fold"]], "decision": row["key"]}


def paired(a: list[float], b: list[float]) -> dict:
    """Mean and paired standard error of the per-fold differences a − b (the same outer folds)."""
    from kit.decision.nested import standard_error

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return {"diff": float(diff.mean()), "paired_se": standard_error(diff.tolist()), "per_fold_diff": diff.tolist()}


def model_accepts(keys: dict) -> str | None:
    """None when this kit's ModelConfig takes `keys`; else the first line of its refusal (a feature not landed)."""
    from pydantic import ValidationError

    from kit.config import ModelConfig

    try:
        ModelConfig.model_validate(keys)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"key '{'.'.join(map(str, first['loc']))}': {first['msg']}"
    return None


def solution_score(config: Path, submission: Path) -> tuple[float, float]:
    """(score, trivial baseline) of a submission on the synthetic solution.csv, as `kit score` computes them."""
    from kit.config import load_competition
    from kit.stages.score import score_file

    result = score_file(submission, None, load_competition(config), console=Console(quiet=True))
    return float(result["score"]), float(result["trivial_baseline"])


def recipe_names(args: argparse.Namespace, all_recipes: dict) -> list[str]:
    """--recipes: a subset's name or a comma list (FULL: every recipe)."""
    wanted = SUBSETS.get(args.recipes, args.recipes) or ",".join(all_recipes)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_recipes]
    if unknown or not names:
        raise SystemExit(f"benchmarks.longtail: unknown recipes {unknown}; choose from {list(all_recipes)} or a subset {list(SUBSETS)}")
    return names


def pipeline_names(args: argparse.Namespace) -> list[str]:
    names = [] if args.pipelines in ("", "none") else [n.strip() for n in args.pipelines.split(",") if n.strip()]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        raise SystemExit(f"benchmarks.longtail: unknown pipelines {unknown}; choose from {list(PIPELINES)} or none")
    return names


def run(args: argparse.Namespace, console: Console) -> dict:
    import shutil

    all_recipes = recipes(args.epochs)
    names = recipe_names(args, all_recipes)
    pipelines = pipeline_names(args)
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
    skipped: dict[str, str] = {}
    steps = 3 + 2 * len(names) + 1 + 3 * len(pipelines)
    with make_progress(console) as progress:
        bar = progress.add_task("longtail: synth", total=steps)

        def stage(description: str, name: str, *cli: str, config: bool | Path = True, check: bool = True) -> float:
            progress.update(bar, description=f"longtail: {description}")
            try:
                return kit(name, *cli, config=config, check=check)
            finally:
                progress.advance(bar)

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
            stage("blend of all recipes", "blend_all_recipes", "blend", "--name", "all_recipes")
        best = max(names, key=lambda n: json.loads((work / "oof" / f"{n}.calibration.json").read_text())["chosen_nested_cv"])

        def skip(name: str, why: str) -> None:
            skipped[name] = why
            progress.console.print(f"longtail: pipeline {name} skipped: {why}", soft_wrap=True, highlight=False)

        trained: list[str] = []  # pipelines with an OOF in <work>/oof, scored like a recipe
        seeds_info: dict = {}
        if "pseudo" in pipelines:
            keys = {**base, **all_recipes[best], "pseudo_label_from": best, **PSEUDO_KEYS}
            missing = model_accepts(keys)
            if missing:
                skip("pseudo", f"this kit has no pseudo-label round ({missing})")
            else:
                (work / "models" / "pseudo.toml").write_text(model_toml(keys, f"benchmarks/longtail pipeline 'pseudo': round 2 of '{best}'"))
                try:
                    minutes["pseudo"] = stage("train pseudo", "train_pseudo", "train", "--variant", "pseudo", check=False) / 60
                    trained.append("pseudo")
                except StageFailed as exc:
                    skip("pseudo", str(exc))
        if "seeds3" in pipelines:
            try:
                seeds_info = train_seeds3(work, data, base, all_recipes[best], best, stage)
                minutes["seeds3"] = seeds_info.pop("minutes")
                trained.append("seeds3")
            except StageFailed as exc:
                skip("seeds3", str(exc))
        for name in list(trained):
            try:
                stage(f"calibrate {name}", f"calibrate_{name}", "calibrate", "--variant", name, check=False)
                stage(f"blend {name} alone", f"blend_{name}", "blend", "--variants", name, "--name", name, check=False)
            except StageFailed as exc:
                trained.remove(name)
                skip(name, str(exc))
        if "blend_all" in pipelines:
            members = names + trained
            if len(members) < 2:
                skip("blend_all", "fewer than two members")
            else:
                try:
                    stage("blend of recipes and pipelines", "blend_blend_all", "blend", "--variants", ",".join(members), "--name", "blend_all",
                          check=False)
                except StageFailed as exc:
                    skip("blend_all", str(exc))

    from kit.config import load_competition
    from kit.data.sources import open_source

    cfg = load_competition(config)
    source = open_source(cfg)

    def labels_of(ids):
        return source.train_labels_for(ids, cfg.data.dir)

    results: dict = {"recipes": {}}
    for name in names:
        figures = recipe_figures(work, name, labels_of)
        figures["minutes"] = minutes[name]
        figures["solution"], trivial_solution = solution_score(config, work / "submissions" / f"{name}.csv")
        results["recipes"][name] = figures
    first = json.loads((work / "submissions" / f"{names[0]}.json").read_text())
    results["trivial"] = float(first["trivial_baseline"])
    results["trivial_solution"] = trivial_solution
    if len(names) > 1:
        blend = json.loads((work / "submissions" / "all_recipes.json").read_text())
        results["blend"] = {
            **blend_row(blend),
            "solution": solution_score(config, work / "submissions" / "all_recipes.csv")[0],
            "weights": blend.get("weights"),
        }
    results["best_recipe"] = best
    results["pipelines"] = pipeline_results(work, config, pipelines, names, best, trained, skipped, minutes, seeds_info, labels_of, console)
    results["skipped"] = skipped
    if results["pipelines"]:
        results["best_pipeline_vs_best_recipe"] = best_pipeline_vs_best_recipe(results)
    results["goals"] = goals(results)
    results["conditions"] = {
        "quick": args.quick, "difficulty": args.difficulty or "kit synth default", "data": str(data), "n_train": args.n_train, "n_test": args.n_test,
        "image_size": args.size, "min_per_class": args.min_per_class, "smallest_class_per_fold": smallest, "folds": 5,
        "epochs": args.epochs, "backbone": args.backbone, "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or _torch_threads(), "workdir": str(work), "recipes": names, "pipelines": pipelines,
    }
    if args.data and (data / "synth.json").is_file():  # the dataset's own sizes, not the command line's
        made = json.loads((data / "synth.json").read_text())
        results["conditions"].update(n_train=made.get("n_train"), n_test=made.get("n_test"), difficulty=made.get("difficulty", "easy"))
    return results


def train_seeds3(work: Path, data: Path, base: dict, recipe: dict, best: str, stage) -> dict:
    """The best recipe with three seeds, in a config of its own (its models/ and oof/, the recipes' runs/ and
    folds): seed 0, the competition's, is the recipe's own job, so `--resume` reuses its folds when the job
    identity allows; when it does not (a kit that keys the identity on `seeds`), three fresh seeds are trained.
    The seeds' mean OOF is copied to <work>/oof/seeds3.npz so calibrate and blend see it as a member."""
    import shutil

    missing = model_accepts({**base, **recipe, "seeds": [0, 1, 2]})
    if missing:
        raise StageFailed(f"this kit has no seed ensembles ({missing})")
    models, oof = work / "models_seeds", work / "oof_seeds"
    models.mkdir(exist_ok=True)
    config = work / "competition_seeds.toml"
    text = competition_toml(work, data, [best]).replace(f'models = "{work / "models"}"', f'models = "{models}"')
    config.write_text(text.replace(f'oof = "{work / "oof"}"', f'oof = "{oof}"'))
    seconds, reused = 0.0, True
    for seeds in ([0, 1, 2], [1, 2, 3]):
        (models / f"{best}.toml").write_text(model_toml({**base, **recipe, "seeds": seeds}, f"benchmarks/longtail pipeline 'seeds3' of '{best}'"))
        try:
            seconds += stage("train seeds3", "train_seeds3", "train", "--variant", best, "--resume", config=config, check=False)
            break
        except StageFailed as exc:
            if "other inputs" not in str(exc) or seeds[0] == 1:
                raise
            reused = False  # the recipe's folds do not count as seed 0 on this kit: three fresh seeds
    log = (work / "logs" / "train_seeds3.log").read_text()
    for suffix in (".npz", ".json"):
        shutil.copyfile(oof / f"{best}{suffix}", work / "oof" / f"seeds3{suffix}")
    return {"minutes": seconds / 60, "seeds": seeds, "reused_recipe_run": reused and "already done" in log, "of": best}


def pipeline_results(work: Path, config: Path, pipelines: list[str], names: list[str], best: str, trained: list[str], skipped: dict,
                     minutes: dict, seeds_info: dict, labels_of, console: Console) -> dict:
    """{pipeline: {nested_cv, se, per_fold, solution, ...}} for every pipeline that ran."""
    out: dict = {}
    for name in pipelines:
        if name in skipped:
            continue
        if name == "stack":
            if len(names) < 2:
                skipped["stack"] = "needs two or more recipes"
                continue
            report = json.loads((work / "submissions" / "all_recipes.json").read_text())
            stack_rows = [r for r in report["nested_cv_table"] if r["key"].split(" + ")[0] == "stack"]
            if not stack_rows:
                skipped["stack"] = "this kit's `kit blend` has no 'stack' weighting"
                console.print("longtail: pipeline stack skipped: this kit's `kit blend` has no 'stack' weighting")
                continue
            row = max(stack_rows, key=lambda r: r["nested_cv"])
            chosen_is_stack = report["weighting"] == "stack"
            out["stack"] = {
                **blend_row(report, row["key"]), "members": names, "blend_chose": f"{report['weighting']} + {report['decision_rule']}",
                # the blend's submission is the stack's only when the blend chose it; otherwise no stack-only submission exists
                "solution": solution_score(config, work / "submissions" / "all_recipes.csv")[0] if chosen_is_stack else None,
            }
        elif name in ("pseudo", "seeds3"):
            if name not in trained:
                continue
            figures = recipe_figures(work, name, labels_of)
            figures["solution"] = solution_score(config, work / "submissions" / f"{name}.csv")[0]
            figures["minutes"] = minutes.get(name)
            figures["of"] = best
            if name == "seeds3":
                figures.update(seeds_info)
            out[name] = figures
        elif name == "blend_all":
            report = json.loads((work / "submissions" / "blend_all.json").read_text())
            out["blend_all"] = {**blend_row(report), "members": report["variants"], "weights": report.get("weights"),
                                "solution": solution_score(config, work / "submissions" / "blend_all.csv")[0]}
    return out


def best_pipeline_vs_best_recipe(results: dict) -> dict:
    """The best pipeline (nested CV) against the best recipe: mean and paired SE of the per-fold differences."""
    pipes, recipes_ = results["pipelines"], results["recipes"]
    pipe = max(pipes, key=lambda n: pipes[n]["nested_cv"])
    recipe = max(recipes_, key=lambda n: recipes_[n]["nested_cv"])
    out = {"pipeline": pipe, "recipe": recipe, **paired(pipes[pipe]["per_fold"], recipes_[recipe]["per_fold"])}
    solution = pipes[pipe].get("solution")
    out["solution_diff"] = None if solution is None else solution - recipes_[recipe]["solution"]
    return out


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def goals(results: dict) -> dict:
    """The issues' targets: best recipe ≥ CE + 0.3 (nested CV), the blend above every single recipe, and the best
    pipeline above the best recipe by two paired SEs in nested CV and also on solution.csv."""
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
    cmp = results.get("best_pipeline_vs_best_recipe")
    if cmp:
        solution_ok = cmp["solution_diff"] is not None and cmp["solution_diff"] > 0
        out["best_pipeline_beats_best_recipe_by_2_paired_se"] = bool(cmp["diff"] >= 2 * cmp["paired_se"] and solution_ok)
    return out


ROW_LABELS = {
    "stack": "stack (level-2 logistic regression over the recipes, `kit blend`)",
    "pseudo": "pseudo (round 2 of {of} with its pseudo-labels)",
    "seeds3": "seeds3 ({of}, seeds {seeds}, mean logits)",
    "blend_all": "blend of recipes and pipelines (`kit blend`)",
}


def _f(x, fmt: str = "+.3f") -> str:
    return "" if x is None else format(x, fmt).replace("-", "−")


def table_rows(results: dict) -> list[list[str]]:
    """The rows of the results table, as text cells (the printed table and the markdown share them)."""
    rows = [["trivial (majority class)", "", _f(results["trivial"]), "", "", "", _f(results["trivial_solution"]), ""]]
    for name, r in results["recipes"].items():
        rows.append([f"`{name}`", r["decision"], f"{_f(r['nested_cv'])} ± {_f(r['se'], '.3f')}" if "se" in r else _f(r["nested_cv"]),
                     _f(r["argmax"]), _f(r["balanced_accuracy"], ".3f"), _f(r["macro_auc"], ".3f"), _f(r["solution"]), _f(r["minutes"], ".1f")])
    if "blend" in results:
        b = results["blend"]
        weights = ", ".join(f"{w:.2f} {n}" for n, w in (b.get("weights") or {}).items() if w > 0)
        rows.append(["blend of the recipes (`kit blend`)", "; ".join(x for x in (b.get("decision", ""), weights) if x),
                     f"{_f(b['nested_cv'])} ± {_f(b['se'], '.3f')}" if "se" in b else _f(b["nested_cv"]), "", "", "", _f(b["solution"]), ""])
    for name, p in results.get("pipelines", {}).items():
        label = ROW_LABELS[name].format(of=p.get("of", ""), seeds=p.get("seeds", ""))
        rows.append([label, p.get("decision", ""), f"{_f(p['nested_cv'])} ± {_f(p['se'], '.3f')}", _f(p.get("argmax")),
                     _f(p.get("balanced_accuracy"), ".3f"), _f(p.get("macro_auc"), ".3f"), _f(p.get("solution")), _f(p.get("minutes"), ".1f")])
    for name, why in results.get("skipped", {}).items():
        rows.append([f"{name}: skipped", why, "", "", "", "", "", ""])
    return rows


COLUMNS = ["row", "kit's decision", "nested CV", "argmax (nested)", "balanced acc.", "macro AUC", "on solution.csv", "train min"]


def comparison_line(results: dict) -> str | None:
    cmp = results.get("best_pipeline_vs_best_recipe")
    if not cmp:
        return None
    met = results["goals"].get("best_pipeline_beats_best_recipe_by_2_paired_se")
    solution = "" if cmp["solution_diff"] is None else f", {_f(cmp['solution_diff'])} on solution.csv"
    return (f"best pipeline `{cmp['pipeline']}` − best recipe `{cmp['recipe']}`: {_f(cmp['diff'], '+.4f')} nested CV, paired SE "
            f"{_f(cmp['paired_se'], '.4f')} over the 5 outer folds ({_f(cmp['diff'] / cmp['paired_se'], '+.1f') if cmp['paired_se'] else '?'} SE)"
            f"{solution}; goal (≥ 2 paired SE and better on solution.csv): {'met' if met else 'not met'}")


def conditions_line(results: dict) -> str:
    c = results["conditions"]
    return (f"{c['n_train']} train / {c['n_test']} test images ({c['difficulty']}) at {c['image_size']} px, at least {c['min_per_class']} images "
            f"per class, 5 folds, {c['backbone']} from scratch, {c['epochs']} epoch{'s' if c['epochs'] != 1 else ''}, {c['cpu_count']} CPU cores, "
            f"{c.get('total_minutes', 0):.1f} minutes in all. Competition score, higher is better; ± is the standard error over the 5 outer folds.")


def markdown(results: dict, json_name: str = "benchmarks/results/longtail.json") -> str:
    """The results table as markdown, generated from the JSON (README and docs/training.md take it from here);
    the best nested-CV score in bold."""
    lines = [f"Measured (`{json_name}`): {conditions_line(results)}", "",
             "| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    scored = [*results["recipes"].values(), *([results["blend"]] if "blend" in results else []), *results.get("pipelines", {}).values()]
    best = max((r["nested_cv"] for r in scored), default=None)
    for i, row in enumerate(table_rows(results)):
        if i > 0 and best is not None and row[2].startswith(_f(best)):
            row = [*row[:2], f"**{row[2]}**", *row[3:]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    extra = comparison_line(results)
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def print_table(results: dict, console: Console) -> None:
    c = results["conditions"]
    table = Table(
        title=f"long-tail recipes and pipelines: {c['backbone']} at {c['image_size']} px, {c['epochs']} epochs, {c['n_train']} train / "
        f"{c['n_test']} test images ({c['difficulty']}), 5 folds; competition score (higher is better)"
    )
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("row", "kit's decision") else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(
        "nested CV: the kit's decision fitted on 4 folds, scored on the 5th (± SE over the 5); argmax: the same for plain argmax; "
        "bAcc: balanced accuracy of the raw OOF argmax (the long-tail papers' figure); AUC: macro one-vs-rest on OOF; "
        "solution: the row's own submission (`kit blend --variants <row>`) on the synthetic solution.csv; min: wall minutes of `kit train`; "
        "stack: its best rule in the blend's nested-CV table (solution only when the blend chose it)"
    )
    g = results["goals"]
    if "best_minus_ce" in g:
        mark = "met" if g["best_beats_ce_by_0.3"] else "NOT met"
        console.print(f"goal best recipe ≥ ce + 0.3: {mark} ({g['best_recipe']} {g['best_minus_ce']:+.4f} over ce)")
    if "blend_minus_best_single" in g:
        mark = "met" if g["blend_beats_every_recipe"] else "NOT met"
        console.print(f"goal blend > every recipe: {mark} (blend − best single {g['blend_minus_best_single']:+.4f})")
    line = comparison_line(results)
    if line:
        console.print(line, soft_wrap=True, highlight=False)


def write_outputs(results: dict, out: Path, console: Console) -> None:
    from kit.files import write_json, write_text

    write_json(out, results)
    md = out.with_suffix(".md")
    try:
        shown = out.resolve().relative_to(HERE.parent.parent)
    except ValueError:
        shown = out
    text = markdown(results, str(shown))
    write_text(md, text)
    console.print(f"wrote {out} and {md}")
    if out.resolve() == (RESULTS / "longtail.json").resolve():  # the repository's own results: its documents show the same table
        for doc in TABLE_DOCS:
            if sync_table(doc, text):
                console.print(f"updated the table in {doc}")


TABLE_DOCS = (HERE.parent.parent / "README.md", HERE.parent.parent / "docs" / "training.md")
TABLE_BEGIN, TABLE_END = "<!-- longtail-table: generated by `python -m benchmarks.longtail` from its JSON -->", "<!-- /longtail-table -->"


def table_block(doc_text: str) -> str | None:
    """The generated table inside a document's markers (None when it has none)."""
    start, end = doc_text.find(TABLE_BEGIN), doc_text.find(TABLE_END)
    return None if start < 0 or end < start else doc_text[start + len(TABLE_BEGIN):end].strip("\n") + "\n"


def sync_table(doc: Path, text: str) -> bool:
    """Put the generated table between the markers of `doc`, so README and docs show one set of figures."""
    from kit.files import write_text

    if not doc.is_file():
        return False
    current = doc.read_text()
    block = table_block(current)
    if block is None or block == text:
        return False
    start, end = current.find(TABLE_BEGIN) + len(TABLE_BEGIN), current.find(TABLE_END)
    write_text(doc, current[:start] + "\n" + text + current[end:])
    return True


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    console = Console()
    if args.render:
        results = json.loads(args.render.read_text())
        print_table(results, console)
        write_outputs(results, args.render, console)
        return results
    start = time.perf_counter()
    results = run(args, console)
    results["conditions"]["total_minutes"] = (time.perf_counter() - start) / 60
    print_table(results, console)
    write_outputs(results, args.out, console)
    console.print(f"{results['conditions']['total_minutes']:.1f} minutes in all")
    return results


if __name__ == "__main__":
    main()
