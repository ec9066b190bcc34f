"""The ledger `submissions/ledger.csv`: every file sent to Kaggle, its scores, and what it was made of.

One row per submission: when, which file (and its sha256), the message, the competition, Kaggle's
ref and status, the public (and, once the competition ends, private) score, the nested-CV score and
trivial baseline `kit blend` recorded in the file's provenance JSON, and the variants, weights and
decision rule behind it. A row is written as SENDING before the upload starts (so a full disk or a
read-only folder stops the submission before anything is sent, and an interrupted upload leaves a
trace), becomes PENDING with its ref once Kaggle accepts the file, and COMPLETE or ERROR once scored.
When the answer to the request that creates the submission is lost (a 5xx, a dropped connection, a
garbled body, a timeout, no ref), the row becomes UNKNOWN: the submission may exist, and `kit
submissions` looks it up in Kaggle's list (NOT_FOUND when it is not there) before the same bytes can
be sent again. Each row has its own `row_id`, so two rows of the same file in the same second differ.

Every change is a read-modify-write of the whole file under a lock file beside it (a `kit submit
--wait` and a `kit submissions` may run at once) through `atomic_write`: a reader never sees half a
ledger and a failed write keeps the old one. No credential is ever written here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.errors import KitError, scrub_secrets
from kit.files import atomic_write, write_error
from kit.leaderboard.client import RemoteSubmission
from kit.paths import ledger_csv, ledger_lock
from kit.submission import read_csv_str

COLUMNS = (
    "time", "competition", "file", "sha256", "message", "ref", "status", "public_score", "private_score",
    "nested_cv_score", "nested_cv_se", "trivial_baseline", "variants", "weights", "decision_rule", "error_description",
    "row_id",
)
SENDING = "SENDING"  # written before the upload; PENDING (with the ref) once Kaggle has the file
UNKNOWN = "UNKNOWN"  # the create request left the machine but its answer was lost: the submission may exist
NOT_FOUND = "NOT_FOUND"  # an UNKNOWN row that Kaggle's list of submissions does not hold: it was not created
LOCK_SECONDS = 60.0


def ledger_path(submissions_dir: Path) -> Path:
    return ledger_csv(submissions_dir)


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger as text columns ('' where empty); an empty frame with the columns when there is none yet."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    remedy = "restore it from a backup, or move it away to start a new ledger"
    frame = read_csv_str(path, remedy)
    missing = [c for c in COLUMNS if c not in frame.columns and c != "row_id"]  # ledgers of older kits have no row_id
    if missing:
        raise KitError(f"{path}: not a kit ledger (no column {missing[0]!r}); {remedy}")
    frame = frame.fillna("").astype(str)
    if "row_id" not in frame.columns:
        frame["row_id"] = ""
    return _fill_row_ids(frame)[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]


def _fill_row_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of an older ledger get an id made from their time, sha256 and how many such rows came before:
    the same on every read, so an id read once still finds its row when the ledger is edited later."""
    seen: dict[tuple[str, str], int] = {}
    ids = []
    for time, sha, row_id in zip(frame["time"], frame["sha256"], frame["row_id"]):
        n = seen.get((time, sha), 0)
        seen[(time, sha)] = n + 1
        ids.append(row_id or "legacy-" + hashlib.sha256(f"{time}|{sha}|{n}".encode()).hexdigest()[:16])
    frame["row_id"] = ids
    return frame


