"""`kit submit`, `kit submissions` and `kit download` against a fake Kaggle API on loopback that answers
the official client's own calls.

With KAGGLE_API_ENVIRONMENT=TEST the kagglesdk client talks to http://localhost:7777, a port several
test runs on one machine cannot share. The SDK reads no setting for the address (it is the dict
`kagglesdk.kaggle_env._env_to_endpoint`), so each test binds its fake server to a free port and
runs the kit through a two-line launcher that points that dict (TEST, and PROD for the package's
import-time check, so nothing leaves the machine) at it. Everything else is the installed client
unchanged. A submission is StartSubmissionUpload (token + upload URL), a PUT of the bytes,
CreateSubmission (token + message); a score is GetSubmission by ref; the daily count is
GetSubmissionLimits. The fake implements those, records every request, and scores a submission
after a set number of PENDING answers.

Refusals that happen before any request (validation, duplicates, a ledger that cannot be written)
run in-process, which is faster; runs that reach the client are subprocesses, since `import
kaggle` reads the environment once per process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from kit.hashing import file_sha256
from kit.leaderboard.ledger import claim_entry, new_entry, read_ledger
from kit.submission import write_submission
from tests.conftest import CLASSES, assert_one_line_error, layout_toml, make_layout, one_hot, run_kit, sigint_to_default

API = "/api/v1/competitions.CompetitionApiService"
SECRET = "s3cr3t-kit-test-key-0123456789"
TOKEN = "KGAT_kit-test-token-9876543210"
LAUNCHER = (
    "import os, sys\n"
    "from kagglesdk import kaggle_env\n"
    "for env in (kaggle_env.KaggleEnv.TEST, kaggle_env.KaggleEnv.PROD):\n"
    "    kaggle_env._env_to_endpoint[env] = os.environ['KIT_TEST_KAGGLE_ENDPOINT']\n"
    "sys.argv[0] = 'kit'\n"
    "from kit.cli import main\n"
    "main()\n"
)
PROVENANCE = {"synthetic": False, "nested_cv_score": -1.25, "nested_cv_se": 0.1, "trivial_baseline": -4.5,
              "variants": ["cnn_demo", "test_resnet"], "weights": {"cnn_demo": 0.75, "test_resnet": 0.25}, "decision_rule": "bayes"}


class FakeKaggle:
    """State of the fake API: what it received and how it answers."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[dict] = []
        self.reject_auth = False
        self.upload_status = 200
        self.archive = b""
        self.pending_answers = 1  # GetSubmission says PENDING this many times, then `outcome`
        self.outcome: dict = {"status": "COMPLETE", "publicScore": "-1.10000"}
        self.limits = {"numToday": 2, "numTotal": 9, "numAllowedNow": 3}
        self.submissions: dict[int, dict] = {}
        self.next_ref = 4242
        self.faults: dict[str, list[str]] = {}  # call name (e.g. "CreateSubmission") -> fault modes, one per request
        self.release = threading.Event()  # a stalled request waits for this (set when the test ends)
        self.headers: dict[str, str] = {}  # of the request being answered, for the "echo" fault
        self.date_offset = 0.0  # seconds added to the dates Kaggle gives submissions (its clock against this machine's)
        self.before: dict[str, object] = {}  # call name -> a function run when its request arrives (a race staged by a test)

    def fail(self, call: str, *modes: str) -> None:
        """The next requests of `call` fail with these modes, in order (FAULTS); later ones are answered normally."""
        self.faults.setdefault(call, []).extend(modes)

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict | bytes, dict]:
        hook = self.before.pop(path.rsplit("/", 1)[-1], None)
        if hook is not None:
            hook()
        modes = self.faults.get(path.rsplit("/", 1)[-1])
        mode = modes.pop(0) if modes else None
        if mode == "stall":  # the request takes effect, but no answer comes until the test ends (30 s at most)
            self._answer(method, path, body)
            self.release.wait(30)
            return 503, {"code": 503, "message": "stalled"}, {}
        if mode == "429":
            return 429, {"code": 429, "message": "Too many requests"}, {"Retry-After": "0"}
        if mode == "5xx":
            return 503, {"code": 503, "message": "backend unavailable"}, {}
        if mode == "503-retry-after":  # come back in 100 s
            return 503, {"code": 503, "message": "backend unavailable"}, {"Retry-After": "100"}
        if mode == "echo":  # a server error page that repeats the request's Authorization header
            return 400, {"code": 400, "message": f"bad request; Authorization: {self.headers.get('Authorization', '')}"}, {}
        if mode == "echo-error":  # a scored submission whose error description repeats the Authorization header
            status, payload, headers = self._answer(method, path, body)
            return status, {**payload, "status": "ERROR", "errorDescription": f"rejected; Authorization: {self.headers.get('Authorization', '')}"}, headers
        status, payload, headers = self._answer(method, path, body)
        if mode == "created-then-502":  # the submission exists, but the answer is lost
            return 502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}
        if mode == "garbled":
            return 200, b'{"message": "Successfully submitted", "ref": 42', {"Content-Type": "application/json"}
        if mode == "no-ref":
            return 200, {"message": "Successfully submitted"}, {}
        if mode == "ansi":
            return 200, {**payload, "message": "\x1b[2J\x1b[31mSuccessfully\x1b[0m [bold red]submitted[/]\x07\rOVERWRITE"}, headers
        return status, payload, headers

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, dict | bytes, dict]:
        if self.reject_auth:
            return 401, {"code": 401, "message": "Unauthenticated"}, {}
        if method == "POST" and path == "/api/v1/security.OAuthService/IntrospectToken":
            ok = json.loads(body).get("token") == TOKEN
            return (200, {"active": True, "username": "kit-tester"}, {}) if ok else (401, {"code": 401, "message": "bad token"}, {})
        if method == "POST" and path == f"{API}/StartSubmissionUpload":
            return 200, {"token": "blob-token-1", "createUrl": f"http://127.0.0.1:{self.port}/upload/blob-token-1"}, {}
        if method == "PUT" and path == "/upload/blob-token-1":
            return self.upload_status, {}, {}
        if method == "POST" and path == f"{API}/CreateSubmission":
            request = json.loads(body)
            ref, self.next_ref = self.next_ref, self.next_ref + 1
            start = next(json.loads(r["body"]) for r in reversed(self.requests) if r["path"] == f"{API}/StartSubmissionUpload")
            self.submissions[ref] = {"ref": ref, "fileName": start["fileName"], "description": request.get("submissionDescription", ""),
                                     "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + self.date_offset)), "status": "PENDING"}
            return 200, {"message": "Successfully submitted to fake competition", "ref": ref}, {}
        if method == "POST" and path == f"{API}/GetSubmission":
            ref = json.loads(body)["ref"]
            if ref not in self.submissions:
                return 404, {"code": 404, "message": f"submission {ref} not found"}, {}
            if self.pending_answers > 0:
                self.pending_answers -= 1
            else:
                self.submissions[ref].update(self.outcome)
            return 200, self.submissions[ref], {}
        if method == "POST" and path == f"{API}/ListSubmissions":
            return 200, {"submissions": sorted(self.submissions.values(), key=lambda s: -s["ref"])}, {}
        if method == "POST" and path == f"{API}/GetSubmissionLimits":
            return 200, self.limits, {}
        if method == "POST" and path == f"{API}/DownloadDataFiles":
            return 302, b"", {"Location": f"http://127.0.0.1:{self.port}/files/fake-comp.zip"}
        if method == "GET" and path == "/files/fake-comp.zip":
            return 200, self.archive, {"Content-Type": "application/zip"}
        return 404, {"code": 404, "message": f"no route {method} {path}"}, {}


def _handler(state: FakeKaggle):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append({"method": method, "path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()})
            state.headers = dict(self.headers)
            status, payload, headers = state.answer(method, self.path, body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                if not isinstance(payload, bytes):
                    self.send_header("Content-Type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (a stalled answer)
                pass

        def do_POST(self):
            self._handle("POST")

        def do_PUT(self):
            self._handle("PUT")

        def do_GET(self):
            self._handle("GET")

    return Handler


@contextlib.contextmanager
def serving(state: FakeKaggle):
    """`state` (a FakeKaggle or a subclass) answering on a free loopback port until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_kaggle():
    """A fake Kaggle API on a free loopback port, for the duration of one test."""
    with serving(FakeKaggle()) as state:
        yield state


def _setup(tmp_path: Path, synthetic: bool = False) -> tuple[Path, Path]:
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2", "t3"])
    if synthetic:
        (cfg.data.dir / "SYNTHETIC").touch()
    good = write_submission(one_hot(["A", "C", "B"]), np.array(["t1", "t2", "t3"]), CLASSES, cfg, "good", {**PROVENANCE, "synthetic": synthetic})
    return layout_toml(tmp_path, cfg), good


def _env(tmp_path: Path, fake: FakeKaggle | None, creds: str = "key") -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update({"HOME": str(home), "KAGGLE_CONFIG_DIR": str(home / ".kaggle"), "KAGGLE_API_ENVIRONMENT": "TEST",
                "KIT_TEST_KAGGLE_ENDPOINT": f"http://127.0.0.1:{fake.port if fake else 9}",
                "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1", "COLUMNS": "240",
                "VERBOSE": "1"})  # the SDK then prints every request with its headers: the kit must not let that through
    if creds == "key":
        env.update({"KAGGLE_USERNAME": "kit-tester", "KAGGLE_KEY": SECRET})
    elif creds == "token":
        env["KAGGLE_API_TOKEN"] = TOKEN
    elif creds == "bad-token":
        env["KAGGLE_API_TOKEN"] = SECRET
    return env


def _kit(tmp_path: Path, config: Path, *args: str, fake: FakeKaggle | None = None, creds: str = "key", timeout: float = 90):
    command = [sys.executable, "-c", LAUNCHER, "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path, fake, creds), timeout=timeout, cwd=tmp_path)


def _never_leaks(tmp_path: Path, *texts: str) -> None:
    """Neither the key nor the token (nor the Basic-auth header made of the key) is in the output or in any file
    under `tmp_path` but the user's kaggle.json."""
    basic = base64.b64encode(f"kit-tester:{SECRET}".encode()).decode()
    for secret in (SECRET, TOKEN, basic):
        for text in texts:
            assert secret not in text
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.name not in ("kaggle.json", "access_token", "access_token.txt", "kaggle-token"):
                assert secret.encode() not in path.read_bytes(), path


@pytest.mark.subprocess
def test_submit_wait_prints_public_beside_nested_cv_and_the_ledger_holds_it(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    result = _kit(tmp_path, config, "submit", str(good), "--message", "kit test: blend v1+v2", "--wait", fake=fake_kaggle)
    assert result.returncode == 0, result.stderr
    assert fake_kaggle.calls() == [
        ("POST", f"{API}/GetSubmissionLimits"), ("POST", f"{API}/StartSubmissionUpload"), ("PUT", "/upload/blob-token-1"),
        ("POST", f"{API}/CreateSubmission"), ("POST", f"{API}/GetSubmission"), ("POST", f"{API}/GetSubmission"),
    ]
    bodies = [r["body"] for r in fake_kaggle.requests]
    start = json.loads(bodies[1])
    assert start["competitionName"] == "fake-comp" and start["fileName"] == "good.csv" and start["contentLength"] == good.stat().st_size
    assert bodies[2] == good.read_bytes()  # byte for byte
    assert json.loads(bodies[3]) == {"competitionName": "fake-comp", "blobFileTokens": "blob-token-1", "submissionDescription": "kit test: blend v1+v2"}
    assert json.loads(bodies[4]) == {"ref": 4242}
    auth = fake_kaggle.requests[1]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == f"kit-tester:{SECRET}"

    out = result.stdout
    assert "as ref 4242" in out and "Kaggle allowed 3 more today" in out
    for needle in ("public leaderboard score (Kaggle)", "-1.1000", "nested-CV score (kit blend)", "-1.2500 ± 0.1000",
                   "trivial baseline (nested CV)", "-4.5000", "public − nested CV", "+0.1500"):
        assert needle in out, needle
    row = read_ledger(good.parent / "ledger.csv").iloc[0]
    assert row["ref"] == "4242" and row["status"] == "COMPLETE" and row["public_score"] == "-1.10000"
    assert row["sha256"] == file_sha256(good) and row["message"] == "kit test: blend v1+v2" and row["competition"] == "fake-comp"
    assert row["nested_cv_score"] == "-1.25" and row["trivial_baseline"] == "-4.5" and row["decision_rule"] == "bayes"
    assert row["variants"] == "cnn_demo;test_resnet" and row["weights"] == "cnn_demo=0.75;test_resnet=0.25"
    _never_leaks(tmp_path, result.stdout, result.stderr)


@pytest.mark.subprocess
def test_error_status_prints_kaggle_description_and_exits_non_zero(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.outcome = {"status": "ERROR", "errorDescription": "Submission must have 17015 rows; found 3"}
    result = _kit(tmp_path, config, "submit", str(good), "-m", "errors", "--wait", fake=fake_kaggle)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Submission must have 17015 rows; found 3" in lines[0] and "ref 4242" in lines[0], result.stderr
    row = read_ledger(good.parent / "ledger.csv").iloc[0]
    assert row["status"] == "ERROR" and row["error_description"] == "Submission must have 17015 rows; found 3"


@pytest.mark.subprocess
def test_ctrl_c_while_waiting_keeps_a_pending_row_that_submissions_completes(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.pending_answers = 10**6
    command = [sys.executable, "-c", LAUNCHER, "--config", str(config), "submit", str(good), "-m", "wait for me", "--wait"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path, fake_kaggle), cwd=tmp_path,
        preexec_fn=sigint_to_default,
    )
    deadline = time.monotonic() + 60
    while ("POST", f"{API}/GetSubmission") not in fake_kaggle.calls() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted while waiting" in err and "stays PENDING" in err and "Traceback" not in err
    ledger = good.parent / "ledger.csv"
    row = read_ledger(ledger).iloc[0]
    assert row["ref"] == "4242" and row["status"] == "PENDING" and row["public_score"] == ""

    fake_kaggle.pending_answers = 0  # Kaggle has scored it since
    later = _kit(tmp_path, config, "submissions", fake=fake_kaggle)
    assert later.returncode == 0, later.stderr
    row = read_ledger(ledger).iloc[0]
    assert row["status"] == "COMPLETE" and row["public_score"] == "-1.10000" and row["ref"] == "4242"
    assert "good.csv" in later.stdout and "wait for me" in later.stdout and "-1.1000" in later.stdout and "+0.1500" in later.stdout
    assert "today on 'fake-comp': 2 submitted, 3 left" in later.stdout
    assert (good.parent / "cv_vs_public.png").read_bytes()[:4] == b"\x89PNG"
    assert "r needs 3 or more points" in later.stdout and str(good.parent / "cv_vs_public.png") in later.stdout
    _never_leaks(tmp_path, out, err, later.stdout, later.stderr)


@pytest.mark.subprocess
def test_a_failed_upload_is_an_error_and_leaves_no_row(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.upload_status = 500  # the client returns "Could not submit to competition" instead of raising
    result = _kit(tmp_path, config, "submit", str(good), "-m", "upload breaks", fake=fake_kaggle)
    assert_one_line_error(result.returncode, result.stderr, str(good), "upload to Kaggle failed", "nothing was submitted")
    assert "submitted" not in result.stdout
    assert ("POST", f"{API}/CreateSubmission") not in fake_kaggle.calls()
    assert read_ledger(good.parent / "ledger.csv").empty


@pytest.mark.subprocess
def test_no_submissions_left_today_is_refused_before_the_upload(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.limits = {"numToday": 5, "numTotal": 40, "numAllowedNow": 0}
    result = _kit(tmp_path, config, "submit", str(good), "-m", "one too many", fake=fake_kaggle)
    assert_one_line_error(result.returncode, result.stderr, "no submissions left", "5 sent today", "nothing was sent")
    assert fake_kaggle.calls() == [("POST", f"{API}/GetSubmissionLimits")]
    assert read_ledger(good.parent / "ledger.csv").empty


@pytest.mark.subprocess
def test_a_file_already_sent_is_refused_in_one_line_unless_forced(tmp_path, fake_kaggle, capsys):
    config, good = _setup(tmp_path)
    ledger = good.parent / "ledger.csv"
    earlier = {**new_entry(good, file_sha256(good), "first try", "fake-comp", PROVENANCE), "ref": "77", "status": "COMPLETE", "public_score": "-1.3"}
    claim_entry(ledger, earlier, None)
    code, out, err = run_kit(["--config", config, "submit", good, "-m", "again"], capsys)
    assert_one_line_error(code, err, str(good), "already sent to 'fake-comp'", "ref 77", "'first try'", "--force")
    assert fake_kaggle.requests == [] and len(read_ledger(ledger)) == 1
    code, out, _ = run_kit(["--config", config, "submit", good, "-m", "again", "--dry-run"], capsys)
    assert code == 0 and "would be refused without --force" in out
    copy = tmp_path / "elsewhere.csv"
    copy.write_bytes(good.read_bytes())  # same bytes under another name: still the same submission
    code, _, err = run_kit(["--config", config, "submit", copy, "-m", "again"], capsys)
    assert_one_line_error(code, err, "already sent")
    forced = _kit(tmp_path, config, "submit", str(good), "-m", "again, on purpose", "--force", fake=fake_kaggle)
    assert forced.returncode == 0, forced.stderr
    rows = read_ledger(ledger)
    assert rows["ref"].tolist() == ["77", "4242"] and rows["status"].tolist() == ["COMPLETE", "PENDING"]


@pytest.mark.parametrize("damage, needle", [
    (lambda text: text.replace("t2,0,0,1", "t2,1,0,1"), "row 3 (id t2) has 2 positive classes"),
    (lambda text: text.replace("t2,0,0,1", "t2,0,0,0"), "row 3 (id t2) has 0 positive classes"),
    (lambda text: text.splitlines()[0] + "\n", "0 rows, expected 3"),
    (lambda text: text.replace("t2,0,0,1", "t2,0,0,1,0"), "line 3 has 5 fields, the header has 4"),
    (lambda text: "", "file is empty"),
])
def test_an_invalid_file_is_refused_before_any_request(tmp_path, fake_kaggle, capsys, damage, needle):
    config, good = _setup(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(damage(good.read_text()))
    code, _, err = run_kit(["--config", config, "submit", bad, "-m", "should not go"], capsys)
    assert_one_line_error(code, err, str(bad), needle)
    assert fake_kaggle.requests == [] and not (good.parent / "ledger.csv").exists()


@pytest.mark.parametrize("content, needle", [
    (b"id,A,B,C\n", "has a header but no rows"),
    (b"", "file is empty"),
    (b"id,A,B,C\nt1,0,0,0\nt\xe92,0,0,0\n", "not UTF-8 text (byte 0xe9 at line 3"),
])
def test_a_broken_sample_submission_stops_submit(tmp_path, fake_kaggle, capsys, content, needle):
    config, good = _setup(tmp_path)
    sample = tmp_path / "data" / "sample_submission.csv"
    sample.write_bytes(content)
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("id,A,B,C\n")  # a 0-row submission must not pass a 0-row sample
    for file in (good, header_only):
        code, _, err = run_kit(["--config", config, "submit", file, "-m", "x"], capsys)
        assert_one_line_error(code, err, str(sample), needle)
    assert fake_kaggle.requests == [] and not (good.parent / "ledger.csv").exists()


def test_the_newest_submission_is_the_default_never_the_ledger(tmp_path, capsys, wide_console):
    config, good = _setup(tmp_path)
    claim_entry(good.parent / "ledger.csv", {**new_entry(good, "other-bytes", "m", "fake-comp", None), "ref": "5", "status": "COMPLETE"}, None)
    os.utime(good, (1, 1))  # the ledger is now the newest CSV of submissions/
    code, out, err = run_kit(["--config", config, "submit", "-m", "default file", "--dry-run"], capsys)
    assert code == 0, err
    assert f"would submit {good} (3 rows" in out


def test_synthetic_data_is_refused_unless_dry_run(tmp_path, fake_kaggle, capsys):
    config, good = _setup(tmp_path, synthetic=True)
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "synthetic"], capsys)
    assert_one_line_error(code, err, "synthetic", "--dry-run")
    code, out, _ = run_kit(["--config", config, "submit", good, "-m", "synthetic", "--dry-run"], capsys)
    assert code == 0 and "dry run: would submit" in out and "fake-comp" in out
    assert fake_kaggle.requests == [] and not (good.parent / "ledger.csv").exists()


def test_unwritable_ledger_stops_submit_before_any_request(tmp_path, fake_kaggle, capsys, read_only, disk_full):
    config, good = _setup(tmp_path)
    before = {p.name: p.read_bytes() for p in good.parent.iterdir()}
    disk_full(good.parent)
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "disk full"], capsys)
    assert_one_line_error(code, err, str(good.parent / "ledger.csv"), "no space left")
    read_only(good.parent)
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "read-only"], capsys)
    assert_one_line_error(code, err, str(good.parent / "ledger.csv"), "cannot write")
    assert fake_kaggle.requests == []
    assert {p.name: p.read_bytes() for p in good.parent.iterdir() if not p.name.startswith(".ledger")} == before


def test_bad_environment_name_is_one_line_that_never_echoes_a_token(tmp_path, capsys, monkeypatch):
    config, good = _setup(tmp_path)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "PRODUCTION")
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "x"], capsys)
    assert_one_line_error(code, err, "KAGGLE_API_ENVIRONMENT is 'PRODUCTION'", "PROD, TEST")
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", TOKEN)  # a token pasted into the wrong variable
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "x"], capsys)
    assert_one_line_error(code, err, "KAGGLE_API_ENVIRONMENT is a value that is not an environment name")
    assert TOKEN not in err and read_ledger(good.parent / "ledger.csv").empty


