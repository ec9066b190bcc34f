"""Stage `kit init`: a competition config written from the competition's own files.

Detection (kit/data/detect.py) decides the [data] keys and the task, each with its reason; this stage
opens the data with exactly those keys through the same reader `kit folds` uses (so the config is known
to work before it is written), runs the very split `kit folds` runs to pick the largest fold count up to
5 that puts every class in every held-out fold (and the seed it used), writes the commented TOML and
prints what it found and why. Nothing is guessed: what the files do not decide stops with one line
naming the key to set.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kit.config import CompetitionConfig, DataConfig, KaggleConfig, check_name, load_competition, name_problem
from kit.data.detect import Layout, detect_layout
from kit.data.folds import assign_folds, fold_class_counts, max_folds
from kit.data.sources import open_source
from kit.decision.metrics import METRICS
from kit.errors import KitError
from kit.files import write_text
from kit.owned import check_output
from kit.paths import studies_url

MAX_FOLDS = 5
SEEDS = (42, 0, 1, 2, 3)  # the fold seeds init tries, the kit's default first
DEFAULT_VARIANTS = ("convnext_tiny_224", "convnext_tiny_256", "efficientnet_b0_256")
_KEY_ORDER = (
    "train_csv", "test_csv", "sample_submission", "id_column", "train_id_column", "drop_test_ids", "repeated_ids", "class_columns", "label_column",
    "label_separator", "none_label", "patient_column", "train_images", "test_images",
)


def init(
    data_dir: Path, output: Path | None = None, competition: str | None = None, force: bool = False, console: Console | None = None,
    metric: str | None = None,
) -> Path:
    """Detect `data_dir`'s layout, check it with the data reader, write the config (with `metric`, a name of the
    metric registry, when given); return its path."""
    console = console or Console()
    if competition is not None:
        check_name(competition, "--competition")  # before anything is read or written
    if metric is not None and metric not in METRICS:
        raise KitError(f"--metric: unknown metric {metric!r}; use one of {METRICS.names()}")
    layout = detect_layout(data_dir)
    folder_name = Path(data_dir).resolve().name
    slug = competition or (folder_name if name_problem(folder_name) is None else _safe_name(folder_name))
    name = _safe_name(slug)
    output = Path(output) if output is not None else Path("configs") / f"{name}.toml"
    if output.exists() and not force:
        raise KitError(f"{output}: exists; pass --output another path, or --force to replace it")
    cfg = CompetitionConfig(task=layout.task, data=DataConfig(source="kaggle", dir=Path(data_dir), **layout.data))
    check_output(output, "--output", cfg, stage="kit init", suffixes=(".toml",), example=f"configs/{name}.toml")
    cfg = cfg.model_copy(update={"source_file": output})
    source = open_source(cfg)  # the reader `kit folds` uses: the keys work before they are written
    n_folds, seed, fold_why = _fold_count(source.train.labels, source.train.groups, source.classes, source.task)
    layout.found("folds.n_folds", str(n_folds), fold_why)
    layout.found("folds.seed", str(seed), "the seed of that split")
    text = config_text(layout, Path(data_dir), name, slug, n_folds, competition is not None, metric_name=metric, fold_seed=seed)
    _check_text(text, output)  # a config that would not load is never written
    write_text(output, text)
    load_competition(output)  # what was written reads back
    _print(console, layout, data_dir, output, len(source.train), len(source.test))
    return output


def _check_text(text: str, output: Path) -> None:
    import tomllib

    from pydantic import ValidationError

    try:
        CompetitionConfig.model_validate({**tomllib.loads(text), "source_file": output})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KitError(f"{output}: not written: key {where} would be refused ({first['msg']}); pass --competition SLUG "
                       "(letters, digits, '.', '_' and '-')") from None


def _safe_name(slug: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in slug).strip("-")
    return name or "competition"


def _fold_count(labels, groups, classes: list[str], task: str) -> tuple[int, int, str]:
    """(n_folds, seed, why): the largest K <= 5 for which the very split `kit folds` runs (stratified, grouped
    by patient) puts every class in every held-out fold, with the first of a few seeds that does."""
    room = max_folds(labels, groups)
    smallest = int(room.argmin())
    unit = "patients" if groups is not None else "images"
    if room[smallest] < 2:
        raise KitError(f"class '{classes[smallest]}' has a single {unit[:-1]}: no fold split can hold it out; "
                       "add images of it, or drop the class")
    largest = int(min(MAX_FOLDS, room[smallest]))
    for n_folds in range(largest, 1, -1):
        for seed in SEEDS:
            fold = assign_folds(labels, groups, n_folds, seed, task)
            if (fold_class_counts(labels, fold, n_folds) > 0).all():
                why = f"the split `kit folds` runs (seed {seed}) puts every class in each of the {n_folds} held-out folds"
                if seed != SEEDS[0]:
                    why += f"; seed {SEEDS[0]} leaves a class out of one"
                if n_folds < largest:
                    why += f"; with {largest} folds every seed tried ({', '.join(map(str, SEEDS))}) leaves a class out of one"
                elif n_folds < MAX_FOLDS:
                    why += f"; class '{classes[smallest]}' has {int(room[smallest])} {unit}"
                return n_folds, seed, why
    raise KitError(f"no split into 2 or more folds puts every class in every held-out fold (class '{classes[smallest]}' has "
                   f"{int(room[smallest])} {unit}); add images of the smallest classes")


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string


def metric_text(known_slug: bool, metric: str | None) -> str:
    """The [metric] table: the one given (`--metric`), this kit's own competition's, or linear with a CHECK listing every metric."""
    if metric is not None and metric != "linear":
        kind = METRICS.get(metric).kind
        holds = {"label": "labels", "probability": "probabilities", "ranking": "probabilities (scores)"}[kind]
        return f'name = "{metric}"  # given by `kit init --metric`; submissions hold {holds}'
    if known_slug:
        return 'name = "linear"  # this competition\'s: per class (TP - FP - 5 FN) / N_c, mean over classes\na = 1.0\nb = 1.0\nw = 5.0'
    if metric == "linear":
        return 'name = "linear"  # given by `kit init --metric`: per class (a TP - b FP - w FN) / N_c, mean over classes\na = 1.0\nb = 1.0\nw = 1.0'
    names = ", ".join(f'"{n}"' for n in METRICS.names())
    return (f'name = "linear"  # CHECK: the files do not say the metric (`kit init --metric NAME`); one of {names}\n'
            "a = 1.0  # linear: per class (a TP - b FP - w FN) / N_c, mean over classes\nb = 1.0\nw = 1.0")


def config_text(layout: Layout, data_dir: Path, name: str, slug: str, n_folds: int, slug_given: bool, *,
                metric_name: str | None = None, fold_seed: int = 42) -> str:
    """The commented TOML: the detected keys with their reasons, and per-config paths so runs never mix."""
    why = {f.key: f.why for f in layout.findings}
    data_lines = ['source = "kaggle"', f"dir = {_toml(str(data_dir))}"]
    for key in _KEY_ORDER:
        if key in layout.data:
            data_lines.append(f"{key} = {_toml(layout.data[key])}" + (f"  # {why[key]}" if key in why else ""))
    data_lines.append('on_bad_image = "stop"  # "skip" leaves missing or unreadable images out (they are listed)')
    left_out = why.get("(left out)") and next(f.value for f in layout.findings if f.key == "(left out)")
    known_slug = slug == KaggleConfig().competition
    metric = metric_text(known_slug, metric_name)
    slug_note = "" if slug_given else "  # the folder's name; `kit init --competition SLUG` sets it"
    return f"""# Written by `kit init {data_dir}` from the competition's own files; every key says why it was chosen.
