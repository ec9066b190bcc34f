"""Where every artifact of the kit lives: the one module that spells the file names under oof/, runs/ and
submissions/ (and the studies' storage), so no stage spells a name another stage reads (docs/files.md).

oof/ (paths.oof)
  <variant>.npz + <variant>.json           kit train: the OOF and its metadata (kit.artifacts, kit.records.OofMeta)
  <variant>.seed<s>.npz + .json            kit train: one seed's OOF of a variant with `seeds`
  <target>.decision.json                   kit calibrate: the chosen decision (kit.decision.rules.Decision)
  <target>.calibration.json                kit calibrate: the candidates' report (kit.records.CalibrationReport)
  <target>.per_class.png                   kit calibrate
  blend_<name>.npz + .json + .decision.json  kit blend: the blended OOF, to blend again
  optuna.db (+ .lock, .holder.json)        kit calibrate and kit blend: the Optuna studies (calibrate.storage)
runs/ (paths.runs)
  <variant>/[seed<s>/]fold<k>/             kit train: preds.npz, last.pt, best.pt (decoupled.pt after cRT/τ-norm), metrics.csv, curves.png, job.json
  doctor.json                              kit doctor: the rates `kit plan` reads (kit.records.DoctorReport)
  timings.jsonl                            make demo (KIT_TIMINGS): each kit command's wall time (kit.timings)
submissions/ (paths.submissions)
  <name>.csv + <name>.json                 kit blend: the submission and its provenance (kit.records.Provenance)
  <name>_confusion.png, _per_class.png, _reliability.png   kit blend
  predict_<name>.csv                       kit predict: the blend (or a variant) re-run on images
  ledger.csv (+ .ledger.csv.lock)          kit submit / kit submissions
  cv_vs_public.png                         kit submissions
  report.html                              kit report

`artifact_at(path, cfg)` says which stage owns a path, so a stage can refuse to write over another's file.
Light on purpose: the config loader imports the reserved names from here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.config import CompetitionConfig

# --- oof/ ---
OOF_EXT = ".npz"
META_EXT = ".json"  # the JSON beside an OOF or a submission
DECISION_SUFFIX = ".decision"
CALIBRATION_SUFFIX = ".calibration"
PER_CLASS_SUFFIX = ".per_class"
BLEND_OOF_PREFIX = "blend_"
SEED_SUFFIX = re.compile(r"\.seed\d+$")  # oof/<variant>.seed<s>.npz: a variant name may not end like this
STUDIES_NAME = "optuna"
LOCK_EXT = ".lock"
HOLDER_SUFFIX = ".holder"

# --- runs/<variant>/[seed<s>/]fold<k>/ ---
PREDS_FILE = "preds.npz"  # the job's result: held-out and test logits, priors, identity
LAST_FILE = "last.pt"  # full training state, written every epoch (resume)
BEST_FILE = "best.pt"  # weights and held-out logits of the best epoch
DECOUPLED_FILE = "decoupled.pt"  # after cRT/τ-norm: the re-balanced weights preds.npz's logits came from (else best.pt's are)
METRICS_FILE = "metrics.csv"  # one row per epoch
CURVES_FILE = "curves.png"
JOB_RECORD = "job.json"  # the ray executor's record of each attempt
PREVIOUS_SUFFIX = ".previous"  # an earlier run's preds.npz, last.pt, best.pt, kept until the new run has its result
DOCTOR_NAME = "doctor.json"  # runs/doctor.json
TIMINGS_FILE = "timings.jsonl"  # runs/timings.jsonl: make demo's KIT_TIMINGS log (kit.timings)

# --- submissions/ ---
SUBMISSION_EXT = ".csv"
PICTURE_SUFFIXES = ("_confusion", "_per_class", "_reliability")  # submissions/<name>_confusion.png, ...
PREDICT_PREFIX = "predict_"  # submissions/predict_<name>.csv: kit predict's default output
LEDGER_NAME = "ledger.csv"
CV_VS_PUBLIC_NAME = "cv_vs_public.png"
REPORT_NAME = "report.html"
TEMP_EXT = ".tmp"  # kit.files.atomic_write's temp files



def studies_url(oof_dir: str | Path) -> str:
    """calibrate.storage's default: one SQLite database of Optuna studies in the OOF folder."""
    return f"sqlite:///{Path(oof_dir).as_posix()}/{STUDIES_NAME}.db"