@pytest.mark.subprocess
def test_token_accepted_and_rejected(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    rejected = _kit(tmp_path, config, "submit", str(good), "-m", "bad token", fake=fake_kaggle, creds="bad-token")
    assert_one_line_error(rejected.returncode, rejected.stderr, "token from KAGGLE_API_TOKEN was rejected (HTTP 401", "create a new token")
    assert ("POST", f"{API}/StartSubmissionUpload") not in fake_kaggle.calls()
    accepted = _kit(tmp_path, config, "submit", str(good), "-m", "good token", fake=fake_kaggle, creds="token")
    assert accepted.returncode == 0, accepted.stderr
    assert fake_kaggle.requests[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    _never_leaks(tmp_path, rejected.stdout, rejected.stderr, accepted.stdout, accepted.stderr)


@pytest.mark.subprocess
def test_missing_credentials_one_line_exit_2(tmp_path):
    config, good = _setup(tmp_path)
    result = _kit(tmp_path, config, "submit", str(good), "--message", "no creds", creds="none")
    assert_one_line_error(result.returncode, result.stderr, "kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")
    assert "submitted" not in result.stdout and read_ledger(good.parent / "ledger.csv").empty


@pytest.mark.subprocess
def test_rejected_credentials_never_echo_the_key(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.reject_auth = True
    result = _kit(tmp_path, config, "submit", str(good), "--message", "wrong key", fake=fake_kaggle)
    assert_one_line_error(result.returncode, result.stderr, "rejected (HTTP 401", "KAGGLE_KEY")
    assert fake_kaggle.calls() == [("POST", f"{API}/GetSubmissionLimits"), ("POST", f"{API}/StartSubmissionUpload")]  # nothing uploaded
    _never_leaks(tmp_path, result.stdout, result.stderr)


@pytest.mark.subprocess
def test_world_readable_kaggle_json_is_used_with_a_warning(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    kaggle_json = tmp_path / "home" / ".kaggle" / "kaggle.json"
    kaggle_json.parent.mkdir(parents=True)
    kaggle_json.write_text(json.dumps({"username": "kit-tester", "key": SECRET}))
    kaggle_json.chmod(0o644)
    result = _kit(tmp_path, config, "submit", str(good), "-m", "from kaggle.json", fake=fake_kaggle, creds="none")
    assert result.returncode == 0, result.stderr
    assert f"warning: {kaggle_json} (your Kaggle API key) is readable by other users" in result.stdout
    assert f"chmod 600 {kaggle_json}" in result.stdout
    assert base64.b64decode(fake_kaggle.requests[1]["headers"]["Authorization"].split()[1]).decode() == f"kit-tester:{SECRET}"
    _never_leaks(tmp_path, result.stdout, result.stderr)


@pytest.mark.parametrize("mode, warned", [(0o600, False), (0o640, True), (0o604, True)])
def test_readable_by_others_is_the_kaggle_cli_rule(tmp_path, mode, warned):
    from rich.console import Console

    from kit.leaderboard.client import _warn_if_readable_by_others

    kaggle_json = tmp_path / "kaggle.json"
    kaggle_json.write_text("{}")
    kaggle_json.chmod(mode)
    console = Console(record=True, width=300)
    _warn_if_readable_by_others(kaggle_json, console)
    assert ("readable by other users" in console.export_text()) is warned


@pytest.mark.subprocess
def test_malformed_kaggle_json_one_line(tmp_path):
    config, good = _setup(tmp_path)
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    (tmp_path / "home" / ".kaggle" / "kaggle.json").write_text("not json")
    result = _kit(tmp_path, config, "submit", str(good), "--message", "x", creds="none")
    assert_one_line_error(result.returncode, result.stderr, "not accepted", "kaggle.json")


@pytest.fixture
def wide_console(monkeypatch):
    """The CLI's console 240 columns wide, so that in-process runs print tables unwrapped."""
    from kit import cli

    monkeypatch.setattr(cli.console, "width", 240)


def test_submissions_offline_and_with_nothing_recorded(tmp_path, capsys, wide_console):
    config, good = _setup(tmp_path)
    code, out, _ = run_kit(["--config", config, "submissions", "--offline"], capsys)
    assert code == 0 and "no submissions recorded yet" in out
    ledger = good.parent / "ledger.csv"
    for k, (cv, public) in enumerate([(-1.5, "-1.4"), (-1.0, "-0.8"), (-0.5, "-0.45")]):
        row = new_entry(good, f"sha{k}", f"try [{k}]", "fake-comp", {**PROVENANCE, "nested_cv_score": cv})
        claim_entry(ledger, {**row, "time": f"2025-01-0{k + 1}T10:00:00+00:00", "ref": str(100 + k), "status": "COMPLETE", "public_score": public}, None)
    claim_entry(ledger, {**new_entry(good, "other", "elsewhere", "other-comp", None), "ref": "9", "status": "PENDING"}, None)
    code, out, err = run_kit(["--config", config, "submissions", "--offline"], capsys)
    assert code == 0, err
    assert "try [0]" in out and "try [2]" in out and "elsewhere" not in out  # user text is shown as written, not read as markup
    assert "1 rows of other competitions" in out and "over 3 scored submissions: r = +0.989" in out
    assert (good.parent / "cv_vs_public.png").is_file()


@pytest.mark.subprocess
def test_download_unpacks_into_data_slug(tmp_path, fake_kaggle):
    config, _ = _setup(tmp_path)
    buf = tmp_path / "archive.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.csv", "id,A,B,C\nx,1,0,0\n")
        zf.writestr("train/x.png", b"\x89PNG fake")
    fake_kaggle.archive = buf.read_bytes()
    result = _kit(tmp_path, config, "download", "--competition", "fake-comp", fake=fake_kaggle)
    assert result.returncode == 0, result.stderr
    target = tmp_path / "data" / "fake-comp"
    assert (target / "train.csv").read_text() == "id,A,B,C\nx,1,0,0\n"
    assert (target / "train" / "x.png").read_bytes() == b"\x89PNG fake"
    assert not list(target.glob("*.zip"))  # the archive is removed once unpacked
    assert json.loads(fake_kaggle.requests[0]["body"]) == {"competitionName": "fake-comp"}
    assert "data/fake-comp" in result.stdout and "folds" in result.stdout
    assert "kit init data/fake-comp" in " ".join(result.stdout.split())


# Faults of the server and races (issue 18, class 1): nothing lost, nothing sent twice, nothing hangs.

@pytest.mark.parametrize("mode, extra", [
    ("created-then-502", []), ("garbled", []), ("no-ref", []), ("stall", ["--timeout", "3"]),
])
@pytest.mark.subprocess
def test_a_created_submission_whose_answer_is_lost_is_unknown_until_submissions_finds_it(tmp_path, fake_kaggle, capsys, mode, extra):
    config, good = _setup(tmp_path)
    ledger = good.parent / "ledger.csv"
    fake_kaggle.fail("CreateSubmission", mode)
    result = _kit(tmp_path, config, "submit", str(good), "-m", "lost answer", *extra, fake=fake_kaggle, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "may have been submitted" in lines[0] and "UNKNOWN" in lines[0] and "kit submissions" in lines[0], result.stderr
    assert "check the competition slug" not in result.stderr and "Traceback" not in result.stderr
    row = read_ledger(ledger).iloc[0]
    assert row["status"] == "UNKNOWN" and row["ref"] == "" and row["error_description"]
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "try again"], capsys)  # the same bytes: refused, nothing asked
    assert_one_line_error(code, err, "may already be on 'fake-comp'", "UNKNOWN", "kit submissions", "--force")
    assert [c for c in fake_kaggle.calls() if c[1].endswith("CreateSubmission")] == [("POST", f"{API}/CreateSubmission")]

    later = _kit(tmp_path, config, "submissions", fake=fake_kaggle)
    assert later.returncode == 0, later.stderr
    row = read_ledger(ledger).iloc[0]
    assert row["ref"] == "4242" and row["status"] in ("PENDING", "COMPLETE") and len(read_ledger(ledger)) == 1
    assert "is on Kaggle as ref 4242" in later.stdout
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "try again"], capsys)
    assert_one_line_error(code, err, "already sent to 'fake-comp' as ref 4242")
    _never_leaks(tmp_path, result.stdout, result.stderr, later.stdout, later.stderr)