# Check it, then: `kit --config <this file> folds`, `train`, `blend`, `submit` (docs/data.md explains the keys).
{"# Columns left out of training: " + left_out + chr(10) if left_out else ""}
task = "{layout.task}"  # {why.get("task", "")}
seed = 42
variants = {_toml(list(DEFAULT_VARIANTS))}  # configs/models/<name>.toml: what `kit train` trains

[data]
{chr(10).join(data_lines)}

[metric]
{metric}

[folds]
n_folds = {n_folds}  # {why.get("folds.n_folds", "")}
seed = {fold_seed}
path = "folds/{name}.csv"

[calibrate]
storage = "{studies_url(f"oof/{name}")}"

[paths]
oof = "oof/{name}"
submissions = "submissions/{name}"
cache = ".cache/kit"
models = "configs/models"
runs = "runs/{name}"

[kaggle]
competition = {_toml(slug)}{slug_note}
"""


def _print(console: Console, layout: Layout, data_dir: Path, output: Path, n_train: int, n_test: int) -> None:
    table = Table(title=f"kit init {data_dir}: {n_train} train and {n_test} test images, {len(layout.classes)} classes, {layout.task}")
    table.add_column("key")
    table.add_column("found")
    table.add_column("why")
    for f in layout.findings:
        table.add_row(f.key, f.value, f.why)
    console.print(table)
    console.print(f"wrote {output}")
    console.print(f"next: kit --config {output} folds")