DEFAULT_STORAGE = studies_url("oof")
PACKAGE_STORAGE = f"sqlite:///kit-{STUDIES_NAME}.db"  # a code competition's notebook: studies in its working folder

# Names a variant, target or submission may not take, or end with: the kit writes files of these names itself.
RESERVED_NAMES = (Path(LEDGER_NAME).stem, Path(CV_VS_PUBLIC_NAME).stem, STUDIES_NAME, "folds", "all")  # "all": a keyword
RESERVED_SUFFIXES = (CALIBRATION_SUFFIX, DECISION_SUFFIX, PER_CLASS_SUFFIX, HOLDER_SUFFIX, LOCK_EXT, TEMP_EXT, *PICTURE_SUFFIXES)


# --- oof/ ---
def oof_in(folder: str | Path, stem: str) -> Path:
    """<folder>/<stem>.npz: an OOF file in a folder that is not (or not yet) a config's paths.oof (a package's copy)."""
    return Path(folder) / f"{stem}{OOF_EXT}"


def oof_npz(cfg: CompetitionConfig, variant: str) -> Path:
    """oof/<variant>.npz (also a target or a blend member by name)."""
    return Path(cfg.paths.oof) / f"{variant}{OOF_EXT}"


def seed_oof_stem(variant: str, seed: int) -> str:
    """The per-seed OOF's file stem, oof/<variant>.seed<s>.npz; `load_model` refuses variant names of this form."""
    return f"{variant}.seed{seed}"


def oof_meta_json(oof_path: str | Path) -> Path:
    """The metadata JSON beside an OOF file (`kit train` writes it; a hand-made OOF needs one)."""
    return Path(oof_path).with_suffix(META_EXT)


def decision_json(oof_path: str | Path) -> Path:
    """<target>.decision.json beside the OOF it was fitted on."""
    return _beside(oof_path, f"{DECISION_SUFFIX}.json")


def calibration_json(oof_path: str | Path) -> Path:
    """<target>.calibration.json beside the OOF: `kit calibrate`'s report."""
    return _beside(oof_path, f"{CALIBRATION_SUFFIX}.json")


def calibration_per_class_png(oof_path: str | Path) -> Path:
    return _beside(oof_path, f"{PER_CLASS_SUFFIX}.png")


def calibration_reports(cfg: CompetitionConfig) -> list[Path]:
    """Every oof/<target>.calibration.json, sorted."""
    return sorted(Path(cfg.paths.oof).glob(f"*{CALIBRATION_SUFFIX}.json"))


def calibration_target(report_path: str | Path) -> str:
    """The target a calibration report belongs to, by its file name."""
    return Path(report_path).name.removesuffix(f"{CALIBRATION_SUFFIX}.json")


def oof_of_calibration(report_path: str | Path, target: str) -> Path:
    """The OOF a calibration report sits beside."""
    return Path(report_path).with_name(f"{target}{OOF_EXT}")


def blend_oof_npz(cfg: CompetitionConfig, name: str) -> Path:
    """oof/blend_<name>.npz: the blend's mixture as one OOF, to be blended again."""
    return oof_npz(cfg, f"{BLEND_OOF_PREFIX}{name}")


def blend_decision_json(cfg: CompetitionConfig, name: str) -> Path:
    return decision_json(blend_oof_npz(cfg, name))


def _beside(oof_path: str | Path, ending: str) -> Path:
    path = Path(oof_path)
    return path.with_name(f"{path.stem}{ending}")


# --- runs/ ---
def run_dir(cfg: CompetitionConfig, variant: str, fold: int, seed: int | None = None) -> Path:
    """runs/<variant>/fold<k>; a job of a variant's `seeds` list: runs/<variant>/seed<s>/fold<k>, except the
    competition's own seed, which is the variant's own job (same identity, same draws) and shares its folder."""
    base = Path(cfg.paths.runs) / variant
    if seed is not None and seed != cfg.seed:
        base = base / f"seed{seed}"
    return base / f"fold{fold}"


