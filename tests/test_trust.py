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
    from kit.leaderboard.ledger import claim_entry

    entry = new_entry(bare_home / "a.csv", "sha", f"message with {SECRET}", "comp", None)
    claim_entry(ledger, entry, None)
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


# Reconciliation's matching, without a server: file name and message first, time to break ties.

def _row(row_id: str, time: str, file: str = "sub/a.csv", message: str = "m") -> dict:
    return {"row_id": row_id, "time": time, "file": file, "message": message}


def _remote(ref: int, date: str, name: str = "a.csv", message: str = "m"):
    return client.RemoteSubmission(ref=ref, status="COMPLETE", file_name=name, description=message, date=date)


def test_reconcile_matches_by_name_and_message_whatever_the_clock():
    from kit.leaderboard.reconcile import reconcile

    rows = [_row("r1", "2026-01-01T10:05:00+00:00")]
    for date in ("2026-01-01T10:00:00", "2026-01-01T09:05:00", "2026-01-01T11:30:00"):  # 5 min, 1 h, 1 h 25 min of skew
        assert reconcile(rows, [_remote(7, date)])["r1"].found.ref == 7
    assert reconcile(rows, [_remote(7, "2026-01-01T04:00:00")])["r1"].kind == "ambiguous"  # hours away: unsure
    assert reconcile(rows, [_remote(7, "2025-12-29T10:00:00")])["r1"].kind == "absent"  # days before: another submission
    assert reconcile(rows, [_remote(7, "2026-01-01T10:00:00", message="other")])["r1"].kind == "absent"
    assert reconcile(rows, [_remote(7, "2026-01-01T10:00:00", name="b.csv")])["r1"].kind == "absent"


def test_reconcile_breaks_ties_by_time_and_says_ambiguous_when_it_cannot():
    from kit.leaderboard.reconcile import reconcile

    row = [_row("r1", "2026-01-01T10:00:00+00:00")]
    near_and_far = [_remote(7, "2026-01-01T10:03:00"), _remote(8, "2026-01-01T05:00:00")]
    assert reconcile(row, near_and_far)["r1"].found.ref == 7
    far = [_remote(7, "2026-01-01T06:00:00"), _remote(8, "2026-01-01T05:00:00")]
    verdict = reconcile(row, far)["r1"]
    assert verdict.kind == "ambiguous" and [s.ref for s in verdict.candidates] == [7, 8]
    two_rows = [_row("r1", "2026-01-01T10:00:00+00:00"), _row("r2", "2026-01-01T10:01:00+00:00")]
    paired = reconcile(two_rows, [_remote(9, "2026-01-01T09:56:00"), _remote(8, "2026-01-01T09:55:00")])
    assert (paired["r1"].found.ref, paired["r2"].found.ref) == (8, 9)  # in order
    one_for_two = reconcile(two_rows, [_remote(8, "2026-01-01T10:00:30")])
    assert one_for_two["r1"].kind == one_for_two["r2"].kind == "ambiguous"  # both near it: which one was created?


@pytest.mark.subprocess
def test_a_sending_row_is_still_sending_only_while_its_process_lives():
    import datetime as dt
    import os
    import socket
    import subprocess
    import sys

    from kit.leaderboard.reconcile import sender_tag, still_sending

    now = dt.datetime.now(dt.UTC)
    assert still_sending(sender_tag(), now, now)  # this process
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    assert not still_sending(f"being sent by pid {gone} on {socket.gethostname()}", now, now)
    other_host = f"being sent by pid {os.getpid()} on another-machine"
    assert still_sending(other_host, now, now) and not still_sending(other_host, now - dt.timedelta(hours=2), now)
    assert not still_sending("", now - dt.timedelta(hours=2), now)  # an older kit's row, hours old


# One true line (issue 28, class 6): each class of bad input the audit met, through the CLI.

def _competition(tmp_path, models: dict[str, dict] | None = None):
    """A tiny competition (10 train rows) with its runs/ and models/ folders, and its CLI config."""
    from tests.conftest import layout_toml, make_layout, model_toml

    cfg = make_layout(tmp_path, ["A", "B", "C"] * 3 + ["A"], ["t1", "t2"])
    config = layout_toml(tmp_path, cfg)
    config.write_text(config.read_text().replace("[kaggle]", f'runs = "{tmp_path / "runs"}"\nmodels = "{tmp_path / "models"}"\n[kaggle]'))
    (tmp_path / "models").mkdir()
    for name, keys in (models or {}).items():
        (tmp_path / "models" / f"{name}.toml").write_text(model_toml(keys))
    return cfg, config


