"""The ledger file, the wait loop and `kit submissions`' refresh, without a server (the client is replaced
where a test needs Kaggle's answers; tests/test_kaggle.py runs the real client against a fake server)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from kit.errors import KitError
from kit.leaderboard import client
from kit.leaderboard.client import RemoteSubmission, SubmissionLimits, wait_until_scored
from kit.leaderboard.ledger import (
    COLUMNS,
    SENDING,
    claim_entry,
    correlation,
    new_entry,
    provenance_fields,
    read_ledger,
    remove_row,
    row_key,
    update_rows,
)
from kit.stages.submit import submissions
from kit.submission import write_submission
from tests.conftest import CLASSES, make_layout, one_hot


def test_rows_round_trip_with_awkward_text(tmp_path):
    path = tmp_path / "subs" / "ledger.csv"
    messages = ['blend "v2", α=0.5', "two\nlines", "[bold]not markup[/]", "  spaced  ", "NA", "=1+1"]
    for k, message in enumerate(messages):
        claim_entry(path, {**new_entry(Path(f"s{k}.csv"), f"sha{k}", message, "comp", None), "ref": str(k)}, None)
    frame = read_ledger(path)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["message"].tolist() == messages and frame["ref"].tolist() == [str(k) for k in range(len(messages))]
    assert set(frame["status"]) == {SENDING} and frame["public_score"].tolist() == [""] * len(messages)

    key = row_key(frame.iloc[2])
    update_rows(path, {key: {"status": "COMPLETE", "public_score": "0.25"}})
    remove_row(path, row_key(frame.iloc[0]))
    frame = read_ledger(path)
    assert len(frame) == len(messages) - 1 and frame.iloc[1]["status"] == "COMPLETE" and frame.iloc[1]["public_score"] == "0.25"
    assert (frame["status"] == SENDING).sum() == len(messages) - 2


def _append_many(path: str, worker: int, n: int) -> None:
    for k in range(n):
        claim_entry(Path(path), {**new_entry(Path("f.csv"), f"w{worker}-{k}", "m", "comp", None), "time": f"t{worker}-{k}"}, None)


@pytest.mark.subprocess
def test_concurrent_writers_lose_no_row(tmp_path):
    path = tmp_path / "ledger.csv"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), w, 8)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert sorted(read_ledger(path)["sha256"]) == sorted(f"w{w}-{k}" for w in range(3) for k in range(8))


def test_provenance_is_read_defensively():
    full = provenance_fields({"nested_cv_score": -1.0 / 3, "nested_cv_se": 0.02, "trivial_baseline": -4.72, "variants": ["a", "b"],
                              "weights": {"a": 0.6, "b": 0.4}, "decision_rule": "bayes"})
    assert full == {"nested_cv_score": "-0.3333333333", "nested_cv_se": "0.02", "trivial_baseline": "-4.72", "variants": "a;b",
                    "weights": "a=0.6;b=0.4", "decision_rule": "bayes"}
    empty = dict.fromkeys(full, "")
    assert provenance_fields(None) == empty and provenance_fields({}) == empty and provenance_fields(["not", "a", "dict"]) == empty
    odd = provenance_fields({"nested_cv_score": "high", "trivial_baseline": float("nan"), "nested_cv_se": True, "variants": "a",
                             "weights": [0.5], "decision_rule": {"kind": "offsets", "k": 2}})
    assert odd == {**empty, "decision_rule": '{"k": 2, "kind": "offsets"}'}


def test_a_file_that_is_not_a_ledger_is_one_line(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text("id,A\nx,1\n")
    with pytest.raises(KitError, match=r"ledger\.csv: not a kit ledger \(no column 'time'\); restore it") as err:
        read_ledger(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"time,competition\n\xff\n")
    with pytest.raises(KitError, match="not UTF-8"):
        read_ledger(path)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_wait_checks_at_once_then_backs_off_until_scored():
    clock = _Clock()
    answers = iter(["PENDING"] * 4 + ["COMPLETE"])
    checks: list[float] = []

    def fetch() -> RemoteSubmission:
        checks.append(clock.now)
        return RemoteSubmission(ref=1, status=next(answers), public_score="0.5")

    ticks: list[tuple[str, float, float]] = []
    remote = wait_until_scored(fetch, 600, lambda last, elapsed, left: ticks.append((last.status, elapsed, left)), clock, clock.sleep)
    assert remote.status == "COMPLETE" and remote.public_score == "0.5"
    assert checks == [0.0, 1.0, 3.0, 7.0, 15.0]  # at once, then pauses of 1, 2, 4, 8 s
    assert max(clock.slept) <= 0.25 and ticks[0] == ("PENDING", 0.0, 1.0)


def test_wait_gives_up_at_the_timeout_with_the_last_answer():
    clock = _Clock()
    checks: list[float] = []

    def fetch() -> RemoteSubmission:
        checks.append(clock.now)
        return RemoteSubmission(ref=1, status="PENDING")

    assert wait_until_scored(fetch, 20, None, clock, clock.sleep).status == "PENDING"
    assert checks == [0.0, 1.0, 3.0, 7.0, 15.0, 20.0] and clock.now == 20.0


def test_correlation_needs_three_points_that_vary():
    assert correlation(np.array([1.0, 2.0]), np.array([1.0, 2.0])) is None
    assert correlation(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) is None
    assert correlation(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])) == pytest.approx(1.0)


@pytest.fixture
def recorded(tmp_path):
    """A layout with one submission file and a ledger of a PENDING row, an interrupted upload (SENDING) and
    a SENDING row whose upload never arrived."""
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2", "t3"])
    good = write_submission(one_hot(["A", "C", "B"]), np.array(["t1", "t2", "t3"]), CLASSES, cfg, "good",
                            {"nested_cv_score": -1.0, "trivial_baseline": -4.0})
    ledger = cfg.paths.submissions / "ledger.csv"
    meta = {"nested_cv_score": -1.0, "trivial_baseline": -4.0}
    claim_entry(ledger, {**new_entry(good, "a", "pending one", cfg.kaggle.competition, meta), "ref": "11", "status": "PENDING",
                         "time": "2025-03-01T10:00:00+00:00"}, None)
    claim_entry(ledger, {**new_entry(good, "b", "cut off", cfg.kaggle.competition, meta), "time": "2025-03-01T11:00:00+00:00"}, None)
    claim_entry(ledger, {**new_entry(good, "c", "never arrived", cfg.kaggle.competition, meta), "time": "2025-03-01T12:00:00+00:00"}, None)
    return cfg, ledger


def test_submissions_completes_pending_rows_and_finds_interrupted_uploads(recorded, monkeypatch):
    cfg, ledger = recorded
    answers = {11: RemoteSubmission(ref=11, status="COMPLETE", public_score="-0.9", private_score="")}
    listed = [
        RemoteSubmission(ref=12, status="COMPLETE", public_score="-1.2", file_name="good.csv", description="cut off", date="2025-03-01T11:00:07"),
        RemoteSubmission(ref=13, status="COMPLETE", public_score="-1.5", file_name="good.csv", description="never arrived",
                         date="2025-03-01T09:00:00"),  # before the row was written: another submission
    ]
    monkeypatch.setattr(client, "connect", lambda console=None, deadline=None: object())
    monkeypatch.setattr(client, "get_submission", lambda api, ref: answers[ref])
    monkeypatch.setattr(client, "list_submissions", lambda api, slug: listed)
    monkeypatch.setattr(client, "submission_limits", lambda api, slug: SubmissionLimits(used_today=1, left_today=4))
    console = Console(record=True, width=250)
    rows = submissions(cfg, console=console)
    out = console.export_text()
    # the third: one submission of its file and message, three hours before it: not clearly it, not clearly another (issue 28)
    assert rows["ref"].tolist() == ["11", "12", ""] and rows["status"].tolist() == ["COMPLETE", "COMPLETE", "UNKNOWN"]
    assert rows["public_score"].tolist() == ["-0.9", "-1.2", ""]
    assert read_ledger(ledger)["status"].tolist() == ["COMPLETE", "COMPLETE", "UNKNOWN"]
    assert "warning: good.csv sent at 2025-03-01T12:00:00+00:00: ambiguous" in out and "(refs 13)" in out
    assert "over 2 scored submissions" in out and "today on" in out and "1 submitted, 4 left" in out


def test_submissions_shows_the_ledger_when_kaggle_cannot_be_asked(recorded, monkeypatch):
    cfg, ledger = recorded
    before = ledger.read_bytes()

    def no_credentials(console=None, deadline=None):
        raise KitError("Kaggle credentials not found: put your API token in ~/.kaggle/kaggle.json")

    monkeypatch.setattr(client, "connect", no_credentials)
    console = Console(record=True, width=250)
    rows = submissions(cfg, console=console)
    out = console.export_text()
    assert len(rows) == 3 and ledger.read_bytes() == before
    assert "warning: not refreshed from Kaggle: Kaggle credentials not found" in out and "pending one" in out
    assert "no scored submission with a nested-CV score yet" in out


def test_submit_wait_that_times_out_exits_1_and_keeps_the_row_pending(tmp_path, monkeypatch):
    from kit.stages.submit import submit

    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2", "t3"])
    good = write_submission(one_hot(["A", "C", "B"]), np.array(["t1", "t2", "t3"]), CLASSES, cfg, "good", {"nested_cv_score": -1.0})
    sent: list[tuple] = []
    monkeypatch.setattr(client, "connect", lambda console=None, deadline=None: object())
    monkeypatch.setattr(client, "submission_limits", lambda api, slug: None)
    monkeypatch.setattr(client, "send", lambda api, file, data, message, slug: (sent.append((file, message, slug)), (31, "ok"))[1])
    monkeypatch.setattr(client, "get_submission", lambda api, ref: RemoteSubmission(ref=ref, status="PENDING"))
    with pytest.raises(KitError, match=r"\(ref 31\) is not scored within --timeout 0\.05 s; it stays PENDING") as err:
        submit(cfg, good, "slow day", wait=True, timeout=0.05, console=Console(record=True))
    assert err.value.exit_code == 1 and sent == [(good, "slow day", cfg.kaggle.competition)]
    row = read_ledger(cfg.paths.submissions / "ledger.csv").iloc[0]
    assert row["ref"] == "31" and row["status"] == "PENDING" and row["nested_cv_score"] == "-1"
