"""`kit submit` against a fake Kaggle API on loopback that answers the official client's own calls.

With KAGGLE_API_ENVIRONMENT=TEST the kagglesdk client talks to http://localhost:7777. A submission
is three calls: POST .../CompetitionApiService/StartSubmissionUpload (returns a token and an upload
URL), PUT of the file's bytes to that URL, POST .../CompetitionApiService/CreateSubmission (token +
message). The fake implements exactly those and records everything it receives.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from kit.submission import write_submission
from tests.test_submission import CLASSES, make_layout, one_hot

PORT = 7777
API = "/api/v1/competitions.CompetitionApiService"
SECRET = "s3cr3t-kit-test-key-0123456789"


class FakeKaggle(BaseHTTPRequestHandler):
    """Records (method, path, headers, body) of every request; answers the three submission calls."""

    requests: list[dict] = []
    reject_auth = False
    archive = b""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: dict | None = None) -> None:
        data = json.dumps(payload or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        body = self._body()
        type(self).requests.append({"method": method, "path": self.path, "headers": dict(self.headers), "body": body})
        if type(self).reject_auth:
            return self._reply(401, {"code": 401, "message": "Unauthenticated"})
        if method == "POST" and self.path == f"{API}/StartSubmissionUpload":
            return self._reply(200, {"token": "blob-token-1", "createUrl": f"http://localhost:{PORT}/upload/blob-token-1"})
        if method == "PUT" and self.path == "/upload/blob-token-1":
            return self._reply(200, {})
        if method == "POST" and self.path == f"{API}/CreateSubmission":
            return self._reply(200, {"message": "Successfully submitted to fake competition", "ref": 4242})
        if method == "POST" and self.path == f"{API}/DownloadDataFiles":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{PORT}/files/fake-comp.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if method == "GET" and self.path == "/files/fake-comp.zip":
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(type(self).archive)))
            self.end_headers()
            self.wfile.write(type(self).archive)
            return None
        return self._reply(404, {"code": 404, "message": f"no route {method} {self.path}"})

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_GET(self):
        self._handle("GET")


@pytest.fixture
def fake_kaggle():
    FakeKaggle.requests = []
    FakeKaggle.reject_auth = False
    try:
        server = ThreadingHTTPServer(("127.0.0.1", PORT), FakeKaggle)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            pytest.skip(f"port {PORT} on 127.0.0.1 is taken; the kaggle client's TEST environment needs exactly that port")
        raise
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield FakeKaggle
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _setup(tmp_path: Path, synthetic: bool = False):
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2", "t3"])
    if synthetic:
        (cfg.data.dir / "SYNTHETIC").touch()
    config = tmp_path / "competition.toml"
    config.write_text(
        f'task = "multi-class"\n[data]\ndir = "{cfg.data.dir}"\npatient_column = "patient_id"\n'
        f'[paths]\nsubmissions = "{cfg.paths.submissions}"\noof = "{cfg.paths.oof}"\n'
        '[kaggle]\ncompetition = "fake-comp"\n'
    )
    good = write_submission(one_hot(["A", "C", "B"]), np.array(["t1", "t2", "t3"]), CLASSES, cfg, "good", {"synthetic": synthetic})
    return config, good


def _kit(tmp_path: Path, config: Path, *args: str, creds: bool = True, timeout: float = 60):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update({"HOME": str(home), "KAGGLE_CONFIG_DIR": str(home / ".kaggle"), "KAGGLE_API_ENVIRONMENT": "TEST",
                "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1", "COLUMNS": "200"})
    if creds:
        env.update({"KAGGLE_USERNAME": "kit-tester", "KAGGLE_KEY": SECRET})
    return subprocess.run([sys.executable, "-m", "kit", "--config", str(config), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp_path)


def test_valid_file_arrives_byte_for_byte_with_its_message(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    result = _kit(tmp_path, config, "submit", str(good), "--message", "kit test: blend v1+v2")
    assert result.returncode == 0, result.stderr
    calls = [(r["method"], r["path"]) for r in fake_kaggle.requests]
    assert calls == [("POST", f"{API}/StartSubmissionUpload"), ("PUT", "/upload/blob-token-1"), ("POST", f"{API}/CreateSubmission")]
    start = json.loads(fake_kaggle.requests[0]["body"])
    assert start["competitionName"] == "fake-comp" and start["fileName"] == "good.csv"
    assert start["contentLength"] == good.stat().st_size
    assert fake_kaggle.requests[1]["body"] == good.read_bytes()  # byte for byte
    create = json.loads(fake_kaggle.requests[2]["body"])
    assert create == {"competitionName": "fake-comp", "blobFileTokens": "blob-token-1", "submissionDescription": "kit test: blend v1+v2"}
    auth = fake_kaggle.requests[0]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == f"kit-tester:{SECRET}"
    assert "Successfully submitted to fake competition" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_newest_file_is_the_default(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    result = _kit(tmp_path, config, "submit", "--message", "default file")
    assert result.returncode == 0, result.stderr
    assert fake_kaggle.requests[1]["body"] == good.read_bytes()


def test_invalid_file_is_refused_before_any_request(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text().replace("t2,0,0,1", "t2,1,0,1"))  # two positives in a row
    result = _kit(tmp_path, config, "submit", str(bad), "--message", "should not go")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 positive classes" in lines[0] and "Traceback" not in result.stderr
    assert fake_kaggle.requests == []


def test_synthetic_data_is_refused_unless_dry_run(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path, synthetic=True)
    result = _kit(tmp_path, config, "submit", str(good), "--message", "synthetic")
    assert result.returncode == 2 and "synthetic" in result.stderr and "--dry-run" in result.stderr
    dry = _kit(tmp_path, config, "submit", str(good), "--message", "synthetic", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: would submit" in dry.stdout and "fake-comp" in dry.stdout
    assert fake_kaggle.requests == []


def test_missing_credentials_one_line_exit_2(tmp_path):
    config, good = _setup(tmp_path)
    result = _kit(tmp_path, config, "submit", str(good), "--message", "no creds", creds=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for hint in ("kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        assert hint in lines[0]
    assert "Traceback" not in result.stderr and result.stdout.strip() == ""


def test_rejected_credentials_never_echo_the_key(tmp_path, fake_kaggle):
    config, good = _setup(tmp_path)
    fake_kaggle.reject_auth = True
    result = _kit(tmp_path, config, "submit", str(good), "--message", "wrong key")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rejected (HTTP 401" in lines[0] and "KAGGLE_KEY" in lines[0]
    assert SECRET not in result.stdout + result.stderr
    assert len(fake_kaggle.requests) == 1  # stopped at the first refused call


def test_download_unpacks_into_data_slug(tmp_path, fake_kaggle):
    config, _ = _setup(tmp_path)
    buf = tmp_path / "archive.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.csv", "id,A,B,C\nx,1,0,0\n")
        zf.writestr("train/x.png", b"\x89PNG fake")
    fake_kaggle.archive = buf.read_bytes()
    result = _kit(tmp_path, config, "download", "--competition", "fake-comp")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "data" / "fake-comp"
    assert (target / "train.csv").read_text() == "id,A,B,C\nx,1,0,0\n"
    assert (target / "train" / "x.png").read_bytes() == b"\x89PNG fake"
    assert not list(target.glob("*.zip"))  # the archive is removed once unpacked
    assert json.loads(fake_kaggle.requests[0]["body"]) == {"competitionName": "fake-comp"}
    assert "data/fake-comp" in result.stdout and "folds" in result.stdout


@pytest.mark.parametrize("content", ['{"username": "only-a-name"}', "not json"])
def test_malformed_kaggle_json_one_line(tmp_path, content):
    config, good = _setup(tmp_path)
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    (tmp_path / "home" / ".kaggle" / "kaggle.json").write_text(content)
    result = _kit(tmp_path, config, "submit", str(good), "--message", "x", creds=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not accepted" in lines[0] and "kaggle.json" in lines[0]
