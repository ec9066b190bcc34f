"""`kit submit --kernel` and `kit package --push` against the loopback fake Kaggle API of tests/test_kaggle.py,
extended with the calls of a code competition (CreateCodeSubmission), of datasets (GetDatasetStatus, blob uploads,
CreateDataset, CreateDatasetVersion) and of notebooks (SaveKernel). Each run is a subprocess through the same
launcher, so the installed kaggle client is used unchanged and talks only to the fake's free port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.leaderboard.ledger import read_ledger
from tests.conftest import assert_one_line_error, layout_toml, make_layout, run_kit
from tests.test_kaggle import API, SECRET, FakeKaggle, _kit, _never_leaks, serving

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]
SLOW = 400  # seconds a subprocess may take: importing torch and the kaggle client on a loaded machine takes over a minute

DATASETS = "/api/v1/datasets.DatasetApiService"
KERNELS = "/api/v1/kernels.KernelsApiService"
BLOBS = "/api/v1/blobs.BlobApiService"


class FakeCodeKaggle(FakeKaggle):
    """FakeKaggle plus code submissions, datasets and notebooks."""

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, str] = {}  # id -> status
        self.blobs: dict[str, bytes] = {}
        self.kernel_versions = 0
        self.dataset_status_answers: list[str] = []  # statuses GetDatasetStatus gives before "ready"

    def _answer(self, method: str, path: str, body: bytes):
        if self.reject_auth:
            return super()._answer(method, path, body)
        if method == "POST" and path == f"{API}/CreateCodeSubmission":
            request = json.loads(body)
            ref, self.next_ref = self.next_ref, self.next_ref + 1
            self.submissions[ref] = {"ref": ref, "fileName": request.get("fileName", ""), "description": request.get("submissionDescription", ""),
                                     "date": "2026-01-01T00:00:00.000Z", "status": "PENDING"}
            return 200, {"message": "Your notebook will run on the hidden test set", "ref": ref}, {}
        if method == "POST" and path == f"{DATASETS}/GetDatasetStatus":
            request = json.loads(body)
            key = f"{request.get('ownerSlug')}/{request.get('datasetSlug')}"
            if key not in self.datasets:
                return 404, {"code": 404, "message": "dataset not found"}, {}
            status = self.dataset_status_answers.pop(0) if self.dataset_status_answers else "READY"
            return 200, {"status": status}, {}
        if method == "POST" and path == f"{BLOBS}/StartBlobUpload":
            token = f"blob-{len(self.blobs)}"
            self.blobs[token] = b""
            return 200, {"token": token, "createUrl": f"http://127.0.0.1:{self.port}/blob/{token}"}, {}
        if method == "PUT" and path.startswith("/blob/"):
            self.blobs[path.rsplit("/", 1)[1]] = body
            return 200, {}, {}
        if method == "POST" and path in (f"{DATASETS}/CreateDataset", f"{DATASETS}/CreateDatasetVersion"):
            request = json.loads(body)
            fields = request.get("body", request)  # a new version's fields are under "body"
            key = f"{request.get('ownerSlug', fields.get('ownerSlug'))}/{request.get('slug') or request.get('datasetSlug') or fields.get('datasetSlug')}"
            key = key if key in self.datasets or path.endswith("/CreateDataset") else next(iter(self.datasets), key)
            self.datasets[key] = "ready"
            return 200, {"ref": key, "url": f"https://www.kaggle.com/datasets/{key}", "status": "ok"}, {}
        if method == "POST" and path == f"{KERNELS}/SaveKernel":
            self.kernel_versions += 1
            request = json.loads(body)
            return 200, {"ref": request.get("slug", ""), "url": f"https://www.kaggle.com/code/{request.get('slug', '')}",
                         "versionNumber": self.kernel_versions}, {}
        return super()._answer(method, path, body)


@pytest.fixture
def fake_code_kaggle():
    with serving(FakeCodeKaggle()) as state:
        yield state


def _config(tmp_path: Path) -> Path:
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2", "t3"])
    return layout_toml(tmp_path, cfg)


def _ledger(tmp_path: Path):
    return read_ledger(tmp_path / "submissions" / "ledger.csv")


def test_submit_kernel_records_waits_and_refuses_a_duplicate(tmp_path, fake_code_kaggle):
    config = _config(tmp_path)
    result = _kit(tmp_path, config, "submit", "--kernel", "kit-tester/kit-b-inference", "--version", "3", "-m", "code v3", "--wait",
                  fake=fake_code_kaggle, timeout=SLOW)
    assert result.returncode == 0, result.stderr
    create = next(r for r in fake_code_kaggle.requests if r["path"] == f"{API}/CreateCodeSubmission")
    body = json.loads(create["body"])
    assert body["competitionName"] == "fake-comp" and body["kernelSlug"] == "kit-b-inference" and body["kernelVersion"] == 3
    assert body["fileName"] == "submission.csv" and body["submissionDescription"] == "code v3"
    assert "as ref 4242" in result.stdout and "-1.1000" in result.stdout
    row = _ledger(tmp_path).iloc[0]
    assert row["file"] == "kernel:kit-tester/kit-b-inference@v3" and row["status"] == "COMPLETE" and row["public_score"] == "-1.10000"
    again = _kit(tmp_path, config, "submit", "--kernel", "kit-tester/kit-b-inference", "--version", "3", "-m", "again", fake=fake_code_kaggle, timeout=SLOW)
    assert again.returncode == 2 and "already sent" in again.stderr and "--force" in again.stderr
    assert len(_ledger(tmp_path)) == 1
    _never_leaks(tmp_path, result.stdout, result.stderr, again.stdout, again.stderr)


@pytest.mark.parametrize("fault, needle", [
    ("created-then-502", "may have been submitted"),  # the answer was lost: UNKNOWN, never "nothing was submitted"
    ("no-ref", "without a submission ref"),
])
def test_submit_kernel_lost_answers_are_kept_as_unknown(tmp_path, fake_code_kaggle, fault, needle):
    config = _config(tmp_path)
    fake_code_kaggle.fail("CreateCodeSubmission", fault)
    result = _kit(tmp_path, config, "submit", "--kernel", "kit-tester/nb", "-m", "lost", fake=fake_code_kaggle, timeout=SLOW)
    assert result.returncode != 0
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert _ledger(tmp_path).iloc[0]["status"] == "UNKNOWN"


def test_submit_kernel_refusal_and_rejected_credentials_leave_no_row(tmp_path, fake_code_kaggle):
    config = _config(tmp_path)
    fake_code_kaggle.reject_auth = True
    result = _kit(tmp_path, config, "submit", "--kernel", "kit-tester/nb", "-m", "x", fake=fake_code_kaggle, timeout=SLOW)
    assert result.returncode == 2 and "credentials" in result.stderr.lower()
    assert not (tmp_path / "submissions" / "ledger.csv").exists() or _ledger(tmp_path).empty
    _never_leaks(tmp_path, result.stdout, result.stderr)


def test_submit_kernel_bad_arguments_are_one_line(tmp_path, capsys):
    config = _config(tmp_path)
    for args, needle in ((["--kernel", "no-slash"], "OWNER/SLUG"), (["--kernel", "a/b", "--version", "0"], "--version 0"),
                         (["--version", "2"], "--kernel OWNER/SLUG"), (["--kernel", "a/b", "--competition", "other"], "--force")):
        code, _, err = run_kit(["--config", config, "submit", *args, "-m", "x"], capsys)
        assert_one_line_error(code, err, needle)


def _package_folder(tmp_path: Path) -> Path:
    """A package as `kit package` lays it out (two small files stand in for the weights and wheels)."""
    folder = tmp_path / "pkg"
    (folder / "dataset" / "oof").mkdir(parents=True)
    (folder / "dataset" / "oof" / "blend_b.json").write_text("{}")
    (folder / "dataset" / "kit-package.json").write_text("{}")
    (folder / "dataset" / "dataset-metadata.json").write_text(json.dumps({"title": "kit b package", "id": "kit-tester/kit-b-models",
                                                                          "licenses": [{"name": "CC0-1.0"}]}))
    (folder / "notebook").mkdir()
    (folder / "notebook" / "kit-b-inference.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (folder / "notebook" / "kernel-metadata.json").write_text(json.dumps({
        "id": "kit-tester/kit-b-inference", "title": "kit-b-inference", "code_file": "kit-b-inference.ipynb", "language": "python",
        "kernel_type": "notebook", "is_private": True, "enable_gpu": True, "enable_internet": False,
        "dataset_sources": ["kit-tester/kit-b-models"], "competition_sources": ["fake-comp"], "kernel_sources": []}))
    return folder


_PUSH = ("import sys\nfrom pathlib import Path\nfrom kit.leaderboard.publish import push\nfrom kit.errors import KitError\n"
         "try:\n    push(Path(sys.argv[1]), timeout=60, sleep=lambda s: None)\nexcept KitError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n")


def _push(tmp_path: Path, fake) -> object:
    import subprocess
    import sys

    from tests.test_kaggle import LAUNCHER, _env

    launcher = LAUNCHER.replace("from kit.cli import main\nmain()\n", _PUSH)
    return subprocess.run([sys.executable, "-c", launcher, str(_package_folder(tmp_path))], capture_output=True, text=True,
                          env=_env(tmp_path, fake), timeout=SLOW, cwd=tmp_path)


def test_push_creates_then_versions_the_dataset_and_pushes_the_notebook(tmp_path, fake_code_kaggle):
    first = _push(tmp_path, fake_code_kaggle)
    assert first.returncode == 0, first.stderr
    calls = [p for _, p in fake_code_kaggle.calls()]
    assert f"{DATASETS}/CreateDataset" in calls and f"{KERNELS}/SaveKernel" in calls
    assert calls.index(f"{DATASETS}/CreateDataset") < calls.index(f"{KERNELS}/SaveKernel")
    saved = json.loads(next(r["body"] for r in fake_code_kaggle.requests if r["path"] == f"{KERNELS}/SaveKernel"))
    assert saved.get("enableInternet") is False and saved.get("enableGpu") is True
    assert saved.get("datasetDataSources") == ["kit-tester/kit-b-models"] and saved.get("competitionDataSources") == ["fake-comp"]
    assert "--kernel kit-tester/kit-b-inference --version 1" in first.stdout
    fake_code_kaggle.requests.clear()
    (tmp_path / "again").mkdir()
    second = _push(tmp_path / "again", fake_code_kaggle)
    assert second.returncode == 0, second.stderr
    assert f"{DATASETS}/CreateDatasetVersion" in [p for _, p in fake_code_kaggle.calls()]
    _never_leaks(tmp_path, first.stdout, first.stderr, second.stdout, second.stderr)
    assert SECRET not in first.stdout


@pytest.mark.parametrize("setup, needle", [
    (lambda fake: setattr(fake, "reject_auth", True), "credentials"),
    (lambda fake: fake.fail("SaveKernel", "5xx"), "push the notebook"),
    (lambda fake: fake.dataset_status_answers.extend(["FAILED"]), "could not process the dataset"),
])
def test_push_failures_are_one_line(tmp_path, fake_code_kaggle, setup, needle):
    setup(fake_code_kaggle)
    result = _push(tmp_path, fake_code_kaggle)
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    _never_leaks(tmp_path, result.stdout, result.stderr)