@pytest.mark.subprocess
def test_an_unknown_submission_that_kaggle_does_not_have_becomes_not_found_and_may_be_sent_again(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.fail("CreateSubmission", "5xx")  # a server error before anything was created
    first = _kit(tmp_path, config, "submit", str(good), "-m", "server down", fake=fake_kaggle)
    assert first.returncode == 1 and "may have been submitted" in first.stderr and "HTTP 503" in first.stderr, first.stderr
    later = _kit(tmp_path, config, "submissions", fake=fake_kaggle)
    assert later.returncode == 0 and "not among Kaggle's latest submissions: it was not created" in later.stdout, later.stdout
    assert read_ledger(good.parent / "ledger.csv")["status"].tolist() == ["NOT_FOUND"]
    again = _kit(tmp_path, config, "submit", str(good), "-m", "server back", fake=fake_kaggle)
    assert again.returncode == 0, again.stderr
    assert read_ledger(good.parent / "ledger.csv")["status"].tolist() == ["NOT_FOUND", "PENDING"]


@pytest.mark.subprocess
def test_read_calls_retry_429_and_5xx_but_create_submission_is_never_retried(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.fail("GetSubmissionLimits", "429", "5xx")
    fake_kaggle.fail("GetSubmission", "5xx", "429")
    fake_kaggle.pending_answers = 0
    result = _kit(tmp_path, config, "submit", str(good), "-m", "busy server", "--wait", fake=fake_kaggle)
    assert result.returncode == 0, result.stderr
    calls = [c[1].rsplit("/", 1)[-1] for c in fake_kaggle.calls()]
    assert calls.count("GetSubmissionLimits") == 3 and calls.count("GetSubmission") == 3 and calls.count("CreateSubmission") == 1

    fake_kaggle.fail("CreateSubmission", "429")
    other = tmp_path / "submissions" / "other.csv"
    other.write_text(good.read_text().replace("t1,1,0,0", "t1,0,1,0"))
    limited = _kit(tmp_path, config, "submit", str(other), "-m", "rate limited", fake=fake_kaggle)
    assert_one_line_error(limited.returncode, limited.stderr, "rate-limited (HTTP 429", "wait a few minutes", "nothing was submitted")
    assert [c[1] for c in fake_kaggle.calls()].count(f"{API}/CreateSubmission") == 2  # the refused one was not retried
    assert read_ledger(good.parent / "ledger.csv")["file"].tolist() == [str(good)]

    fake_kaggle.fail("ListSubmissions", "5xx", "5xx", "5xx", "5xx")
    fake_kaggle.fail("GetSubmission", "5xx", "5xx", "5xx", "5xx")
    shown = _kit(tmp_path, config, "submissions", "--all", fake=fake_kaggle)
    assert shown.returncode == 0 and "server error (HTTP 503" in shown.stdout and "retry later" in shown.stdout, shown.stdout


@pytest.mark.subprocess
def test_a_stalled_server_never_holds_submit_past_its_timeout(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.fail("GetSubmissionLimits", "stall")
    fake_kaggle.fail("StartSubmissionUpload", "stall")
    result = _kit(tmp_path, config, "submit", str(good), "-m", "stalled", "--timeout", "2", fake=fake_kaggle, timeout=60)
    assert_one_line_error(result.returncode, result.stderr, "nothing was submitted")
    assert read_ledger(good.parent / "ledger.csv").empty
    assert ("POST", f"{API}/CreateSubmission") not in fake_kaggle.calls()


@pytest.mark.subprocess
def test_two_submits_of_one_file_at_the_same_moment_send_it_once(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    command = [sys.executable, "-c", LAUNCHER, "--config", str(config), "submit", str(good), "-m", "race"]
    env = _env(tmp_path, fake_kaggle)
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=90), p.stderr.read()) for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0, 2], results
    # the loser sees the winner's row: SENDING while it uploads ("being sent"), PENDING once it has its ref ("already sent")
    assert re.search(r"these bytes were (already|being) sent to 'fake-comp'", next(err for code, err in results if code == 2))
    assert [c[1] for c in fake_kaggle.calls()].count(f"{API}/CreateSubmission") == 1
    rows = read_ledger(good.parent / "ledger.csv")
    assert rows["ref"].tolist() == ["4242"] and rows["row_id"].str.len().tolist() == [32]


def test_another_competition_than_the_config_is_refused_unless_forced(tmp_path, fake_kaggle, capsys):
    config, good = _setup(tmp_path)
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "x", "--competition", "other-comp"], capsys)
    assert_one_line_error(code, err, "--competition 'other-comp' is not the config's kaggle.competition 'fake-comp'", "--force")
    code, out, _ = run_kit(["--config", config, "submit", good, "-m", "x", "--competition", "other-comp", "--dry-run"], capsys)
    assert code == 0 and "would be refused without --force" in out
    assert fake_kaggle.requests == [] and not (good.parent / "ledger.csv").exists()


