"""Stage `kit init`: a competition config written from the competition's own files.

Detection (kit/data/detect.py) decides the [data] keys and the task, each with its reason; this stage
opens the data with exactly those keys through the same reader `kit folds` uses (so the config is known
to work before it is written), picks the largest fold count up to 5 that puts every class in every
fold, writes the commented TOML and prints what it found and why. Nothing is guessed: what the files do
not decide stops with one line naming the key to set.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kit.config import CompetitionConfig, DataConfig, KaggleConfig, load_competition
from kit.data.detect import Layout, detect_layout
from kit.data.folds import max_folds
from kit.data.sources import open_source
from kit.errors import KitError
from kit.files import write_text
from kit.paths import studies_url

MAX_FOLDS = 5
DEFAULT_VARIANTS = ("convnext_tiny_224", "convnext_tiny_256", "efficientnet_b0_256")
_KEY_ORDER = (
    "train_csv", "test_csv", "sample_submission", "id_column", "class_columns", "label_column", "label_separator",
    "none_label", "patient_column", "train_images", "test_images",
)


def init(
    data_dir: Path, output: Path | None = None, competition: str | None = None, force: bool = False, console: Console | None = None
) -> Path:
    """Detect `data_dir`'s layout, check it with the data reader, write the config; return its path."""
    console = console or Console()
    layout = detect_layout(data_dir)
    slug = competition or Path(data_dir).resolve().name
    name = _safe_name(slug)
    output = Path(output) if output is not None else Path("configs") / f"{name}.toml"
    if output.exists() and not force:
        raise KitError(f"{output}: exists; pass --output another path, or --force to replace it")
    cfg = CompetitionConfig(task=layout.task, data=DataConfig(source="kaggle", dir=Path(data_dir), **layout.data), source_file=output)
    source = open_source(cfg)  # the reader `kit folds` uses: the keys work before they are written
    n_folds, fold_why = _fold_count(source.train.labels, source.train.groups, source.classes)
    layout.found("folds.n_folds", str(n_folds), fold_why)
    text = config_text(layout, Path(data_dir), name, slug, n_folds, competition is not None)
    write_text(output, text)
    load_competition(output)  # what was written reads back
    _print(console, layout, data_dir, output, len(source.train), len(source.test))
    return output


def _safe_name(slug: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in slug).strip("-")
    return name or "competition"


def _fold_count(labels, groups, classes: list[str]) -> tuple[int, str]:
    """Up to 5 folds, fewer when a class has fewer images (or patients) than that."""
    room = max_folds(labels, groups)
    smallest = int(room.argmin())
    if room[smallest] < 2:
        raise KitError(f"class '{classes[smallest]}' has a single {'patient' if groups is not None else 'image'}: no fold split can hold it out; "
                       "add images of it, or drop the class")
    n_folds = int(min(MAX_FOLDS, room[smallest]))
    if n_folds == MAX_FOLDS:
        return n_folds, f"every class has at least {MAX_FOLDS} {'patients' if groups is not None else 'images'}"
    return n_folds, f"class '{classes[smallest]}' has {int(room[smallest])} {'patients' if groups is not None else 'images'}: one in each fold"


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string


def config_text(layout: Layout, data_dir: Path, name: str, slug: str, n_folds: int, slug_given: bool) -> str:
    """The commented TOML: the detected keys with their reasons, and per-config paths so runs never mix."""
    why = {f.key: f.why for f in layout.findings}
    data_lines = ['source = "kaggle"', f"dir = {_toml(str(data_dir))}"]
    for key in _KEY_ORDER:
        if key in layout.data:
            data_lines.append(f"{key} = {_toml(layout.data[key])}" + (f"  # {why[key]}" if key in why else ""))
    data_lines.append('on_bad_image = "stop"  # "skip" leaves missing or unreadable images out (they are listed)')
    left_out = why.get("(left out)") and next(f.value for f in layout.findings if f.key == "(left out)")
    known_slug = slug == KaggleConfig().competition
    metric = (
        'name = "linear"  # this competition\'s: per class (TP - FP - 5 FN) / N_c, mean over classes\na = 1.0\nb = 1.0\nw = 5.0'
        if known_slug
        else 'name = "linear"  # CHECK: the files do not say the metric; "linear" (with a, b, w), "macro_f1" or "balanced_accuracy"\n'
        "a = 1.0  # linear: per class (a TP - b FP - w FN) / N_c, mean over classes\nb = 1.0\nw = 1.0"
    )
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
seed = 42
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