def _blend_json(path, **changes):
    import json

    row = {"key": "equal + bayes", "label": "equal + bayes", "nested_cv": -1.2, "se": 0.1, "per_fold": [-1.1, -1.3],
           "delta_to_best": 0.0, "delta_se": 0.0, "chosen": True}
    meta = {"name": path.stem, "variants": ["v"], "weights": {"v": 1.0}, "weighting": "equal", "decision_rule": "bayes",
            "selection": "one_se", "metric": {"name": "accuracy"}, "nested_cv_score": -1.2, "nested_cv_se": 0.1, "trivial_baseline": -4.0,
            "nested_cv_table": [row], "stacker": "none", "single_variant_own_decision": {}, "notes": [], **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


@pytest.mark.parametrize("public, note", [("abc", "'abc'"), ("-1,25", "decimal comma")])
def test_report_draws_only_numeric_scores_and_says_which_row_is_not(tmp_path, capsys, public, note):
    from kit.leaderboard.ledger import claim_entry, new_entry
    from tests.conftest import run_kit

    cfg, config = _competition(tmp_path)
    _blend_json(cfg.paths.submissions / "b1.json")
    ledger = cfg.paths.submissions / "ledger.csv"
    for k, score in enumerate(["-1.3", public]):
        entry = new_entry(cfg.paths.submissions / f"s{k}.csv", f"sha{k}", "m", "fake-comp", {"nested_cv_score": -1.2})
        claim_entry(ledger, {**entry, "ref": str(k), "status": "COMPLETE", "public_score": score}, None)
    code, out, err = run_kit(["--config", config, "report"], capsys)
    assert code == 0, err
    import html as html_text

    shown = html_text.unescape((cfg.paths.submissions / "report.html").read_text())
    assert "1 ledger rows have a score that is not a number" in shown and note in shown


@pytest.mark.parametrize("damage, needle", [
    ("calibration-cut", "not valid JSON"), ("provenance-no-key", "'weighting'"),
])
def test_report_on_a_broken_json_is_one_line(tmp_path, capsys, damage, needle):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    if damage == "calibration-cut":
        path = cfg.paths.oof / "v.calibration.json"
        path.parent.mkdir(parents=True)
        path.write_text('{"target": "v", "rows": [{"key": "ba')
    else:
        path = cfg.paths.submissions / "b1.json"
        _blend_json(path, weighting=None)
    code, _, err = run_kit(["--config", config, "report"], capsys)
    assert_one_line_error(code, err, str(path), needle)
    assert not (cfg.paths.submissions / "report.html").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1.5"])
def test_a_folds_seed_numpy_cannot_take_is_refused_at_load(tmp_path, capsys, seed):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    config.write_text(config.read_text().replace("[folds]\n", f"[folds]\nseed = {seed}\n"))
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(config), "folds.seed")
    assert not cfg.folds.path.exists()