def test_a_sample_with_a_repeated_id_is_refused(tmp_path, fake_kaggle, capsys):
    config, good = _setup(tmp_path)
    sample = tmp_path / "data" / "sample_submission.csv"
    sample.write_text("id,A,B,C\nt1,0,0,0\nt2,0,0,0\nt1,0,0,0\n")
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "x"], capsys)
    assert_one_line_error(code, err, str(sample), "rows 2 and 4 have the same id 't1'")
    assert fake_kaggle.requests == []


def test_a_provenance_json_of_another_csv_is_refused(tmp_path, fake_kaggle, capsys):
    config, good = _setup(tmp_path)
    assert json.loads(good.with_suffix(".json").read_text())["csv_sha256"] == file_sha256(good)
    good.write_text(good.read_text().replace("t1,1,0,0", "t1,0,1,0"))  # edited after `kit blend`: still a valid file
    code, _, err = run_kit(["--config", config, "submit", good, "-m", "x"], capsys)
    assert_one_line_error(code, err, str(good.with_suffix(".json")), "describes another CSV", "kit blend")
    assert fake_kaggle.requests == [] and not (good.parent / "ledger.csv").exists()


# Text from outside (issue 18, class 4): shown as text, never a credential in any form.

@pytest.mark.parametrize("creds", ["key", "token"])
@pytest.mark.subprocess
def test_a_server_message_that_echoes_the_authorization_header_is_scrubbed(tmp_path, fake_kaggle, creds):
    config, good = _setup(tmp_path)
    fake_kaggle.fail("StartSubmissionUpload", "echo")
    result = _kit(tmp_path, config, "submit", str(good), "-m", "echo", fake=fake_kaggle, creds=creds)
    assert_one_line_error(result.returncode, result.stderr, "HTTP 400", "Authorization: ", "***", "nothing was submitted")
    echoed = fake_kaggle.requests[-1]["headers"]["Authorization"]
    assert echoed.split()[1] not in result.stderr  # the header really was echoed, and masked
    _never_leaks(tmp_path, result.stdout, result.stderr)


