"""Files at the boundary: atomic writes, and reads of files a user or a crash may have damaged.

Writes go through `atomic_write` (temp file beside the target, then rename): readers never see half
a file, and a failed write (no permission, disk full, a parent that is a file) keeps the old file,
leaves no temp file behind and becomes one `KitError` line naming the path and what to do.
Reads of CSV, TOML and npz files turn every way they can be broken (empty, truncated, not UTF-8,
not an archive) into one line naming the file.
"""

from __future__ import annotations

import csv
import errno
import glob
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.errors import KitError

if TYPE_CHECKING:
    import pandas as pd

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}
_NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}


def write_error(path: str | Path, exc: OSError) -> KitError:
    """One line for a failed write: the path, the reason and what to do about it."""
    path = Path(path)
    if exc.errno in _NO_SPACE:
        return KitError(
            f"{path}: no space left on the device ({exc.strerror}); free some space (or point the config at another disk) "
            "and run again: files written before are intact"
        )
    if exc.errno in _NOT_ALLOWED:
        return KitError(f"{path}: cannot write here ({exc.strerror}); make {path.parent} writable or point the config at a writable folder")
    if exc.errno in _NOT_A_FOLDER:
        return KitError(f"{path}: cannot write: a part of this path is a file, not a folder; move that file or choose another path in the config")
    if exc.errno == errno.EISDIR:
        return KitError(f"{path}: is a folder, not a file; remove it or choose another path in the config")
    return KitError(f"{path}: cannot write ({exc.strerror or exc}); check the disk and the folder, then run again")


def atomic_write(path: str | Path, write) -> None:
    """Call `write(fileobj)` on a temp file beside `path`, then rename: readers never see half a file.

    Any OSError (permission, disk full, ...) becomes a KitError naming `path`; the old file is kept
    and the temp file removed. A KitError or an interrupt raised by `write` passes through unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


STALE_TEMP_SECONDS = 600.0  # a temp file untouched this long belongs to a writer that was killed (SIGKILL, power loss)


def remove_stale_temps(path: Path, older_than: float = STALE_TEMP_SECONDS) -> None:
    """Remove the temp files of earlier writes of `path` whose writer was killed before it could clean up.
    Only files untouched for `older_than` seconds: a live writer (another process) keeps its file's mtime fresh."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
        except OSError:
            pass


def ensure_writable_dir(path: str | Path) -> None:
    """Create `path` and check a file can be made in it: fail before long work, not after it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".kit-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_error(path / "(new file)", exc) from None


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_json_default).encode()))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _relative_note(path: Path) -> str:
    """A relative path is relative to the working directory (not to the config file): messages say so."""
    return "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"


def read_text(path: str | Path, remedy: str) -> str:
    """A text file as UTF-8 (a leading BOM is dropped); KitError naming the line of a byte that is not UTF-8."""
    return decode_text(read_bytes(path, remedy), path)


def read_bytes(path: str | Path, remedy: str) -> bytes:
    """A file's bytes, read once (a caller that checks them and then uses them holds one version of the file)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: file not found{_relative_note(path)}; {remedy}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KitError(f"{path}: cannot read ({exc.strerror or exc}); {remedy}") from None


def decode_text(data: bytes, path: str | Path) -> str:
    """`data` as UTF-8 text (a leading BOM dropped); KitError naming `path` and the line of a byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise KitError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, column {column}); save the file as UTF-8"
        ) from None


def read_csv(path: str | Path, id_column: str, remedy: str, text_columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV with at least one row; ids (and `text_columns`, e.g. patient ids) are strings exactly as written
    ("000012" is not "12") and only empty fields are missing values ("NA" or "null" is an id, not a gap).
    KitError naming the file when it is empty, not UTF-8 or not CSV."""
    import pandas as pd  # here: the config loader imports this module and should stay light

    path = Path(path)
    text = read_text(path, remedy)
    if not text.strip():
        raise KitError(f"{path}: file is empty; {remedy}")
    _check_not_cut(text, path)
    try:
        dtypes = {c: str for c in [id_column, *(text_columns or [])] if c}
        frame = pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise KitError(f"{path}: not a readable CSV ({' '.join(str(exc).split())}); {remedy}") from None
    if frame.empty:
        raise KitError(f"{path}: has a header but no rows; {remedy}")
    if id_column in frame.columns:
        ids = frame[id_column]
        empty = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            raise KitError(f"{path}: row {int(np.flatnonzero(empty)[0]) + 2} has an empty {id_column}")
        frame[id_column] = ids.astype(str)
    return frame


def _check_not_cut(text: str, path: Path) -> None:
    """A CSV whose last line has fewer fields than the header and no line end was cut off (an interrupted download
    or copy): say so, rather than let its empty cells be blamed on the config."""
    if text.endswith(("\n", "\r")):
        return
    lines = text.splitlines()
    if len(lines) < 2:
        return
    try:
        header, last = next(csv.reader([lines[0]])), next(csv.reader([lines[-1]]))
    except (csv.Error, StopIteration):
        return
    if len(last) < len(header) or (len(last) == len(header) > 1 and last[-1] == ""):
        fields = f"{len(last)} of the header's {len(header)} fields" + (", the last empty," if len(last) == len(header) else "")
        raise KitError(f"{path}: the last line (line {len(lines)}) has {fields} and no line end: "
                       "the file looks cut off (an interrupted download or copy); get the whole file again")


def read_npz(path: str | Path, remedy: str, keys: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an npz (only `keys` when given), loaded now; KitError naming the file when it is
    missing, empty, not an npz archive, truncated or holds pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: file not found{_relative_note(path)}; {remedy}")
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK":  # every zip archive, hence every npz, starts with "PK"
        what = "file is empty" if not head else "not an npz archive (it does not start like one)"
        raise KitError(f"{path}: {what}; {remedy}")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in z.files if keys is None else [k for k in keys if k in z.files]:
                try:
                    arrays[k] = z[k]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    pickled = k  # an object array (e.g. a pandas column's .values): never unpickled
                    break
            else:
                return arrays
    except Exception as exc:  # a damaged archive raises many types: BadZipFile, EOFError, ValueError, zlib.error, ...
        raise KitError(f"{path}: cannot read it, truncated or corrupt ({type(exc).__name__}: {' '.join(str(exc).split())}); {remedy}") from None
    raise KitError(f"{path}: array '{pickled}' holds Python objects, which are never unpickled; store strings with .astype(str); {remedy}")
