"""Optuna storage: a journal file shared by two writer processes, the dashboard over a journal file,
one writer per SQLite file (the second refused with the holder named), per-study locks on a journal,
locks freed when the holder is killed, masked passwords, unwritable paths as one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from kit import studies
from kit.errors import KitError
from kit.studies import exclusive_studies, masked, open_storage
from tests.conftest import dashboard_studies

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


@pytest.mark.subprocess
def test_two_processes_write_one_journal_file(tmp_path):
    url = f"journal://{tmp_path / 'shared' / 'optuna.log'}"  # journal:///abs/path
    worker = f"""
        import optuna
        from kit.studies import open_storage, quiet_optuna
        with quiet_optuna():
            study = optuna.create_study(study_name="s", storage=open_storage({url!r}), load_if_exists=True)
            study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=15)
    """
    procs = [_python(worker) for _ in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).trials
    assert len(trials) == 30 and sorted(t.number for t in trials) == list(range(30))


@pytest.mark.subprocess
def test_relative_journal_url_and_dashboard_over_it(tmp_path):
    log = tmp_path / "oof" / "optuna.log"
    url = f"journal://{os.path.relpath(log, REPO)}"  # journal://relative/path, relative to the working directory
    with studies.quiet_optuna():
        optuna.create_study(study_name="v/offsets/all", storage=open_storage(url)).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert log.is_file()
    config = tmp_path / "competition.toml"
    config.write_text(f'[calibrate]\nstorage = "journal://{log}"\n')
    names, out, port = dashboard_studies(config, REPO)
    assert names == {"v/offsets/all"}
    assert f"journal://{log}" in out and f"http://127.0.0.1:{port}/" in out


def _holder(url: str, names: list[str]) -> subprocess.Popen:
    """A process that holds `names` in `url` until its stdin closes (it prints 'held' once it does)."""
    proc = _python(f"""
        import sys
        from kit.studies import exclusive_studies
        with exclusive_studies({url!r}, {names!r}, command="kit calibrate --variant a"):
            print("held", flush=True)
            sys.stdin.read()
    """, stdin=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.mark.subprocess
def test_second_run_on_one_sqlite_file_is_refused_naming_the_holder(tmp_path):
    url = f"sqlite:///{tmp_path / 'oof' / 'optuna.db'}"
    proc = _holder(url, ["a"])
    try:
        with pytest.raises(KitError) as err:
            with exclusive_studies(url, ["b"]):  # other names too: SQLite takes one writer
                pass
        message = str(err.value)
        assert "\n" not in message and url in message
        assert f"pid {proc.pid} on {socket.gethostname()}" in message and "`kit calibrate --variant a`" in message
    finally:
        _release(proc)
    with exclusive_studies(url, ["b"]):  # free again once the holder has finished
        pass


@pytest.mark.subprocess
def test_journal_locks_per_study_name(tmp_path):
    url = f"journal://{tmp_path / 'optuna.log'}"
    proc = _holder(url, ["a"])
    try:
        with exclusive_studies(url, ["b"]):  # another target goes on in parallel
            pass
        with pytest.raises(KitError, match=f"another kit run holds studies 'a': pid {proc.pid}"):
            with exclusive_studies(url, ["b", "a"]):
                pass
    finally:
        _release(proc)


@pytest.mark.subprocess
def test_a_killed_holder_frees_the_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = _holder(url, ["a"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with exclusive_studies(url, ["a"]):
        pass


@pytest.mark.subprocess
def test_database_server_marker_study_refuses_a_second_holder(tmp_path):
    """The database-server path (no server here): the marker-study lock, on a journal storage object."""
    url = f"journal://{tmp_path / 'optuna.log'}"
    storage = open_storage(url)
    holder = {"pid": 4242, "host": "node-1", "since": "now", "command": "kit calibrate"}
    with studies._marker_study(url, storage, "v", holder):
        with pytest.raises(KitError, match="holds studies 'v': pid 4242 on node-1 since now .*optuna delete-study --study-name 'kit-lock:v'"):
            with studies._marker_study(url, storage, "v", {**holder, "pid": 1}):
                pass
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == []  # released


def test_password_is_masked_in_the_error():
    url = "postgresql://bob:s3cret-pw@127.0.0.1:1/kit"
    assert masked(url) == "postgresql://bob:***@127.0.0.1:1/kit"
    with pytest.raises(KitError) as err:
        open_storage(url)
    assert "s3cret-pw" not in str(err.value) and "bob:***@127.0.0.1" in str(err.value) and "\n" not in str(err.value)
    assert masked("notaurl://u:pw@host") == "notaurl://u:***@host"


def test_unwritable_storage_path_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KitError, match="cannot create folder .*file/sub"):
        open_storage(f"sqlite:///{blocker / 'sub' / 'optuna.db'}")
    monkeypatch.setattr(studies.os, "access", lambda path, mode: False)  # root ignores permission bits: pretend
    with pytest.raises(KitError, match=r"journal://.*optuna.log': .* is read-only; choose a writable path"):
        open_storage(f"journal://{tmp_path / 'optuna.log'}")