@pytest.mark.subprocess
def test_server_text_loses_escape_sequences_and_markup_is_shown_as_text(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.fail("CreateSubmission", "ansi")
    fake_kaggle.pending_answers = 0
    fake_kaggle.outcome = {"status": "ERROR", "errorDescription": f"\x1b[31mbad rows\x1b[0m\x1b]0;title\x07 for key {SECRET}\r\nOK"}
    result = _kit(tmp_path, config, "submit", str(good), "-m", "ansi", "--wait", fake=fake_kaggle)
    assert result.returncode == 1, result.stderr
    for text in (result.stdout, result.stderr, (good.parent / "ledger.csv").read_text()):
        assert not any(c in text for c in "\x1b\x07\r"), repr(text)
    assert "Successfully [bold red]submitted[/] OVERWRITE" in result.stdout
    assert "bad rows for key *** OK" in result.stderr
    assert read_ledger(good.parent / "ledger.csv").iloc[0]["error_description"] == "bad rows for key *** OK"
    _never_leaks(tmp_path, result.stdout, result.stderr)


@pytest.mark.subprocess
def test_download_never_overwrites_a_file_changed_since_the_last_download(tmp_path, fake_kaggle):
    config, _ = _setup(tmp_path)
    buf = tmp_path / "archive.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.csv", "id,A,B,C\nx,1,0,0\n")
    fake_kaggle.archive = buf.read_bytes()
    first = _kit(tmp_path, config, "download", fake=fake_kaggle)
    assert first.returncode == 0, first.stderr
    train = tmp_path / "data" / "fake-comp" / "train.csv"
    train.write_text("id,A,B,C\nx,0,1,0\n")  # the user fixed a label
    again = _kit(tmp_path, config, "download", fake=fake_kaggle)
    assert_one_line_error(again.returncode, again.stderr, "changed after the last `kit download`", "'train.csv'", "nothing was unpacked")
    assert train.read_text() == "id,A,B,C\nx,0,1,0\n" and not list(train.parent.glob("*.zip"))
    train.unlink()
    third = _kit(tmp_path, config, "download", fake=fake_kaggle)  # moved away: unpacked again
    assert third.returncode == 0 and train.read_text() == "id,A,B,C\nx,1,0,0\n", third.stderr


