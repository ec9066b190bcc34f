"""The JSON records one stage writes and another reads, typed (pydantic) and read and written only here:
the OOF metadata (`oof/<variant>.json`), `kit calibrate`'s report (`oof/<target>.calibration.json`), a
submission's provenance (`submissions/<name>.json`) and `kit doctor`'s report (`runs/doctor.json`).
Where they lie is kit.paths; docs/files.md says what each key means.

A record keeps every key it was given (extra keys too) in the order given, so a record written here is the
same bytes as the dict it replaces. A file that is not JSON, is truncated, or misses a key a reader needs is
one KitError line naming the file and the key, and saying which command writes it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_serializer, model_validator

from kit.errors import KitError
from kit.files import write_json


class Record(BaseModel):
    """A JSON object with typed keys; every other key is kept (extra="allow"), all in the order given."""

    model_config = ConfigDict(extra="allow")
    WRITTEN_BY: ClassVar[str] = "the stage that made it"  # the remedy in a refusal: "write it again with ..."
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler):
        record = handler(data)
        if isinstance(data, dict):
            record._order = list(data)
        return record

    @model_serializer(mode="wrap")
    def _in_order(self, handler) -> dict[str, Any]:
        dumped = handler(self)
        order = [k for k in self._order if k in dumped] + [k for k in dumped if k not in self._order]
        return {k: dumped[k] for k in order}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the keys given, in their order, nested records as dicts (keys never given left out)."""
        return self.model_dump(mode="python", exclude_unset=True)

    def write(self, path: str | Path) -> None:
        """Atomically, as kit.files.write_json writes any JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def parse(cls, data: Any, source: str | Path) -> Self:
        """`data` as this record; one KitError line naming `source` and the first bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise KitError(f"{source}: {_first_problem(exc)}; write it again with {cls.WRITTEN_BY}") from None

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """The record in `path`; KitError when it is missing, not JSON, truncated or misses a key."""
        path = Path(path)
        data = read_json(path, cls.WRITTEN_BY)
        if data is None:
            raise KitError(f"{path}: file not found; write it with {cls.WRITTEN_BY}")
        return cls.parse(data, path)

    @classmethod
    def read_if_exists(cls, path: str | Path) -> Self | None:
        """As `read`, but None when there is no file."""
        data = read_json(path, cls.WRITTEN_BY)
        return None if data is None else cls.parse(data, path)


def read_json(path: str | Path, written_by: str = "the stage that made it") -> dict[str, Any] | None:
    """A JSON object from `path`, or None when there is no file; KitError when it is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KitError(f"{path}: not valid JSON ({type(exc).__name__}, truncated or damaged); write it again with {written_by}") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected a JSON object; write it again with {written_by}")
    return data


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        return f"no key '{key}'"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"key '{key}': {first['msg']} (got {shown})" if key else f"{first['msg']}"


# --- oof/<variant>.json ---
class OofMeta(Record):
    """The JSON beside an OOF. `kit train` writes many keys (docs/files.md); the stages after it read `metric`
    (the metric the checkpoints were chosen for), `data_fingerprint` and, for pseudo-labels, `pseudo_labels`.
    A hand-made OOF's JSON may hold only "metric": its checks (kit.artifacts.check_oof_meta) say what is missing."""

    WRITTEN_BY: ClassVar[str] = "`kit train` (your own model: see docs/files.md, 'An OOF from your own model')"
    metric: Any = None
    data_fingerprint: str | None = None
    pseudo_labels: dict[str, Any] | None = None


# --- oof/<target>.calibration.json ---
class ScoreRow(Record):
    """One compared option of a nested-CV table (kit.decision.nested.as_report)."""

    key: str
    label: str = ""  # the display name when it was written (readers show kit.decision.names.display_name(key))
    nested_cv: float
    se: float
    per_fold: list[float]
    delta_to_best: float | None
    delta_se: float | None
    chosen: bool = False  # readers compare the key with the record's choice


class Baseline(Record):
    nested_cv: float
    se: float


class CalibrationReport(Record):
    """`kit calibrate`'s report for one target: every candidate's nested score, the choice, the fits."""

    WRITTEN_BY: ClassVar[str] = "`kit calibrate`"
    target: str
    task: str
    metric: dict[str, Any]
    direction: str = "maximize"  # "minimize" for log-loss: a lower score is better
    n_folds: int
    fitted_on: str | None
    selection: str
    rows: list[ScoreRow]
    in_sample: dict[str, float]
    nested_cv: dict[str, float]
    trivial_baseline: Baseline
    chosen: str
    chosen_nested_cv: float
    best: str
    temperature: float
    alpha: float
    fitted_per_fold: dict[str, dict[str, dict[str, Any]]]
    storage: str = ""
    study: str = ""

    def row(self, key: str) -> ScoreRow:
        return next(r for r in self.rows if r.key == key)


# --- submissions/<name>.json ---
class SubmissionMeta(Record):
    """The provenance JSON beside a submission CSV, as `kit submit` and `kit score` read it: defensively, since
    an older kit wrote no `csv_sha256` and a CSV from elsewhere may come with a JSON of a few keys."""

    WRITTEN_BY: ClassVar[str] = "`kit blend`"
    csv_sha256: str | None = None  # the CSV's bytes this JSON describes
    synthetic: bool = False
    variants: Any = None


class OwnDecision(Record):
    variant: str
    rule: str
    nested_cv: float


class BlendProvenance(SubmissionMeta):
    """A blend's provenance: what `kit report` shows. The keys every kit has written are required; those an
    older kit did not write have their empty default (kept out of the JSON when unset)."""

    name: str = ""  # kit report names a blend by its file
    variants: list[str]
    weights: dict[str, float] | None = None
    weighting: str
    decision_rule: str
    selection: str
    metric: dict[str, Any] = {}
    nested_cv_score: float
    nested_cv_se: float
    trivial_baseline: float
    nested_cv_table: list[ScoreRow]
    stacker: Any = None
    single_variant_own_decision: dict[str, OwnDecision | None] = {}
    notes: list[str] = []

    @staticmethod
    def is_one(data: dict[str, Any]) -> bool:
        """Whether a submission's JSON is a blend's (the ledger and hand-made JSONs are not)."""
        return "nested_cv_table" in data and "variants" in data


def read_blend_provenance(path: str | Path) -> BlendProvenance | None:
    """A blend's provenance JSON; None when the file is another JSON (not a blend's)."""
    data = read_json(path, BlendProvenance.WRITTEN_BY)
    if data is None or not BlendProvenance.is_one(data):
        return None
    return BlendProvenance.parse(data, path)


# --- runs/doctor.json ---
class DoctorData(Record):
    n_train: int
    n_test: int
    n_classes: int | None = None  # not read by kit plan
    n_folds: int


class DoctorVariant(Record):
    """One variant's row: its recipe's sizes and the rates measured here (plus memory, loader, compile advice).
    The values `kit plan` divides by and counts with are checked there (kit.stages.plan._check_rows), in its words."""

    epochs: Any = None
    batch_size: Any = None
    max_train_images: Any = None
    epoch_images_per_s: Any = None
    inference_images_per_s: Any = None


class DoctorReport(Record):
    WRITTEN_BY: ClassVar[str] = "`kit doctor`"
    machine: dict[str, Any] = {}
    data: DoctorData
    compile_probe: dict[str, Any] = {}
    variants: dict[str, DoctorVariant]
