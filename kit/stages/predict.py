"""Stage `kit predict`: the trained ensemble on new images (a folder, a CSV of ids, or the config's test set).

The fold models of the blend's members (or of one variant) run on the images with each variant's own
preprocessing and TTA, the blend `kit blend` fitted (or the variant's `kit calibrate` decision) decides, and
the submission is written in the sample's format (kit.inference.predict holds the how). On the config's own
test set the CSV is `kit blend`'s, byte for byte: this is how a code competition's notebook re-runs the blend
on the hidden test images (docs/code-competitions.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console

from kit.config import CompetitionConfig, check_name
from kit.data.common import Split, fingerprint, first_items
from kit.errors import KitError
from kit.files import atomic_write, read_csv
from kit.inference.predict import Plan, blend_plan, run_plan, variant_plan
from kit.paths import owned_by_another, predict_csv


def predict(
    cfg: CompetitionConfig,
    images: Path | None = None,
    *,
    ids: Path | None = None,
    name: str = "blend",
    variant: str | None = None,
    output: Path | None = None,
    batch_size: int | None = None,
    max_minutes: float | None = None,
    console: Console | None = None,
) -> Path:
    """Write the submission for `images` (None: the config's test set) and return its path."""
    console = console or Console()
    check_name(name, "--name")
    if max_minutes is not None and not max_minutes > 0:
        raise KitError(f"--max-minutes {max_minutes:g}: give the minutes predict may take, a number more than 0")
    if batch_size is not None and batch_size < 1:
        raise KitError(f"--batch-size {batch_size}: give a batch size of 1 or more")
    plan = variant_plan(cfg, variant) if variant else blend_plan(cfg, name)
    split, sample, reference = _target(cfg, images, ids, plan)
    out = Path(output) if output is not None else predict_csv(cfg, variant or name)
    owner = owned_by_another(out, cfg, "kit predict")
    if owner is not None:
        raise KitError(f"--output {out}: that is {owner}; choose another file (default: {predict_csv(cfg, variant or name)})")
    pred, _ = run_plan(plan, split, cfg, batch_size=batch_size, max_minutes=max_minutes, console=console)
    text = _submission_text(cfg, plan, split, pred, sample, reference)
    atomic_write(out, lambda f: f.write(text.encode()))
    sha = hashlib.sha256(text.encode()).hexdigest()
    console.print(f"{plan.target}: {len(split)} images → wrote {out} (sha256 {sha[:12]})", soft_wrap=True, highlight=False)
    return out


def _submission_text(cfg: CompetitionConfig, plan: Plan, split: Split, pred: np.ndarray, sample: pd.DataFrame, reference: str) -> str:
    from kit.submission import submission_text

    return submission_text(pred, np.asarray(split.ids, dtype=str), plan.classes, cfg, sample, source=f"predict {plan.target}", reference=reference)


def _target(cfg: CompetitionConfig, images: Path | None, ids: Path | None, plan: Plan) -> tuple[Split, pd.DataFrame, str]:
    """The images to predict, the frame whose format and row order the submission takes, and its name."""
    from kit.submission import read_sample, sample_path, template_frame

    if images is None:
        if ids is not None:
            raise KitError("--ids needs the IMAGES folder the ids' files are in")
        from kit.data.sources import open_source

        source = open_source(cfg)
        if list(source.classes) != plan.classes:
            raise KitError(f"{cfg.data.dir}: the data's classes {first_items(source.classes)} are not {plan.target}'s "
                           f"{first_items(plan.classes)} (in this order); point the config at the competition it was trained on")
        spath = sample_path(cfg)
        if spath is not None:
            return source.test, read_sample(spath), "the sample submission"
        return source.test, template_frame(np.asarray(source.test.ids, dtype=str), plan.classes, cfg.data.id_column), "the test ids of the data source"
    folder = Path(images)
    if not folder.is_dir():
        raise KitError(f"{folder}: not a folder; give the folder of the images to predict")
    split = _ids_split(cfg, folder, ids) if ids is not None else _folder_split(cfg, folder)
    frame = _ids_frame(cfg, ids, plan) if ids is not None else None
    if frame is None:
        frame = _sample_like(cfg, np.asarray(split.ids, dtype=str), plan)
    return split, frame, f"the ids of {ids}" if ids is not None else f"the images of {folder}"


def _image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()}