# The bytes sent are the bytes checked (issue 28, class 1): a file rewritten while the submission is under way
# (another shell's `kit blend --name` of the same name) is never what goes out, valid or not.

@pytest.mark.parametrize("replacement", [
    lambda text: text.replace("t1,1,0,0", "t1,0,1,0"),  # another valid submission (what a blend of the same name writes)
    lambda text: text.splitlines()[0] + "\n",  # a file that would fail the checks (cut to its header)
])
@pytest.mark.parametrize("moment", ["GetSubmissionLimits", "StartSubmissionUpload", "blob-token-1"])
@pytest.mark.subprocess
def test_a_file_replaced_after_the_check_is_never_sent(tmp_path, fake_kaggle, replacement, moment):
    config, good = _setup(tmp_path)
    checked = good.read_bytes()
    other = replacement(good.read_text())
    fake_kaggle.before[moment] = lambda: good.write_text(other)
    result = _kit(tmp_path, config, "submit", str(good), "-m", "swapped", fake=fake_kaggle, timeout=300)
    assert result.returncode == 0, result.stderr
    assert good.read_text() == other  # the race really happened
    start = next(json.loads(r["body"]) for r in fake_kaggle.requests if r["path"].endswith("StartSubmissionUpload"))
    put = next(r["body"] for r in fake_kaggle.requests if r["method"] == "PUT")
    assert put == checked and start["contentLength"] == len(checked)
    row = read_ledger(good.parent / "ledger.csv").iloc[0]
    assert row["sha256"] == hashlib.sha256(checked).hexdigest()
    assert f"{len(checked)} bytes" in " ".join(result.stdout.split()) and "changed on disk after it was read" in result.stdout


