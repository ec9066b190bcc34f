"""Which stage owns a path: the one check every output path a command takes (`--out`, `--output`, config
paths) passes before anything is written, so that no command replaces what another stage wrote (the ledger,
an OOF, a calibration, a provenance JSON, the studies database, the folds file, the data) or writes into a folder.

`owner_of` asks kit.paths (the one module that spells every artifact path) which stage owns a path, and adds
what kit.paths does not own: the config, the data, the cache, the variant configs, and files named like
another stage's outside the config's folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.paths import CALIBRATION_SUFFIX, DECISION_SUFFIX, DEFAULT_STORAGE, LAST_FILE, LEDGER_NAME, META_EXT, OOF_EXT, ledger_csv

if TYPE_CHECKING:
    from kit.config import CompetitionConfig

OWNED_SUFFIXES = {  # a file of these names is another stage's wherever it lies
    OOF_EXT: "an OOF or predictions file (kit train / kit blend)",
    CALIBRATION_SUFFIX + META_EXT: "a calibration (kit calibrate)",
    DECISION_SUFFIX + META_EXT: "a decision (kit calibrate / kit blend)",
    Path(LAST_FILE).suffix: "a checkpoint (kit train)",
    ".db": "a database (the Optuna studies of kit calibrate / kit blend)",
}


def studies_file(cfg: CompetitionConfig) -> Path | None:
    """The file of calibrate.storage (SQLite or journal), or None for a database server."""
    from kit.studies import storage_file  # the URL's grammar lives with the studies

    return storage_file(cfg.calibrate.storage)


def owner_of(path: str | Path, cfg: CompetitionConfig | None, stage: str = "") -> str | None:
    """What `path` is when `stage` (e.g. "kit report") must not write it (None when it may): a folder, an artifact
    another stage owns (kit.paths.owned_by_another: the ledger, OOF files and their JSON, calibrations, decisions,
    submissions and their provenance, the studies, the folds file), the config, a file under data.dir, paths.cache
    or paths.models, or a file named like another stage's wherever it lies."""
    path = Path(path)
    if path.is_dir():
        return "a folder"
    target = _resolved(path)
    name = path.name.lower()
    if cfg is not None:
        from kit.paths import owned_by_another

        artifact = owned_by_another(path, cfg, stage)
        if artifact is not None:
            return str(artifact)
        if cfg.source_file is not None and target == _resolved(Path(cfg.source_file)):
            return "the competition config"
        folders = ((cfg.paths.cache, "paths.cache (the image cache)"), (cfg.paths.models, "paths.models (the variant configs)"),
                   (cfg.data.dir, "data.dir (the competition's data)"))
        for folder, what in folders:
            if target.is_relative_to(_resolved(Path(folder))):
                return f"a file in {what}"
    if name == LEDGER_NAME:
        return "a ledger of submissions (written by `kit submit`)"
    for suffix, what in OWNED_SUFFIXES.items():
        if name.endswith(suffix):
            return what
    return None


def check_output(path: str | Path, what: str, cfg: CompetitionConfig | None, *, stage: str, suffixes: tuple[str, ...] = (),
                 example: str = "") -> Path:
    """`path` when `stage` may write it; else one KitError line saying what it is and what to give instead."""
    path = Path(path)
    instead = f"; give another file{f', e.g. {example}' if example else ''}"
    owner = owner_of(path, cfg, stage)
    if owner == "a folder":
        raise KitError(f"{what} {path}: is a folder; give a file name{f', e.g. {example}' if example else ''}")
    if owner is not None:
        raise KitError(f"{what} {path}: is {owner}; writing there would replace it{instead}")
    if suffixes and not path.name.lower().endswith(suffixes):
        raise KitError(f"{what} {path}: give a file name ending in {' or '.join(suffixes)}{f', e.g. {example}' if example else ''}")
    return path


def check_config_paths(cfg: CompetitionConfig) -> None:
    """The config's output files (folds.path, the studies file) are neither folders nor a file another stage owns
    (the ledger, the config, the competition's CSVs, each other), and its folders are not files: checked when the
    config is loaded, before any stage writes."""
    where = cfg.source_file or "the config"
    data = Path(cfg.data.dir)
    csvs = [n for n in (cfg.data.train_csv, cfg.data.test_csv, cfg.data.sample_submission) if n]  # no train_csv with class folders
    owned = {"the ledger of submissions": ledger_csv(cfg.paths.submissions),
             **{f"the competition's data file {n}": data / n for n in csvs}}
    if cfg.source_file is not None:
        owned["the competition config"] = Path(cfg.source_file)
    studies = studies_file(cfg)
    outputs = {"folds.path": (Path(cfg.folds.path), "folds/folds.csv"), "calibrate.storage": (studies, DEFAULT_STORAGE)}
    for key, (path, example) in outputs.items():
        if path is None:
            continue
        if path.is_dir():
            raise KitError(f"{where}: {key} = '{path}' is a folder; give a file, e.g. '{example}'")
        others = {**owned, **{f"the file {other} names": p for other, (p, _) in outputs.items() if other != key and p is not None}}
        for name, other in others.items():
            if _resolved(path) == _resolved(other):
                raise KitError(f"{where}: {key} = '{path}' is {name}; writing there would replace it; give another file, e.g. '{example}'")
    for key in ("oof", "submissions", "cache", "runs"):
        folder = Path(getattr(cfg.paths, key))
        if folder.is_file():
            raise KitError(f"{where}: paths.{key} = '{folder}' is a file; it must be a folder (the kit writes files into it)")


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return path.absolute()
