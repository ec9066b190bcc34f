"""Stage `kit plan`: how long the variant × fold grid takes, from the rates `kit doctor` measured here.

A fold of a variant trains `epochs` epochs on the other folds' images (capped by max_train_images, whole
batches only), predicts its held-out fold after every epoch and the test set once, at the rates in
runs/doctor.json (an epoch at the slower of model and loader; predictions at the inference rate, hflip TTA
counted). Early stopping can only make it shorter: the plan is the time of every epoch. Jobs are independent,
so N devices run N jobs at once; the grid's time on N devices is the longest device's queue when the
longest jobs are placed first. Not counted: building the image cache once and cRT's head re-training.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from kit.config import CompetitionConfig
from kit.errors import KitError
from kit.paths import doctor_json
from kit.records import DoctorReport

DEVICE_COUNTS = (1, 2, 4, 8)


def fold_seconds(row: dict[str, Any], n_train: int, n_test: int, n_folds: int, epochs: int | None = None) -> dict[str, float]:
    """One (variant, fold) job's seconds from its doctor row: epochs × (train + held-out prediction) + test prediction."""
    epochs = epochs or row["epochs"]
    train_images = n_train * (n_folds - 1) // n_folds
    if row.get("max_train_images"):
        train_images = min(train_images, row["max_train_images"])
    batch = row["batch_size"]
    seen = train_images // batch * batch if train_images > batch else train_images  # drop_last, as the trainer
    held_out = math.ceil(n_train / n_folds)
    epoch_s = seen / row["epoch_images_per_s"] + held_out / row["inference_images_per_s"]
    total = epochs * epoch_s + n_test / row["inference_images_per_s"]
    return {"train_images": seen, "epoch_s": epoch_s, "fold_s": total}


RATE_KEYS = ("epoch_images_per_s", "inference_images_per_s")  # images per second: finite, more than 0
COUNT_KEYS = ("epochs", "batch_size")  # whole numbers, 1 or more


def _check_rows(rows: object, path) -> None:
    """Every variant row of doctor.json holds what the plan divides by and counts with: one line on the first that does not."""
    if not isinstance(rows, dict) or not rows:
        raise KitError(f"{path}: no variant measured (key 'variants' is empty or not a table); run `kit doctor` again")
    for name, row in rows.items():
        if not isinstance(row, dict):
            raise KitError(f"{path}: variant {name!r} is not a table of measurements; run `kit doctor` again")
        for key in (*COUNT_KEYS, *RATE_KEYS):
            value = row.get(key)
            if value is None:
                raise KitError(f"{path}: variant {name!r} has no key {key!r}; run `kit doctor` again (a report of another kit version?)")
            number_ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            if not number_ok or (key in COUNT_KEYS and value != int(value)):
                what = "a whole number, 1 or more" if key in COUNT_KEYS else "a rate in images per second, more than 0"
                raise KitError(f"{path}: variant {name!r} has {key} = {value!r}, not {what}; run `kit doctor` again")
        extra = row.get("max_train_images")
        if extra is not None and not (isinstance(extra, int) and not isinstance(extra, bool) and extra > 0):
            raise KitError(f"{path}: variant {name!r} has max_train_images = {extra!r}, not a whole number 1 or more; run `kit doctor` again")


def makespan(jobs: list[float], devices: int) -> float:
    """Seconds until the last of `jobs` ends on `devices` devices, longest jobs placed first (LPT)."""
    queues = [0.0] * max(devices, 1)
    for seconds in sorted(jobs, reverse=True):
        heapq.heapreplace(queues, queues[0] + seconds)
    return max(queues) if jobs else 0.0