# One credential inventory (issue 28, class 2): wherever the kaggle package finds the credential, no form of it is
# shown or stored, whichever server text echoes it.

def _credential_source(tmp_path: Path, source: str) -> dict[str, str]:
    """Put the credential where `source` says (no KAGGLE_* variable unless the source is one); the extra environment."""
    home = tmp_path / "home"
    kaggle_dir = home / ".kaggle"
    if source == "env-key":
        return {"KAGGLE_USERNAME": "kit-tester", "KAGGLE_KEY": SECRET}
    if source == "env-token":
        return {"KAGGLE_API_TOKEN": TOKEN}
    if source == "kaggle.json":
        kaggle_dir.mkdir(parents=True)
        (kaggle_dir / "kaggle.json").write_text(json.dumps({"username": "kit-tester", "key": SECRET}))
        (kaggle_dir / "kaggle.json").chmod(0o600)
        return {}
    if source in ("access_token", "access_token.txt"):
        kaggle_dir.mkdir(parents=True)
        (kaggle_dir / source).write_text(TOKEN + "\n")
        return {"KAGGLE_CONFIG_DIR": str(tmp_path / "elsewhere")}  # the SDK reads ~/.kaggle whatever the config folder is
    if source == "token-file":
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "kaggle-token").write_text(TOKEN)
        return {"KAGGLE_API_TOKEN": str(tmp_path / "secrets" / "kaggle-token")}
    if source == "xdg":  # no ~/.kaggle and no KAGGLE_CONFIG_DIR: the package reads $XDG_CONFIG_HOME/kaggle/kaggle.json
        xdg = tmp_path / "xdg" / "kaggle"
        xdg.mkdir(parents=True)
        (xdg / "kaggle.json").write_text(json.dumps({"username": "kit-tester", "key": SECRET}))
        (xdg / "kaggle.json").chmod(0o600)
        return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "KAGGLE_CONFIG_DIR": None}
    raise AssertionError(source)