def set_aside(path: Path) -> Path:
    """Where an earlier run's job file waits while a fresh run starts (removed once the new preds.npz exists)."""
    return path.with_name(f"{path.name}{PREVIOUS_SUFFIX}")


def doctor_json(cfg: CompetitionConfig) -> Path:
    """runs/doctor.json: written by `kit doctor` (the rates it measured here), read by `kit plan`."""
    return Path(cfg.paths.runs) / DOCTOR_NAME


# --- submissions/ ---
def predict_csv(cfg: CompetitionConfig, name: str) -> Path:
    """kit predict's default output for blend (or variant) `name`."""
    return Path(cfg.paths.submissions) / f"{PREDICT_PREFIX}{name}{SUBMISSION_EXT}"


def submission_csv(cfg: CompetitionConfig, name: str) -> Path:
    return Path(cfg.paths.submissions) / f"{name}{SUBMISSION_EXT}"


def provenance_json(csv_path: str | Path) -> Path:
    """The provenance JSON `kit blend` writes beside a submission CSV."""
    return Path(csv_path).with_suffix(META_EXT)


def submission_csvs(cfg: CompetitionConfig) -> list[Path]:
    """The submission CSVs in paths.submissions (the ledger is not one)."""
    return [p for p in Path(cfg.paths.submissions).glob(f"*{SUBMISSION_EXT}") if p.name != LEDGER_NAME]


def provenance_jsons(cfg: CompetitionConfig) -> list[Path]:
    """Every JSON in paths.submissions, sorted (the blends' provenance among them)."""
    return sorted(Path(cfg.paths.submissions).glob(f"*{META_EXT}"))


def submission_picture(cfg: CompetitionConfig, name: str, kind: str) -> Path:
    """submissions/<name>_<kind>.png, kind one of confusion, per_class, reliability."""
    suffix = f"_{kind}"
    if suffix not in PICTURE_SUFFIXES:
        raise ValueError(f"unknown submission picture {kind!r}")
    return Path(cfg.paths.submissions) / f"{name}{suffix}.png"


def ledger_csv(submissions_dir: str | Path) -> Path:
    return Path(submissions_dir) / LEDGER_NAME


def ledger_lock(ledger: str | Path) -> Path:
    ledger = Path(ledger)
    return ledger.parent / f".{ledger.name}{LOCK_EXT}"


def cv_vs_public_picture(cfg: CompetitionConfig) -> Path:
    return Path(cfg.paths.submissions) / CV_VS_PUBLIC_NAME


def report_html(cfg: CompetitionConfig) -> Path:
    return Path(cfg.paths.submissions) / REPORT_NAME


# --- studies ---
def study_lock_files(storage: Path, key: str) -> tuple[Path, Path]:
    """(lock, holder JSON) of a study storage file: one pair for all studies ("all", SQLite) or one per name."""
    suffix = "" if key == "all" else "." + hashlib.sha256(key.encode()).hexdigest()[:12]
    return storage.with_name(f"{storage.name}{suffix}{LOCK_EXT}"), storage.with_name(f"{storage.name}{suffix}{HOLDER_SUFFIX}.json")


# --- who owns a path ---
@dataclass(frozen=True)
class Artifact:
    """A file the kit writes: what it is and the stage that owns it (the only one that writes it)."""

    kind: str
    stage: str

    def __str__(self) -> str:
        return f"{self.kind} (written by `{self.stage}`)"


