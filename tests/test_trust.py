"""Trust, round 3 (issue 28), the pieces that need no server: read retries, the credential inventory,
output paths another stage owns, stale test logits, reconciliation's matching."""

from __future__ import annotations

import pytest
import requests

from kit.leaderboard import client


def _http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"HTTP {status}", response=response)


class _Calls:
    """A read call that fails with the given exceptions in turn, then answers 'ok'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.count = 0

    def __call__(self):
        self.count += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


@pytest.mark.parametrize("failures, pauses", [
    ([_http_error(503)] * 3, [0.5, 1.0, 2.0]),  # the backoff pauses
    ([_http_error(429, "7")], [7.0]),  # the server's Retry-After
    ([_http_error(429, "3600")], [client.RETRY_AFTER_CAP]),  # ... capped
    ([_http_error(503, "soon"), _http_error(502, "-4")], [0.5, 0.0]),  # unreadable: the backoff; negative: none
    ([requests.ConnectionError(), requests.Timeout()], [0.5, 1.0]),  # a dropped connection, a timeout
])
def test_read_calls_retry_what_a_later_try_may_fix_with_the_same_pauses(failures, pauses):
    slept, said = [], []
    call = _Calls(*failures)
    assert client._read_call(call, client.Deadline(), sleep=slept.append, say=said.append, action="list") == "ok"
    assert slept == pauses and call.count == len(pauses) + 1
    assert len(said) == len(pauses) and all("trying again in" in s and "while trying to list" in s for s in said)


@pytest.mark.parametrize("failure", [_http_error(404), _http_error(400), _http_error(401), ValueError("garbled")])
def test_read_calls_do_not_retry_a_definite_answer(failure):
    slept = []
    call = _Calls(failure)
    with pytest.raises(type(failure)):
        client._read_call(call, None, sleep=slept.append)
    assert call.count == 1 and slept == []


def test_read_calls_give_up_after_four_tries_and_never_sleep_past_the_deadline():
    slept = []
    call = _Calls(*[_http_error(503)] * 10)
    with pytest.raises(requests.HTTPError):
        client._read_call(call, None, sleep=slept.append)
    assert call.count == 4 and slept == [0.5, 1.0, 2.0]
    now = [0.0]
    deadline = client.Deadline(5.0, clock=lambda: now[0])
    call = _Calls(_http_error(429, "20"), _http_error(503))
    with pytest.raises(requests.HTTPError):  # 20 s of Retry-After do not fit in the 5 s left: no pause, the error
        client._read_call(call, deadline, sleep=slept.append)
    assert call.count == 1 and slept == [0.5, 1.0, 2.0]


# The credential inventory: every file and variable the kaggle package reads, every form.

SECRET = "kit-trust-secret-0123456789"


@pytest.fixture
def bare_home(monkeypatch, tmp_path):
    """A HOME with no credential anywhere and no KAGGLE_* variable."""
    import os

    for name in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


@pytest.mark.parametrize("place", [
    (".kaggle/credentials.json", '{"refresh_token": "%s", "access_token": "other-%s", "username": "u"}'),  # the OAuth cache
    (".kaggle/access_token", "%s\n"),
    (".config/kaggle/kaggle.json", '{"username": "u", "key": "%s", "path": "/data"}'),  # XDG, when there is no ~/.kaggle
])
def test_every_file_the_package_reads_a_credential_from_is_known(bare_home, place):
    import base64

    from kit.errors import KitError, scrub_secrets

    name, template = place
    (bare_home / name).parent.mkdir(parents=True)
    (bare_home / name).write_text(template.replace("%s", SECRET))
    for form in (SECRET, base64.b64encode(SECRET.encode()).decode()):
        assert scrub_secrets(f"said {form}!") == "said ***!", form
    assert str(KitError(f"Bearer {SECRET}")) == "Bearer ***"
    assert scrub_secrets("files under /data") == "files under /data"  # a value not named like a secret is left alone


def test_a_variable_named_like_a_secret_and_a_token_path_are_known(bare_home, monkeypatch):
    from urllib.parse import quote

    from kit.errors import scrub_secrets

    monkeypatch.setenv("KAGGLE_IAP_TOKEN", SECRET + "+/=")
    assert scrub_secrets(f"{SECRET}+/= and {quote(SECRET + '+/=', safe='')}") == "*** and ***"
    monkeypatch.delenv("KAGGLE_IAP_TOKEN")
    (bare_home / "tok").write_text("file-held-token-987654321")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(bare_home / "tok"))
    assert scrub_secrets("Bearer file-held-token-987654321") == "Bearer ***"


def test_ledger_cells_and_the_console_never_hold_a_credential(bare_home, monkeypatch, capsys):
    import sys

    from rich.console import Console

    from kit.errors import ScrubbedStream
    from kit.leaderboard.ledger import new_entry, read_ledger, update_rows

    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    ledger = bare_home / "ledger.csv"
    from kit.leaderboard.ledger import append_entry

    entry = new_entry(bare_home / "a.csv", "sha", f"message with {SECRET}", "comp", None)
    append_entry(ledger, entry)
    update_rows(ledger, {entry["row_id"]: {"error_description": f"echo {SECRET}"}})
    assert SECRET not in ledger.read_text() and read_ledger(ledger).iloc[0]["error_description"] == "echo ***"
    Console(file=ScrubbedStream(lambda: sys.stdout)).print(f"key {SECRET}")
    assert capsys.readouterr().out.strip() == "key ***"


# Output paths (issue 28, class 4): no command writes over a file another stage owns, or into a folder, and a name
# read from a config cannot leave its folder.

def _owned_files(tmp_path):
    """A tiny competition whose every stage has left its file, and the CLI config of it."""
    import json

    from tests.conftest import layout_toml, make_layout

    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2"])
    config = layout_toml(tmp_path, cfg)
    files = {
        "ledger": cfg.paths.submissions / "ledger.csv", "oof": cfg.paths.oof / "v.npz", "oof json": cfg.paths.oof / "v.json",
        "calibration": cfg.paths.oof / "v.calibration.json", "provenance": cfg.paths.submissions / "b1.json",
        "submission": cfg.paths.submissions / "b1.csv", "studies": tmp_path / "optuna.db", "folds": tmp_path / "folds.csv",
        "config": config, "data": cfg.data.dir / "train.csv",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(json.dumps({"written by": "another stage"}))
    return cfg, config, files


@pytest.mark.parametrize("owned", ["ledger", "oof", "oof json", "calibration", "provenance", "submission", "studies", "folds",
                                   "config", "data", "folder", "no-html"])
def test_report_out_never_replaces_another_stages_file_or_a_folder(tmp_path, capsys, owned):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config, files = _owned_files(tmp_path)
    target = {"folder": cfg.paths.submissions, "no-html": tmp_path / "report.txt"}.get(owned) or files[owned]
    before = {p: p.read_bytes() for p in files.values()}
    code, _, err = run_kit(["--config", config, "report", "--out", target], capsys)
    assert_one_line_error(code, err, f"--out {target}")
    assert ("is a folder" if owned == "folder" else ".html" if owned == "no-html" else "would replace it") in err
    assert {p: p.read_bytes() for p in files.values()} == before and not (tmp_path / "report.txt").exists()


@pytest.mark.parametrize("key, value, needle", [
    ("path", "{submissions}/ledger.csv", "the ledger of submissions"),
    ("path", "{data}/train.csv", "data file train.csv"),
    ("path", "{root}/competition.toml", "the competition config"),
    ("path", "{root}", "is a folder"),
    ("storage", "sqlite:///{submissions}/ledger.csv", "the ledger of submissions"),
    ("storage", "sqlite:///{root}/folds.csv", "the file calibrate.storage names"),
])
def test_a_config_path_onto_another_stages_file_is_refused_at_load(tmp_path, capsys, key, value, needle):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config, files = _owned_files(tmp_path)
    text = config.read_text()
    fields = {"submissions": cfg.paths.submissions, "data": cfg.data.dir, "root": tmp_path}
    old = f'path = "{cfg.folds.path}"' if key == "path" else f'storage = "{cfg.calibrate.storage}"'
    config.write_text(text.replace(old, f'{key} = "{value.format(**fields)}"'))
    before = {p: p.read_bytes() for p in files.values() if p != config}
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(config), needle, "give")
    assert {p: p.read_bytes() for p in files.values() if p != config} == before


@pytest.mark.parametrize("output, needle", [
    ("{data}/train.csv", "data.dir"), ("{root}/submissions/ledger.csv", "ledger"), ("{root}", "is a folder"), ("{root}/c.txt", ".toml"),
])
def test_init_output_is_checked_before_anything_is_written(tmp_path, capsys, output, needle):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config, files = _owned_files(tmp_path)
    before = {p: p.read_bytes() for p in files.values()}
    target = output.format(data=cfg.data.dir, root=tmp_path)
    code, _, err = run_kit(["init", cfg.data.dir, "--output", target, "--force"], capsys)
    assert_one_line_error(code, err, f"--output {target}", needle)
    assert {p: p.read_bytes() for p in files.values()} == before and not (tmp_path / "c.txt").exists()


@pytest.mark.parametrize("slug", ["../../evil", "a b", "x/y"])
def test_init_refuses_a_bad_slug_before_writing(tmp_path, capsys, monkeypatch, slug):
    from tests.conftest import assert_one_line_error, make_layout, run_kit

    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2"])
    monkeypatch.chdir(tmp_path)
    code, _, err = run_kit(["init", cfg.data.dir, "--competition", slug], capsys)
    assert_one_line_error(code, err, "--competition", repr(slug))
    assert not (tmp_path / "configs").exists()


@pytest.mark.parametrize("value", ["../../../x", "a/b", "..", "ledger"])
def test_a_name_read_from_a_variant_file_passes_the_name_check(tmp_path, value):
    from kit.config import load_model
    from kit.errors import KitError
    from tests.conftest import TINY_VARIANT, make_layout, model_toml

    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2"])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "second.toml").write_text(model_toml({**TINY_VARIANT, "pseudo_label_from": value}))
    with pytest.raises(KitError) as info:
        load_model("second", cfg)
    assert "pseudo_label_from" in str(info.value) and str(tmp_path / "models" / "second.toml") in str(info.value)