@pytest.mark.parametrize("source", ["env-key", "env-token", "kaggle.json", "access_token", "access_token.txt", "token-file", "xdg"])
@pytest.mark.subprocess
def test_an_echoed_credential_is_masked_wherever_the_package_read_it(tmp_path, fake_kaggle, source):
    config, good = _setup(tmp_path)
    extra = _credential_source(tmp_path, source)
    env = {k: v for k, v in _env(tmp_path, fake_kaggle, creds="none").items()}
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    fake_kaggle.fail("GetSubmission", "echo-error")  # the scored submission's error description repeats the header
    fake_kaggle.pending_answers = 0
    command = [sys.executable, "-c", LAUNCHER, "--config", str(config), "submit", str(good), "-m", "echo", "--wait"]
    waited = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert waited.returncode == 1, waited.stderr
    echoed = fake_kaggle.requests[-1]["headers"]["Authorization"]
    assert echoed.split()[1] not in waited.stderr and "Authorization: " in waited.stderr and "***" in waited.stderr
    assert "rejected; Authorization: " in read_ledger(good.parent / "ledger.csv").iloc[0]["error_description"]

    other = tmp_path / "submissions" / "other.csv"
    other.write_text(good.read_text().replace("t1,1,0,0", "t1,0,1,0"))
    fake_kaggle.fail("StartSubmissionUpload", "echo")  # a refusal whose text repeats the header
    command = [sys.executable, "-c", LAUNCHER, "--config", str(config), "submit", str(other), "-m", "echo 2"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert_one_line_error(refused.returncode, refused.stderr, "HTTP 400", "Authorization: ", "***")
    _never_leaks(tmp_path, waited.stdout, waited.stderr, refused.stdout, refused.stderr)


# Reconciliation (issue 28, class 5): clocks that differ, a SENDING row left by a kill, a refresh that must end.

@pytest.mark.parametrize("offset", [-300, -3600, 3600])  # this machine's clock 5 min or an hour ahead of Kaggle's, or an hour behind
@pytest.mark.subprocess
def test_a_lost_answer_is_found_on_kaggle_whatever_the_clocks_say(tmp_path, fake_kaggle, offset):
    config, good = _setup(tmp_path)
    fake_kaggle.date_offset = offset
    fake_kaggle.fail("CreateSubmission", "created-then-502")
    first = _kit(tmp_path, config, "submit", str(good), "-m", "skewed", fake=fake_kaggle, timeout=300)
    assert first.returncode == 1 and "may have been submitted" in first.stderr, first.stderr
    later = _kit(tmp_path, config, "submissions", fake=fake_kaggle, timeout=300)
    assert later.returncode == 0, later.stderr
    assert "is on Kaggle as ref 4242" in later.stdout and "asking Kaggle for the latest submissions" in later.stdout
    row = read_ledger(good.parent / "ledger.csv").iloc[0]
    assert row["ref"] == "4242" and row["status"] != "NOT_FOUND"
    again = _kit(tmp_path, config, "submit", str(good), "-m", "skewed", fake=fake_kaggle, timeout=300)
    assert_one_line_error(again.returncode, again.stderr, "already sent to 'fake-comp' as ref 4242")
    assert [c[1] for c in fake_kaggle.calls()].count(f"{API}/CreateSubmission") == 1  # no duplicate


@pytest.mark.subprocess
def test_two_submissions_of_one_name_and_message_far_from_the_rows_time_are_ambiguous_not_not_found(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.date_offset = -3 * 3600  # three hours from the row's time: the time cannot tell
    for ref in (100, 101):
        fake_kaggle.submissions[ref] = {"ref": ref, "fileName": "good.csv", "description": "same words", "status": "COMPLETE",
                                        "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 3 * 3600))}
    ledger = good.parent / "ledger.csv"
    claim_entry(ledger, {**new_entry(good, file_sha256(good), "same words", "fake-comp", PROVENANCE), "status": "UNKNOWN",
                         "error_description": "lost"}, None)
    later = _kit(tmp_path, config, "submissions", fake=fake_kaggle, timeout=300)
    assert later.returncode == 0, later.stderr
    assert "ambiguous" in later.stdout and "100, 101" in later.stdout
    row = read_ledger(ledger).iloc[0]
    assert row["status"] == "UNKNOWN" and row["ref"] == "" and "ambiguous" in row["error_description"]
    again = _kit(tmp_path, config, "submit", str(good), "-m", "same words", fake=fake_kaggle, timeout=300)
    assert_one_line_error(again.returncode, again.stderr, "may already be on 'fake-comp'")


@pytest.mark.subprocess
def test_a_sending_row_left_by_a_kill_before_any_request_is_resolved(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.fail("GetSubmissionLimits", "stall")
    command = [sys.executable, "-c", LAUNCHER, "--config", str(config), "submit", str(good), "-m", "killed"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path, fake_kaggle), cwd=tmp_path)
    deadline = time.monotonic() + 240
    while ("POST", f"{API}/GetSubmissionLimits") not in fake_kaggle.calls() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up runs, the SENDING row stays
    process.communicate(timeout=30)
    ledger = good.parent / "ledger.csv"
    row = read_ledger(ledger).iloc[0]
    assert row["status"] == "SENDING" and f"pid {process.pid}" in row["error_description"]
    refused = _kit(tmp_path, config, "submit", str(good), "-m", "killed", fake=fake_kaggle, timeout=300)
    assert_one_line_error(refused.returncode, refused.stderr, "were being sent", "kit submissions")
    fake_kaggle.release.set()
    later = _kit(tmp_path, config, "submissions", fake=fake_kaggle, timeout=300)
    assert later.returncode == 0 and "it was not created" in later.stdout, later.stdout
    assert read_ledger(ledger)["status"].tolist() == ["NOT_FOUND"]
    again = _kit(tmp_path, config, "submit", str(good), "-m", "killed", fake=fake_kaggle, timeout=300)  # no --force needed
    assert again.returncode == 0, again.stderr
    assert read_ledger(ledger)["status"].tolist() == ["NOT_FOUND", "PENDING"]


@pytest.mark.parametrize("fault", ["stall", "503-retry-after"])
@pytest.mark.subprocess
def test_submissions_timeout_bounds_the_refresh_and_says_what_it_waits_for(tmp_path, fake_kaggle, capsys, fault):
    config, good = _setup(tmp_path)
    ledger = good.parent / "ledger.csv"
    claim_entry(ledger, {**new_entry(good, file_sha256(good), "m", "fake-comp", PROVENANCE), "status": "UNKNOWN"}, None)
    fake_kaggle.fail("ListSubmissions", *[fault] * 5)
    result = _kit(tmp_path, config, "submissions", "--timeout", "15", fake=fake_kaggle, timeout=180)  # connecting counts: a loaded machine
    took = time.monotonic() - next(r["at"] for r in fake_kaggle.requests if r["path"].endswith("ListSubmissions"))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "gives up after 15 s; --timeout" in out and "asking Kaggle for the latest submissions" in out
    assert "not refreshed from Kaggle" in out and "Traceback" not in result.stderr
    assert took < 35, took  # from the first list request to the end: at most 15 s and the table, never the 100 s Retry-After nor a 60 s read
    assert read_ledger(ledger)["status"].tolist() == ["UNKNOWN"]
    code, _, err = run_kit(["--config", config, "submissions", "--timeout", "0"], capsys)
    assert_one_line_error(code, err, "--timeout 0", "more than 0")