OOF_FILE = Artifact("an OOF file", "kit train")
OOF_META = Artifact("an OOF's metadata JSON", "kit train")
DECISION = Artifact("a decision file", "kit calibrate")
CALIBRATION = Artifact("a calibration report", "kit calibrate")
CALIBRATION_PICTURE = Artifact("a calibration picture", "kit calibrate")
BLEND_OOF = Artifact("a blend's OOF file", "kit blend")
BLEND_META = Artifact("a blend's OOF metadata JSON", "kit blend")
BLEND_DECISION = Artifact("a blend's decision file", "kit blend")
STUDIES = Artifact("the Optuna studies' storage", "kit calibrate")
RUN_FILE = Artifact("a training job's file", "kit train")
DOCTOR = Artifact("the doctor's report", "kit doctor")
TIMINGS = Artifact("the commands' timings log", "kit timings")
SUBMISSION = Artifact("a submission", "kit blend")
PREDICTION = Artifact("a prediction", "kit predict")
PROVENANCE = Artifact("a submission's provenance JSON", "kit blend")
SUBMISSION_PICTURE = Artifact("a blend picture", "kit blend")
LEDGER = Artifact("the submissions ledger", "kit submit")
CV_VS_PUBLIC = Artifact("the public-vs-CV picture", "kit submissions")
REPORT = Artifact("the HTML report", "kit report")
FOLDS = Artifact("the folds file", "kit folds")


def artifact_at(path: str | Path, cfg: CompetitionConfig) -> Artifact | None:
    """Which artifact `path` is (and so which stage owns it), by where it lies and its name; None for a path the
    kit does not write. A stage given an output path (`--out`) refuses one another stage owns."""
    path = _absolute(path)
    storage = _storage_file(cfg.calibrate.storage)
    if storage is not None:
        storage = _absolute(storage)
        if path == storage or (path.parent == storage.parent and path.name.startswith(storage.name + ".")
                               and path.name.endswith((LOCK_EXT, f"{HOLDER_SUFFIX}.json"))):
            return STUDIES
    if path == _absolute(cfg.folds.path):
        return FOLDS
    for folder, which in ((cfg.paths.oof, _in_oof), (cfg.paths.runs, _in_runs), (cfg.paths.submissions, _in_submissions)):
        folder = _absolute(folder)
        if path.is_relative_to(folder) and path != folder:
            return which(path.relative_to(folder))
    return None


def _in_oof(rel: Path) -> Artifact | None:
    if len(rel.parts) != 1:
        return None
    name, blend = rel.name, rel.name.startswith(BLEND_OOF_PREFIX)
    if name.endswith(f"{DECISION_SUFFIX}.json"):
        return BLEND_DECISION if blend else DECISION
    if name.endswith((f"{CALIBRATION_SUFFIX}.json",)):
        return CALIBRATION
    if name.endswith(f"{PER_CLASS_SUFFIX}.png"):
        return CALIBRATION_PICTURE
    if name.endswith(OOF_EXT):
        return BLEND_OOF if blend else OOF_FILE
    if name.endswith(META_EXT):
        return BLEND_META if blend else OOF_META
    return None


def _in_runs(rel: Path) -> Artifact | None:
    if rel == Path(DOCTOR_NAME):
        return DOCTOR
    if rel == Path(TIMINGS_FILE):
        return TIMINGS
    return RUN_FILE if len(rel.parts) > 1 else None


def _in_submissions(rel: Path) -> Artifact | None:
    if len(rel.parts) != 1:
        return None
    name = rel.name
    if name in (LEDGER_NAME, ledger_lock(LEDGER_NAME).name):
        return LEDGER
    if name == CV_VS_PUBLIC_NAME:
        return CV_VS_PUBLIC
    if name == REPORT_NAME:
        return REPORT
    if name.endswith(".png") and Path(name).stem.endswith(PICTURE_SUFFIXES):
        return SUBMISSION_PICTURE
    if name.endswith(SUBMISSION_EXT):
        return PREDICTION if name.startswith(PREDICT_PREFIX) else SUBMISSION
    if name.endswith(META_EXT):
        return PROVENANCE
    return None


def owned_by_another(path: str | Path, cfg: CompetitionConfig, stage: str) -> Artifact | None:
    """The artifact at `path` when a stage other than `stage` (e.g. "kit report") owns it; else None."""
    found = artifact_at(path, cfg)
    return found if found is not None and found.stage != stage else None


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _storage_file(url: str) -> Path | None:
    from kit.studies import storage_file  # the URL's grammar lives with the studies

    return storage_file(url)
