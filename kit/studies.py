"""Optuna storage for one machine or several: open it from a URL, keep concurrent runs apart, serve the dashboard.

`calibrate.storage` takes
- any SQLAlchemy URL: `sqlite:///oof/optuna.db` (one machine), `postgresql://user:pass@host/db`
  or `mysql+pymysql://...` (several machines: the database serialises the writers);
- `journal:///shared/optuna.log` (absolute) or `journal://oof/optuna.log` (relative): Optuna's
  JournalStorage on one append-only file, for several machines that share a filesystem (NFS) but
  no database server. Its writers take an open-file lock (`JournalFileOpenLock`), which works on NFS.

SQLite with parallel writers is not safe for the kit's studies (a re-run replaces a study; two at
once duplicate every trial), so `exclusive_studies` refuses a second run on the same SQLite file
with one line naming the holder. On a journal file or a database server, runs on different targets
go on in parallel and only a second run on the same study names is refused. Passwords in URLs are
never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
from filelock import FileLock, Timeout
from rich.console import Console

from kit.config import CompetitionConfig
from kit.errors import KitError
from kit.files import write_json
from kit.paths import study_lock_files

JOURNAL_PREFIX = "journal://"
SQLITE_PREFIX = "sqlite:///"
_LOCK_STUDY_PREFIX = "kit-lock:"


def masked(url: str) -> str:
    """The URL with its password replaced by ***, for messages."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can parse: hide whatever sits between ':' and '@'
        head, at, tail = url.rpartition("@")
        if not at or "://" not in head:
            return url
        scheme, _, userinfo = head.partition("://")
        return f"{scheme}://{userinfo.split(':')[0]}:***@{tail}" if ":" in userinfo else url


def storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for in-memory SQLite and database servers)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):])
    if url.startswith(SQLITE_PREFIX) and url[len(SQLITE_PREFIX):] not in ("", ":memory:"):
        return Path(url[len(SQLITE_PREFIX):].split("?")[0])
    return None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage for `url`, checked to open before any long computation; one KitError line if not."""
    path = storage_file(url)
    if path is not None:
        _check_writable(url, path)
    try:
        with quiet_optuna():
            if url.startswith(JOURNAL_PREFIX):
                backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
                return optuna.storages.JournalStorage(backend)
            return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - any driver or URL problem becomes one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KitError(
            f"calibrate.storage = '{masked(url)}': cannot open it ({_hide(first, url)}); use a SQLAlchemy URL such as "
            "sqlite:///oof/optuna.db, or journal:///shared/path/optuna.log for several machines"
        ) from None


def _check_writable(url: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"calibrate.storage = '{masked(url)}': cannot create folder {path.parent} ({exc.strerror}); choose a writable path") from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise KitError(f"calibrate.storage = '{masked(url)}': {target} is read-only; choose a writable path or fix its permissions")


@contextlib.contextmanager
def exclusive_studies(url: str, names: list[str], command: str | None = None) -> Iterator[None]:
    """Hold the right to write the studies `names` in `url` for the duration; refuse with one line if another run holds it.

    SQLite: one lock for the whole file (SQLite takes one writer). Journal file: one lock per name,
    so other targets can be calibrated at once from other machines. Both are OS file locks, released
    when the holder exits, even when it is killed. Database servers: a marker study per name
    (the database's unique study names make it atomic), removed on exit.
    """
    command = command or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command}
    path = storage_file(url)
    with contextlib.ExitStack() as stack:
        if path is not None:
            _check_writable(url, path)
            keys = ["all"] if url.startswith(SQLITE_PREFIX) else sorted(set(names))
            for key in keys:
                stack.enter_context(_file_lock(url, path, key, holder))
        else:
            storage = open_storage(url)
            for name in sorted(set(names)):
                stack.enter_context(_marker_study(url, storage, name, holder))
        yield


@contextlib.contextmanager
def _file_lock(url: str, path: Path, key: str, holder: dict) -> Iterator[None]:
    lock_path, info_path = study_lock_files(path, key)
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise KitError(f"calibrate.storage = '{masked(url)}': {_busy(key, _read_holder(info_path))}") from None
    try:
        write_json(info_path, {**holder, "studies": key})
        yield
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def _marker_study(url: str, storage: optuna.storages.BaseStorage, name: str, holder: dict) -> Iterator[None]:
    marker = f"{_LOCK_STUDY_PREFIX}{name}"
    with quiet_optuna():
        try:
            study = optuna.create_study(storage=storage, study_name=marker)
        except optuna.exceptions.DuplicatedStudyError:
            other = optuna.load_study(study_name=marker, storage=storage).user_attrs
            raise KitError(
                f"calibrate.storage = '{masked(url)}': {_busy(name, other)}; if that run is gone, remove the marker with "
                f"`optuna delete-study --study-name '{marker}' --storage <url>`"
            ) from None
        for key, value in holder.items():
            study.set_user_attr(key, value)
    try:
        yield
    finally:
        with quiet_optuna(), contextlib.suppress(KeyError):
            optuna.delete_study(study_name=marker, storage=storage)


def _busy(key: str, other: dict) -> str:
    what = "the storage" if key == "all" else f"studies '{key}'"
    who = f"pid {other.get('pid', '?')} on {other.get('host', '?')} since {other.get('since', '?')}" if other else "another process"
    running = f" (`{other['command']}`)" if other.get("command") else ""
    return f"another kit run holds {what}: {who}{running}; wait for it to finish or use another storage"


def _read_holder(path: Path) -> dict:
    for _ in range(20):  # the holder writes its line just after taking the lock
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    return {}


def _hide(text: str, url: str) -> str:
    """Remove the URL's password from a driver's message, which may quote the URL."""
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001
        password = None
    return text.replace(password, "***") if password else text


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial and per-study log lines for the duration."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def dashboard(cfg: CompetitionConfig, host: str = "127.0.0.1", port: int = 8080, console: Console | None = None) -> None:
    """Serve optuna-dashboard on `calibrate.storage` (SQLAlchemy URL or journal file) until interrupted."""
    import optuna_dashboard

    console = console or Console()
    storage = open_storage(cfg.calibrate.storage)
    console.print(f"optuna-dashboard on {masked(cfg.calibrate.storage)}: http://{host}:{port}/  (Ctrl-C stops it)", highlight=False, soft_wrap=True)
    if not is_loopback(host):
        console.print(f"warning: --host {host} is not a loopback address: anyone who can reach this machine on port {port} "
                      "can read (and delete) these studies, without authentication; use --host 127.0.0.1 and an SSH tunnel",
                      style="yellow", markup=False, highlight=False, soft_wrap=True)
    try:
        _check_can_listen(host, port)  # before the server prints that it is starting
        optuna_dashboard.run_server(storage, host=host, port=port)
    except OSError as exc:
        raise KitError(_serve_error(exc, host, port)) from None


def _check_can_listen(host: str, port: int) -> None:
    """Bind host:port once, as the server will, and let it go: OSError for a port in use or forbidden. Other
    failures (a host that is not this machine's) are left to the server, whose error `_serve_error` words."""
    import errno

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise


def _serve_error(exc: OSError, host: str, port: int) -> str:
    """Why the dashboard could not listen on host:port, and what to give instead."""
    import errno

    if exc.errno == errno.EADDRINUSE:
        other = port + 1 if port < 65535 else 8080
        return f"--port {port}: already in use on {host} (another dashboard or server listens there); give another --port, e.g. {other}"
    if exc.errno == errno.EACCES:
        return f"--port {port}: this user may not listen on it (ports below 1024 need root); give e.g. --port 8080"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return f"--host {host}: not an address of this machine; give 127.0.0.1 (and an SSH tunnel to reach it from elsewhere)"
    return f"cannot listen on {host}:{port} ({exc.strerror or type(exc).__name__}); give another --host or --port"


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (127.0.0.0/8, ::1, localhost); '0.0.0.0' and '' are every interface."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