def plan(cfg: CompetitionConfig, hours: float | None = None, gpus: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """Print the grid's time per device count and what fits in `hours`, with the commands; return the numbers."""
    console = console or Console()
    path = doctor_json(cfg)
    if not path.is_file():
        raise KitError(f"{path}: no measurements yet; run `kit doctor` first (it measures each variant's speed on this machine)")
    doctor = DoctorReport.read(path)
    report = doctor.to_dict()
    rows = report["variants"]
    n_train, n_test, n_folds = doctor.data.n_train, doctor.data.n_test, doctor.data.n_folds
    _check_rows(rows, path)  # the record has every key; these are values the plan divides by and counts with
    if hours is not None and (not math.isfinite(hours) or hours <= 0):
        raise KitError(f"--hours {hours}: give the hours available, e.g. 8")
    if gpus is not None and gpus < 1:
        raise KitError(f"--gpus {gpus}: give 1 or more devices")
    if n_folds != cfg.folds.n_folds:
        console.print(f"[yellow]note:[/] {path} was measured with {n_folds} folds, the config has {cfg.folds.n_folds}; planning for {cfg.folds.n_folds}")
        n_folds = cfg.folds.n_folds
    names = list(rows)
    per_variant = {name: fold_seconds(rows[name], n_train, n_test, n_folds) for name in names}
    jobs = [per_variant[name]["fold_s"] for name in names for _ in range(n_folds)]
    counts = [gpus] if gpus else list(DEVICE_COUNTS)
    grid = {n: makespan(jobs, n) for n in counts}
    result: dict[str, Any] = {"variants": per_variant, "n_folds": n_folds, "grid_seconds": grid, "doctor": str(path),
                              "device": report.get("machine", {}).get("device_name", "?")}

    table = Table(title=f"kit plan: {len(names)} variants × {n_folds} folds on {report.get('machine', {}).get('device', '?')} "
                        f"({result['device']}), rates from {path}")
    for column in ("variant", "epochs", "images/epoch", "img/s", "per epoch", "per fold", "all folds"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name in names:
        v, row = per_variant[name], rows[name]
        table.add_row(name, str(row["epochs"]), str(v["train_images"]), f"{row['epoch_images_per_s']:.0f}", _hms(v["epoch_s"]),
                      _hms(v["fold_s"]), _hms(v["fold_s"] * n_folds))
    console.print(table)
    for n in counts:
        console.print(f"grid on {n} device{'s' if n > 1 else ''} at once: {_hms(grid[n])}  ({_command(names, n)})", highlight=False, soft_wrap=True)
    if hours is not None:
        result["fits"] = _what_fits(names, rows, per_variant, n_train, n_test, n_folds, hours=hours, counts=counts, console=console)
    console.print("[dim]all epochs counted (early stopping only shortens it); the image cache build and cRT are not[/]")
    return result


def _what_fits(names, rows, per_variant, n_train, n_test, n_folds, *, hours: float, counts: list[int], console: Console) -> dict[int, dict]:
    """Per device count: the whole grid, or the variants that fit (config order), and the epochs that fit them all."""
    budget = hours * 3600
    out: dict[int, dict] = {}
    for n in counts:
        whole = makespan([per_variant[m]["fold_s"] for m in names for _ in range(n_folds)], n)
        if whole <= budget:
            out[n] = {"all": True, "seconds": whole}
            console.print(f"{hours:g} h on {n} device{'s' if n > 1 else ''}: the whole grid fits ({_hms(whole)}): {_command(names, n)}")
            continue
        chosen: list[str] = []
        for name in names:
            trial = chosen + [name]
            if makespan([per_variant[m]["fold_s"] for m in trial for _ in range(n_folds)], n) <= budget:
                chosen = trial
        epochs = _epochs_that_fit(names, rows, n_train, n_test, n_folds, n, budget=budget)
        out[n] = {"all": False, "variants": chosen, "epochs_for_all": epochs}
        lines = [f"{hours:g} h on {n} device{'s' if n > 1 else ''}: the grid needs {_hms(whole)}"]
        if chosen:
            lines.append(f"  these variants fit with their own epochs: {_command(chosen, n)}")
        if epochs:
            lines.append(f"  every variant fits at {epochs} epochs: {_command(names, n)} --epochs {epochs}")
        if not chosen and not epochs:
            lines.append("  not even one epoch of every variant fits: fewer variants, --max-train-images or a smaller --image-size")
        console.print("\n".join(lines), highlight=False, soft_wrap=True)
    return out


def _epochs_that_fit(names, rows, n_train, n_test, n_folds, devices: int, *, budget: float) -> int | None:
    """The largest `kit train --epochs E` (the same E for every variant) whose grid fits the budget."""
    most = max(rows[m]["epochs"] for m in names)
    for epochs in range(most, 0, -1):
        jobs = [fold_seconds(rows[m], n_train, n_test, n_folds, epochs)["fold_s"] for m in names for _ in range(n_folds)]
        if makespan(jobs, devices) <= budget:
            return epochs
    return None


def _command(names: list[str], devices: int) -> str:
    executor = " --executor ray" if devices > 1 else ""
    return f"kit train --variants {','.join(names)}{executor}"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