def edit_ledger(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Apply `edit` to the ledger under its lock and write the result atomically; returns what was written."""
    import filelock

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(ledger_lock(path)), timeout=LOCK_SECONDS)
        with lock:
            frame = edit(read_ledger(path))
            text = scrub_secrets(frame.to_csv(index=False, lineterminator="\n"))  # no cell ever holds a credential
            atomic_write(path, lambda f: f.write(text.encode()))
    except filelock.Timeout:
        raise KitError(f"{path}: another kit command has held the ledger's lock for {LOCK_SECONDS:.0f} s; let it finish and run again") from None
    except OSError as exc:  # the lock file could not be made: read-only folder, disk full, ...
        raise write_error(path, exc) from None
    return frame


def claim_entry(path: Path, entry: dict[str, str], refuse: Callable[[pd.Series], KitError] | None) -> None:
    """Append `entry` unless a row already sent (or is sending) its bytes to its competition; then
    `refuse(that row)` is raised. One step under the ledger's lock, so two `kit submit` of one file at
    the same moment cannot both pass the check. `refuse=None` appends regardless (--force)."""
    row = pd.DataFrame([{c: entry.get(c, "") for c in COLUMNS}])

    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        earlier = find_sent(frame, entry["sha256"], entry["competition"])
        if earlier is not None and refuse is not None:
            raise refuse(earlier)
        return pd.concat([frame, row], ignore_index=True)

    edit_ledger(path, edit)


def row_key(row: pd.Series | dict) -> str:
    """A row's identity before and after Kaggle gives it a ref (unique, even for one file sent twice in a second)."""
    return str(row["row_id"])


def update_rows(path: Path, updates: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Set the given fields on the rows keyed by `row_key`, in one locked write."""
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        for key, fields in updates.items():
            for name, value in fields.items():
                frame.loc[frame["row_id"] == key, name] = value
        return frame

    return edit_ledger(path, edit)


def remove_row(path: Path, key: str) -> None:
    edit_ledger(path, lambda frame: frame[frame["row_id"] != key].reset_index(drop=True))


def remote_fields(remote: RemoteSubmission) -> dict[str, str]:
    """The ledger's fields for what Kaggle reports about a submission."""
    return {
        "ref": str(remote.ref), "status": remote.status, "public_score": remote.public_score,
        "private_score": remote.private_score, "error_description": remote.error_description,
    }


def new_entry(file: Path, sha256: str, message: str, competition: str, provenance: dict[str, Any] | None) -> dict[str, str]:
    """A SENDING row for `file`, with what its provenance JSON says it was made of ('' where it says nothing)."""
    return {
        "time": now_utc(), "competition": competition, "file": str(file), "sha256": sha256, "message": message,
        "status": SENDING, **provenance_fields(provenance), "row_id": uuid.uuid4().hex,
    }


def provenance_fields(meta: dict[str, Any] | None) -> dict[str, str]:
    """The nested-CV score, trivial baseline, variants, weights and rule from a provenance JSON, read defensively:
    a missing key or a value of an unexpected type leaves the field empty."""
    meta = meta if isinstance(meta, dict) else {}
    variants = meta.get("variants")
    weights = meta.get("weights")
    rule = meta.get("decision_rule")
    return {
        "nested_cv_score": _number_text(meta.get("nested_cv_score")),
        "nested_cv_se": _number_text(meta.get("nested_cv_se")),
        "trivial_baseline": _number_text(meta.get("trivial_baseline")),
        "variants": ";".join(str(v) for v in variants) if isinstance(variants, list) else "",
        "weights": ";".join(f"{k}={_number_text(v)}" for k, v in weights.items()) if isinstance(weights, dict) else "",
        "decision_rule": rule if isinstance(rule, str) else (json.dumps(rule, sort_keys=True) if rule else ""),
    }


def find_sent(frame: pd.DataFrame, sha256: str, competition: str) -> pd.Series | None:
    """The first row that sent, was sending or may have sent these bytes to `competition`, or None
    (a NOT_FOUND row was looked up on Kaggle and never arrived: it does not count)."""
    rows = frame[(frame["sha256"] == sha256) & (frame["competition"] == competition) & (frame["status"] != NOT_FOUND)]
    return None if rows.empty else rows.iloc[0]


def number(text: str | float | None) -> float | None:
    """A ledger or Kaggle score as a float; None when empty or not a finite number."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def scored_pairs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(nested-CV scores, public scores, file names) of the rows that have both."""
    cv, public, names = [], [], []
    for _, row in frame.iterrows():
        x, y = number(row["nested_cv_score"]), number(row["public_score"])
        if x is not None and y is not None and row["status"] == "COMPLETE":
            cv.append(x)
            public.append(y)
            names.append(Path(row["file"]).name)
    return np.asarray(cv, dtype=np.float64), np.asarray(public, dtype=np.float64), names


def correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation; None below 3 points or when either side is constant."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _number_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return ""
    return f"{float(value):.10g}"