def _folder_split(cfg: CompetitionConfig, folder: Path) -> Split:
    """Every image file directly in `folder` (any extension Pillow reads), its id the file name without extension."""
    extensions = _image_extensions()
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions), key=lambda p: p.stem)
    if not files:
        raise KitError(f"{folder}: no image files (extensions Pillow reads, e.g. .png, .jpg, .tif); give the folder of the images")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise KitError(f"{folder}: ids {first_items(twice)} have two image files (one id per file name); give --ids and keep one file each")
    return _split(cfg, np.asarray(stems, dtype=str), np.asarray([str(p) for p in files], dtype=object), folder)


def _ids_split(cfg: CompetitionConfig, folder: Path, ids_csv: Path) -> Split:
    """The ids of `ids_csv` (its data.id_column), each image at the file name data.test_images gives it, in `folder`."""
    frame = read_csv(ids_csv, cfg.data.id_column, "give a CSV with the id column of the config (data.id_column)")
    if cfg.data.id_column not in frame.columns:
        raise KitError(f"{ids_csv}: no column '{cfg.data.id_column}' (data.id_column); columns: {first_items(frame.columns)}")
    ids = frame[cfg.data.id_column].astype(str).to_numpy(dtype=str)
    pattern = Path(cfg.data.test_images).name  # "test/{id}.png" -> "{id}.png" inside the given folder
    paths = np.asarray([str(folder / pattern.format(id=i)) for i in ids], dtype=object)
    return _split(cfg, ids, paths, folder)


def _split(cfg: CompetitionConfig, ids: np.ndarray, paths: np.ndarray, folder: Path) -> Split:
    lines, missing = [], np.zeros(len(paths), dtype=bool)
    for k, path in enumerate(paths):
        try:
            st = Path(path).stat()
            lines.append(f"{path}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            missing[k] = True
    if missing.any() and (missing.all() or cfg.data.on_bad_image == "stop"):
        raise KitError(f"{folder}: {int(missing.sum())} of {len(paths)} images are missing ({first_items(paths[missing])}); "
                       'check the folder and data.test_images, or set data.on_bad_image = "skip" to predict them from a blank image')
    return Split(ids, None, None, fingerprint("predict", "\n".join(map(str, paths)), "\n".join(lines)), name="predict", paths=paths,
                 missing=missing if missing.any() else None, max_pixels=cfg.data.max_image_pixels)


def _ids_frame(cfg: CompetitionConfig, ids_csv: Path, plan: Plan) -> pd.DataFrame | None:
    """The --ids CSV itself when it is a sample submission (id + the class columns, or id + one label column)."""
    from kit.submission import read_sample, submission_format

    frame = read_sample(ids_csv)
    if frame.columns[0] != cfg.data.id_column or len(frame.columns) < 2:
        return None
    try:
        submission_format(frame, plan.classes, cfg.data.id_column, str(ids_csv))
    except KitError:
        return None
    return frame


def _sample_like(cfg: CompetitionConfig, ids: np.ndarray, plan: Plan) -> pd.DataFrame:
    """The competition sample's columns and first row's values for every id (its format, these rows), or
    id + one 0/1 column per class when the competition has no sample."""
    from kit.submission import read_sample, sample_path, template_frame

    spath = sample_path(cfg)
    if spath is None:
        return template_frame(ids, plan.classes, cfg.data.id_column)
    first = read_sample(spath).iloc[0]
    return pd.DataFrame({c: ids if c == cfg.data.id_column else [first[c]] * len(ids) for c in first.index})