@pytest.mark.parametrize("args, needle", [
    (["train", "--fold", "²"], "--fold '²'"), (["train", "--fold", "-1"], "--fold '-1'"),
    (["doctor", "--memory-gb", "nan"], "--memory-gb nan"), (["doctor", "--memory-gb", "inf"], "--memory-gb inf"),
    (["plan", "--hours", "nan"], "--hours nan"), (["plan", "--hours", "inf"], "--hours inf"),
    (["dashboard", "--port", "99999"], "--port 99999"), (["dashboard", "--port", "0"], "--port 0"),
    (["calibrate", "--variant", "a", "--oof", "b.npz"], "not both"),
])
def test_an_option_out_of_its_range_is_one_line(tmp_path, capsys, args, needle):
    import json

    from kit.config import load_competition
    from kit.paths import doctor_json as doctor_report_path
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    row = {"epochs": 1, "batch_size": 2, "epoch_images_per_s": 10.0, "inference_images_per_s": 10.0}
    path = doctor_report_path(load_competition(config))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"machine": {}, "compile_probe": {}, "variants": {"v": row},
                                "data": {"n_train": 10, "n_test": 2, "n_classes": 3, "n_folds": 5}}))
    code, _, err = run_kit(["--config", config, *args], capsys)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("change, needle", [
    ({"epoch_images_per_s": None}, "epoch_images_per_s"), ({"inference_images_per_s": 0}, "'v' has inference_images_per_s = 0"),
    ({"epoch_images_per_s": -2.5}, "'v' has epoch_images_per_s = -2.5"), ({"batch_size": 1.5}, "batch_size"), ({"epochs": "two"}, "epochs"),
    ({"max_train_images": -3}, "'v' has max_train_images = -3"),
])
def test_plan_on_a_doctor_report_it_cannot_use_is_one_line(tmp_path, capsys, change, needle):
    import json

    from kit.config import load_competition
    from kit.paths import doctor_json as doctor_report_path
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    row = {"epochs": 1, "batch_size": 2, "epoch_images_per_s": 10.0, "inference_images_per_s": 10.0, **change}
    path = doctor_report_path(load_competition(config))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"machine": {}, "compile_probe": {}, "variants": {"v": {k: v for k, v in row.items() if v is not None}},
                                "data": {"n_train": 10, "n_test": 2, "n_classes": 3, "n_folds": 5}}))
    code, _, err = run_kit(["--config", config, "plan"], capsys)
    assert_one_line_error(code, err, str(path), needle, "kit doctor")


def test_a_dashboard_on_a_busy_port_says_so(tmp_path, capsys):
    import socket

    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, _, err = run_kit(["--config", config, "dashboard", "--port", str(port)], capsys)
    assert_one_line_error(code, err, f"--port {port}", "already in use", "another --port")
    assert "permissions" not in err


@pytest.mark.parametrize("edit, needle", [
    (lambda lines: lines[:2] + ["tr001,0,,0"] + lines[3:], "row 3, class column 'B' holds an empty cell"),
    (lambda lines: lines[:2] + ["tr001,0,yes,0"] + lines[3:], "row 3, class column 'B' holds 'yes'"),
    (lambda lines: lines[:2] + ["tr001,0,0.5,0"] + lines[3:], "holds '0.5', not 0 or 1"),
])
def test_a_bad_cell_in_a_class_column_is_named_as_a_cell(tmp_path, capsys, edit, needle):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    train = cfg.data.dir / "train.csv"
    train.write_text("\n".join(edit(train.read_text().splitlines())) + "\n")
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(train), needle, "0 or 1")
    assert "patient" not in err and "np.float64" not in err


@pytest.mark.parametrize("cut", [3, 1, 0])  # bytes kept of the last row's text: mid-id, mid-row, right after a comma
def test_a_csv_cut_mid_row_is_said_to_be_cut(tmp_path, capsys, cut):
    from tests.conftest import assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path)
    train = cfg.data.dir / "train.csv"
    text = train.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    keep = {3: last[:3], 1: last[: last.index(",") + 3], 0: last[: last.rindex(",") + 1]}[cut]
    train.write_text(text.rstrip("\n").rsplit("\n", 1)[0] + "\n" + keep)
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(train), "cut off", "get the whole file again")
    assert "competition.toml" not in err


def test_bce_on_a_multi_class_task_is_refused_before_any_training(tmp_path, capsys):
    from tests.conftest import TINY_VARIANT, assert_one_line_error, run_kit

    cfg, config = _competition(tmp_path, {"sig": {**TINY_VARIANT, "loss": "bce"}})
    config.write_text(config.read_text().replace("n_folds = 5", "n_folds = 3"))
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert code == 0, err
    code, _, err = run_kit(["--config", config, "train", "--variant", "sig"], capsys)
    assert_one_line_error(code, err, "sig.toml", "key 'loss'", "multi-class", '"ce"')
    assert not (tmp_path / "runs" / "sig").exists() and not (tmp_path / "oof").exists()  # nothing trained


@pytest.mark.parametrize("command, advice", [
    ("blend", "run `kit blend` again"), ("calibrate", "run `kit calibrate` again"), ("submissions", "run `kit submissions` again"),
    ("train", "`kit train --resume` continues training"),
])
def test_ctrl_c_advice_is_the_commands_own(monkeypatch, capsys, command, advice):
    import sys

    from kit import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    monkeypatch.setattr(sys, "argv", ["kit", "--config", "c.toml", command])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and advice in err and len(err.strip().splitlines()) == 1
    if command != "train":
        assert "--resume" not in err
