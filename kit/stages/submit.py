"""Stages `kit submit`, `kit submissions` and `kit download`: the leaderboard loop.

submit: validate the file against the sample, refuse bytes already sent to the competition (unless
forced), data made by `kit synth`, and a day with no submissions left; record a SENDING row in the
ledger (so a read-only folder or a full disk stops it before anything is sent), upload, record the
ref, and with `wait` poll Kaggle until the file is scored: one table of the public score beside the
nested-CV score and trivial baseline of `kit blend`. submissions: refresh pending rows from Kaggle,
print the ledger, draw public against nested CV. download: the competition's files into data/<slug>/.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kit.artifacts import TEST_IMAGES_KEY, require_same_test_images
from kit.config import CompetitionConfig, check_name
from kit.decision.metrics import signed
from kit.errors import KitError
from kit.files import read_bytes, write_json
from kit.hashing import bytes_sha256, file_sha256, stream_sha256
from kit.leaderboard import client
from kit.leaderboard.ledger import (
    NOT_FOUND,
    SENDING,
    UNKNOWN,
    claim_entry,
    correlation,
    find_sent,
    ledger_path,
    new_entry,
    now_utc,
    number,
    read_ledger,
    remote_fields,
    remove_row,
    row_key,
    scored_pairs,
    update_rows,
)
from kit.leaderboard.reconcile import Verdict, parse_time, reconcile, sender_tag, still_sending
from kit.paths import BLEND_OOF_PREFIX, cv_vs_public_picture, oof_in, oof_meta_json, provenance_json, submission_csvs
from kit.records import SubmissionMeta, read_json
from kit.submission import check_submission_file, is_synthetic

SUBMISSIONS_TIMEOUT_SECONDS = 120.0  # `kit submissions`: how long the refresh from Kaggle may take


def _failure(message: str, exit_code: int) -> KitError:
    """A KitError with its own exit code: 1 when Kaggle could not score a file, 130 after Ctrl-C."""
    err = KitError(message)
    err.exit_code = exit_code
    return err


def newest_submission(cfg: CompetitionConfig) -> Path:
    files = submission_csvs(cfg)
    if not files:
        raise KitError(f"{cfg.paths.submissions}: no submission files; run `kit blend` first")
    return max(files, key=lambda p: p.stat().st_mtime)


@dataclass(frozen=True)
class _Outgoing:
    """A submission file that passed the checks, and what the ledger and the summary say about it."""

    file: Path
    data: bytes  # the file's bytes as read once: checked, hashed, recorded and sent (never the file read again)
    slug: str
    sha: str
    meta: dict[str, Any] | None
    synthetic: bool
    other_competition: bool
    ledger: Path
    summary: dict[str, Any]


def submit(
    cfg: CompetitionConfig,
    file: Path | None,
    message: str,
    *,
    competition: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    timeout: float = client.DEFAULT_WAIT_SECONDS,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Validate `file` (default: newest submission), record it, send it with `message`; with `wait`, poll
    until Kaggle has scored it and print its public score beside its nested-CV score. A dry run sends nothing.
    `timeout` bounds the whole command: every request, the upload and the wait."""
    console = console or Console()
    if not timeout > 0 or timeout == float("inf"):
        raise KitError(f"--timeout {timeout:g}: give the seconds the command may take (upload and --wait), a number more than 0")
    deadline = client.Deadline(timeout)
    out = _validate(cfg, file, message, competition, dry_run, force)
    if dry_run:
        return _dry_run(cfg, out, force, console)
    if out.synthetic:
        raise KitError(
            f"{out.file}: made from synthetic data ({cfg.data.dir}); the leaderboard would only count it against you. "
            "Point the config at the real data, or use --dry-run"
        )
    entry = {**new_entry(out.file, out.sha, message, out.slug, out.meta), "error_description": sender_tag()}
    api, limits, ref, said = _send(out, entry, message, force=force, deadline=deadline, console=console)
    _record_ref(out, entry, ref)
    _note_if_changed(out, console)
    left = "" if limits is None else f"; Kaggle allowed {limits.left_today} more today before this one"
    _say(console, f"submitted {out.file} to '{out.slug}' as ref {ref}: {said or 'no message'}; recorded in {out.ledger}{left}")
    result = {**out.summary, "dry_run": False, "response": said, "ref": ref, "status": "PENDING"}
    if not wait:
        _say(console, "`kit submissions` shows its public score once Kaggle has scored it (or use --wait)")
        return result
    remote = _wait_for_score(api, out, entry, ref, deadline, console)
    return {**result, **remote_fields(remote)}


def _validate(cfg: CompetitionConfig, file: Path | None, message: str, competition: str | None,
              dry_run: bool, force: bool) -> _Outgoing:
    """The checks that need no ledger and no Kaggle: competition, message, the file against the sample, provenance."""
    slug = _slug(cfg, competition)
    file = Path(file) if file is not None else newest_submission(cfg)
    if not message or not message.strip():
        raise KitError("--message is empty; say what this submission is (it shows on the leaderboard page)")
    other_competition = slug != cfg.kaggle.competition
    if other_competition and not force and not dry_run:
        raise KitError(
            f"--competition '{slug}' is not the config's kaggle.competition '{cfg.kaggle.competition}': {file} was checked "
            f"against {cfg.source_file or 'the config'}'s data only; set kaggle.competition, or --force to send it anyway"
        )
    data = read_bytes(file, "write it again with `kit blend`")
    frame = check_submission_file(file, cfg, data=data)
    sha = bytes_sha256(data)
    meta = _provenance(file, sha)
    _check_test_images(cfg, file, meta)
    synthetic = bool((meta or {}).get("synthetic")) or is_synthetic(cfg)
    summary = {"file": str(file), "rows": len(frame), "bytes": len(data), "competition": slug, "message": message, "sha256": sha}
    return _Outgoing(file, data, slug, sha, meta, synthetic, other_competition, ledger_path(cfg.paths.submissions), summary)


def _dry_run(cfg: CompetitionConfig, out: _Outgoing, force: bool, console: Console) -> dict[str, Any]:
    """Say what would be sent, and each reason it would be refused; send nothing, write nothing."""
    earlier = find_sent(read_ledger(out.ledger), out.sha, out.slug)
    notes = []
    if earlier is not None and not force:
        notes.append(f"{_describe_earlier(earlier, out.slug)}, would be refused without --force")
    if out.synthetic:
        notes.append("synthetic data, would be refused without --dry-run")
    if out.other_competition and not force:
        notes.append(f"not the config's competition '{cfg.kaggle.competition}', would be refused without --force")
    _say(console, f"dry run: would submit {out.file} ({out.summary['rows']} rows, {out.summary['bytes']} bytes, validated against the sample) "
                  f"to '{out.slug}' with message {out.summary['message']!r}" + "".join(f" — {n}" for n in notes))
    return {**out.summary, "dry_run": True, "synthetic": out.synthetic, "duplicate": earlier is not None}


def _send(out: _Outgoing, entry: dict[str, str], message: str, *, force: bool, deadline: client.Deadline,
          console: Console, upload=None) -> tuple[Any, client.SubmissionLimits | None, int, str]:
    """Record a SENDING row, check today's limit, upload: (api, limits, ref, Kaggle's answer). The duplicate
    check and the SENDING row are one step under the ledger's lock, so a folder that cannot take the row stops
    the submission before any request; a failure drops the row, or keeps it as UNKNOWN if the file may be on Kaggle."""
    file, slug, ledger, key = out.file, out.slug, out.ledger, row_key(entry)

    def refuse(earlier: pd.Series) -> KitError:
        return KitError(f"{file}: {_describe_earlier(earlier, slug)}; --force sends them again (one more of today's submissions)")

    claim_entry(ledger, entry, None if force else refuse)
    try:
        with client.watchdog(deadline):
            api = client.connect(console, deadline)
            limits = client.submission_limits(api, slug)
            _check_limits(limits, slug)
            ref, said = client.send(api, file, out.data, message, slug) if upload is None else upload(api)
    except client.MaybeSubmitted as exc:
        _keep_unknown(ledger, key, exc.reason)
        raise _failure(f"{file} may have been submitted to '{slug}' ({exc.reason}); {ledger} keeps it as {UNKNOWN}; "
                       "run `kit submissions` to look it up among Kaggle's submissions before sending it again", exc.exit_code) from None
    except KitError:
        _forget(ledger, key)  # nothing was submitted: the ledger records submissions only
        raise
    except client.CommandTimedOut:
        _forget(ledger, key)
        raise KitError(f"--timeout {deadline.seconds:g} s passed before {file} was uploaded; nothing was submitted; "
                       "retry later or give a larger --timeout") from None
    except KeyboardInterrupt:
        _forget(ledger, key)
        raise _failure(f"interrupted before the upload of {file} was complete; nothing was submitted", 130) from None
    return api, limits, ref, said


def submit_kernel(
    cfg: CompetitionConfig,
    kernel: str,
    message: str,
    *,
    version: int | None = None,
    output: str = "submission.csv",
    competition: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    timeout: float = client.DEFAULT_WAIT_SECONDS,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Submit notebook `kernel` (OWNER/SLUG, `version` or its latest) to a code competition: the ledger, the duplicate
    check, the SENDING/UNKNOWN handling, the limits and `wait` of a CSV submission. The ledger's file is
    `kernel:OWNER/SLUG@vN` and its sha256 that name's: the same notebook version is a duplicate. The provenance (nested
    CV, variants, weights) is the blend's when `kit package` wrote this notebook under packages/."""
    console = console or Console()
    if not timeout > 0 or timeout == float("inf"):
        raise KitError(f"--timeout {timeout:g}: give the seconds the command may take (the request and --wait), a number more than 0")
    parts = kernel.split("/")
    if len(parts) != 2 or not all(parts):
        raise KitError(f"--kernel {kernel!r}: give the notebook as OWNER/SLUG (as in its kaggle.com/code/OWNER/SLUG address)")
    if version is not None and version < 1:
        raise KitError(f"--version {version}: give a notebook version number (1 or more), or leave it out for the latest")
    if not message or not message.strip():
        raise KitError("--message is empty; say what this submission is (it shows on the leaderboard page)")
    slug = _slug(cfg, competition)
    if slug != cfg.kaggle.competition and not force and not dry_run:
        raise KitError(f"--competition '{slug}' is not the config's kaggle.competition '{cfg.kaggle.competition}'; "
                       "set kaggle.competition, or --force to submit the notebook there anyway")
    name = f"kernel:{kernel}@{'v' + str(version) if version is not None else 'latest'}"
    sha = hashlib.sha256(name.encode()).hexdigest()
    meta = _kernel_provenance(kernel)
    synthetic = bool((meta or {}).get("synthetic"))
    summary = {"file": name, "competition": slug, "message": message, "sha256": sha, "kernel": kernel, "version": version}
    out = _Outgoing(file=Path(name), data=b"", slug=slug, sha=sha, meta=meta, synthetic=synthetic, other_competition=slug != cfg.kaggle.competition,
                    ledger=ledger_path(cfg.paths.submissions), summary=summary)
    if dry_run:
        earlier = find_sent(read_ledger(out.ledger), sha, slug)
        _say(console, f"dry run: would submit notebook {kernel} ({'version ' + str(version) if version else 'latest version'}, "
                      f"output {output}) to '{slug}' with message {message!r}"
                      + (f" — {_describe_earlier(earlier, slug)}, would be refused without --force" if earlier is not None and not force else ""))
        return {**summary, "dry_run": True, "duplicate": earlier is not None}
    if synthetic:
        raise KitError(f"notebook {kernel}: its blend was made from synthetic data; the leaderboard would only count it against you")
    deadline = client.Deadline(timeout)
    entry = new_entry(out.file, sha, message, slug, meta)
    api, limits, ref, said = _send(out, entry, message, force=force, deadline=deadline, console=console,
                                   upload=lambda api: client.send_kernel(api, kernel, version, output, message, slug))
    _record_ref(out, entry, ref)
    left = "" if limits is None else f"; Kaggle allowed {limits.left_today} more today before this one"
    _say(console, f"submitted notebook {kernel} to '{slug}' as ref {ref}: {said or 'no message'}; recorded in {out.ledger}{left}")
    result = {**summary, "dry_run": False, "response": said, "ref": ref, "status": "PENDING"}
    if not wait:
        _say(console, "Kaggle runs the notebook on the hidden test set first; `kit submissions` shows its score (or use --wait)")
        return result
    return {**result, **remote_fields(_wait_for_score(api, out, entry, ref, deadline, console))}


def _kernel_provenance(kernel: str) -> dict[str, Any] | None:
    """The blend record of the package whose notebook is `kernel` (packages/*/dataset/kit-package.json), if any."""
    for marker in sorted(Path("packages").glob("*/dataset/kit-package.json")):
        record = read_json(marker) or {}
        if record.get("kernel") == kernel:
            return read_json(oof_meta_json(oof_in(marker.parent / "oof", f"{BLEND_OOF_PREFIX}{record.get('blend')}")))
    return None


def _note_if_changed(out: _Outgoing, console: Console) -> None:
    """Say so when the file on disk is no longer the bytes that were checked and sent (another command rewrote it)."""
    try:
        now = file_sha256(out.file)
    except OSError:
        now = None
    if now != out.sha:
        _warn(console, f"{out.file} changed on disk after it was read; the bytes sent and recorded are the ones checked "
                       f"({out.summary['bytes']} bytes, sha256 {out.sha[:12]}…), not the file as it is now")


def _check_limits(limits: client.SubmissionLimits | None, slug: str) -> None:
    """Refuse before the upload when Kaggle says no submission is left today (or in all)."""
    if limits is not None and limits.left_today == 0 and (limits.used_today > 0 or limits.limited_by_total):
        cap = "the competition's total" if limits.limited_by_total else f"today's ({limits.used_today} sent today)"
        raise KitError(f"'{slug}': no submissions left, {cap} limit is reached (Kaggle's count); nothing was sent. "
                       "Daily counts reset at 00:00 UTC")


def _record_ref(out: _Outgoing, entry: dict[str, str], ref: int) -> None:
    """The SENDING row becomes PENDING with Kaggle's ref."""
    try:
        update_rows(out.ledger, {row_key(entry): {"ref": str(ref), "status": "PENDING", "error_description": ""}})
    except KitError as exc:
        raise KitError(f"submitted {out.file} to '{out.slug}' as ref {ref}, but the ledger was not updated: {exc}") from None


def _wait_for_score(api, out: _Outgoing, entry: dict[str, str], ref: int, deadline: client.Deadline,
                    console: Console) -> client.RemoteSubmission:
    """Wait for Kaggle's score, record it, and print it beside the nested-CV score; exit 1 if it is not scored."""
    remote = _wait(api, ref, deadline, console, out.ledger)
    update_rows(out.ledger, {row_key(entry): remote_fields(remote)})
    row = {**entry, **remote_fields(remote)}
    if remote.status == "ERROR":
        raise _failure(f"Kaggle could not score {out.file} (ref {ref}): {remote.error_description or 'no description given'}; "
                       f"recorded as ERROR in {out.ledger}", 1)
    if remote.status == "PENDING":
        raise _failure(f"{out.file} (ref {ref}) is not scored within --timeout {deadline.seconds:g} s; it stays PENDING in "
                       f"{out.ledger}; `kit submissions` fills in its score later", 1)
    _print_scores(console, out.file, out.slug, row)
    return remote


def _slug(cfg: CompetitionConfig, competition: str | None) -> str:
    """The competition to talk to: --competition (a checked name) or the config's, which must be set."""
    if competition is not None:
        return check_name(competition, "--competition")
    if not cfg.kaggle.competition:
        raise KitError(f"{cfg.source_file or 'the config'}: kaggle.competition is empty (no Kaggle competition); "
                       "set it, or pass --competition SLUG")
    return cfg.kaggle.competition


def _provenance(file: Path, sha: str) -> dict[str, Any] | None:
    """The provenance JSON beside `file`, only when it was written for these bytes: a JSON left from an
    earlier CSV of the same name would put another blend's scores in the ledger."""
    path = provenance_json(file)
    record = SubmissionMeta.read_if_exists(path)
    meta = None if record is None else record.to_dict()
    if record is None or record.csv_sha256 is None:
        return meta  # none, or written by an older kit (which recorded no hash)
    if record.csv_sha256 != sha:
        raise KitError(
            f"{path}: describes another CSV than {file} (its csv_sha256 differs from the file's sha256): the CSV changed after "
            f"`kit blend` wrote them; write both again with `kit blend`, or move {path.name} away to send the CSV without provenance"
        )
    return meta


def _check_test_images(cfg: CompetitionConfig, file: Path, meta: dict[str, Any] | None) -> None:
    """Refuse a submission blended from test logits of other test images than the data source holds now."""
    if not meta or TEST_IMAGES_KEY not in meta:
        return
    from kit.data.sources import open_source

    require_same_test_images(meta, open_source(cfg), file,
                             f"retrain the variants with `kit train` (without --resume), then `kit blend --name {file.stem}` again")


def _describe_earlier(earlier: pd.Series, slug: str) -> str:
    if earlier["status"] == SENDING:
        return (f"these bytes were being sent to '{slug}' on {earlier['time']} ({earlier['error_description'] or 'by an older kit'}) and "
                "no answer was recorded; if that submit is no longer running, `kit submissions` looks them up and resolves the row")
    if earlier["status"] == UNKNOWN:
        return (f"these bytes may already be on '{slug}': the answer to their upload on {earlier['time']} was lost "
                f"({earlier['error_description'] or 'no reason recorded'}), so the ledger holds them as {UNKNOWN}; "
                "run `kit submissions` to look them up first")
    return f"these bytes were already sent to '{slug}' as {_describe(earlier)}"


def _forget(ledger: Path, key: str) -> None:
    """Drop the SENDING row of a submission that was not sent; if even that fails, `kit submissions` flags the row."""
    try:
        remove_row(ledger, key)
    except KitError:
        pass


def _keep_unknown(ledger: Path, key: str, reason: str) -> None:
    """Mark the row of a submission that may exist; if even that fails, the row stays SENDING (also looked up)."""
    try:
        update_rows(ledger, {key: {"status": UNKNOWN, "error_description": reason}})
    except KitError:
        pass


def _wait(api, ref: int, deadline: client.Deadline, console: Console, ledger: Path) -> client.RemoteSubmission:
    """Poll Kaggle for `ref` with a spinner until the deadline; Ctrl-C or a lost connection leaves the row PENDING."""
    timeout = max(deadline.left() or 0.0, 0.0)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task(f"waiting for Kaggle to score ref {ref}")

    def on_wait(last: client.RemoteSubmission, elapsed: float, next_in: float) -> None:
        progress.update(task, description=f"waiting for Kaggle to score ref {ref}: {last.status}, next check in {next_in:.0f} s "
                                          f"(gives up after {timeout:g} s)")

    try:
        with progress, client.watchdog(deadline):
            remote = client.wait_until_scored(lambda: client.get_submission(api, ref), timeout, on_wait)
    except client.CommandTimedOut:
        raise _failure(f"ref {ref} is not scored within --timeout {deadline.seconds:g} s; it stays PENDING in {ledger}; "
                       "`kit submissions` fills in its score later", 1) from None
    except KeyboardInterrupt:
        raise _failure(f"interrupted while waiting: ref {ref} stays PENDING in {ledger}; `kit submissions` fills in its score later", 130) from None
    except KitError as exc:  # sent, but its score could not be asked for: exit 1, like a timeout
        raise _failure(f"{exc} (ref {ref} stays PENDING in {ledger}; `kit submissions` fills in its score later)", 1) from None
    return remote


def submissions(
    cfg: CompetitionConfig,
    competition: str | None = None,
    refresh: bool = True,
    refresh_all: bool = False,
    console: Console | None = None,
    timeout: float = SUBMISSIONS_TIMEOUT_SECONDS,
) -> pd.DataFrame:
    """Refresh the competition's unscored rows from Kaggle (every row with `refresh_all`, e.g. for private
    scores after the deadline), print the ledger beside the nested-CV scores, draw public against nested
    CV, and show today's remaining submissions when the API says. A failed refresh is one warning line.
    `timeout` bounds the refresh (every request, retry and pause): past it the ledger is shown as it was."""
    console = console or Console()
    if not timeout > 0 or timeout == float("inf"):
        raise KitError(f"--timeout {timeout:g}: give the seconds the refresh may take, a number more than 0")
    slug = _slug(cfg, competition)
    path = ledger_path(cfg.paths.submissions)
    ledger = read_ledger(path)
    if ledger.empty:
        _say(console, f"no submissions recorded yet in {path}; `kit submit` records every file it sends")
        return ledger
    limits = None
    if refresh:
        wanted = ledger["competition"] == slug
        if not refresh_all:
            wanted &= ledger["status"].isin(["PENDING", SENDING, UNKNOWN])
        known_refs = set(ledger.loc[ledger["competition"] == slug, "ref"]) - {""}
        deadline = client.Deadline(timeout)
        _say(console, f"asking Kaggle about {int(wanted.sum())} rows of '{slug}' (gives up after {timeout:g} s; --timeout)")
        try:
            with client.watchdog(deadline):
                api = client.connect(console, deadline)
                updates = _refresh(api, ledger[wanted], slug, console, known_refs)
                limits = client.submission_limits(api, slug)
        except KitError as exc:
            _warn(console, f"not refreshed from Kaggle: {exc}")
            updates = {}
        except client.CommandTimedOut:
            _warn(console, f"not refreshed from Kaggle: --timeout {timeout:g} s passed before Kaggle answered; the ledger below is "
                           "as it was; run again later, or with a larger --timeout")
            updates = {}
        if updates:
            ledger = update_rows(path, updates)
    rows = ledger[ledger["competition"] == slug].reset_index(drop=True)
    _print_ledger(console, rows, slug, path)
    others = int((ledger["competition"] != slug).sum())
    if others:
        _say(console, f"{others} rows of other competitions are in {path}; --competition SLUG shows them")
    cv, public, names = scored_pairs(rows)
    if len(cv):
        from kit.leaderboard.plot import cv_vs_public_png

        r = correlation(cv, public)
        trivial = next((number(t) for t in rows["trivial_baseline"][::-1] if number(t) is not None), None)
        picture = cv_vs_public_png(cv, public, names, cv_vs_public_picture(cfg), r, trivial=trivial, title=f"public vs nested CV on '{slug}'")
        corr = f"r = {r:+.3f}" if r is not None else "r needs 3 or more points that vary"
        _say(console, f"public vs nested CV over {len(cv)} scored submissions: {corr}; picture: {picture}")
    else:
        _say(console, "no scored submission with a nested-CV score yet: no picture")
    if limits is not None:
        capped = " (the competition's total limit)" if limits.limited_by_total else ""
        _say(console, f"today on '{slug}': {limits.used_today} submitted, {limits.left_today} left{capped} (Kaggle's count, resets 00:00 UTC)")
    return rows


def _refresh(api, rows: pd.DataFrame, slug: str, console: Console, known_refs: set[str]) -> dict[str, dict[str, str]]:
    """Ledger updates keyed by row. First the rows without a ref (UNKNOWN: the answer to their upload was
    lost; SENDING: an upload cut off) are looked up among Kaggle's latest submissions (kit.leaderboard.reconcile:
    file name and message first, time only to break ties): found, they get its ref and status; not there, an
    UNKNOWN row (or a SENDING row whose submit is no longer running) becomes NOT_FOUND (it was not created,
    its bytes may be sent again); unsure, the row stays (or becomes) UNKNOWN and says which submissions it may be.
    Then each row with a ref is asked for by ref."""
    updates: dict[str, dict[str, str]] = {}
    unresolved = rows[(rows["ref"] == "") & rows["status"].isin([SENDING, UNKNOWN])]
    if not unresolved.empty:
        _say(console, f"asking Kaggle for the latest submissions to '{slug}', to look up {len(unresolved)} rows without a ref")
        listed = [s for s in client.list_submissions(api, slug) if str(s.ref) not in known_refs]
        verdicts = reconcile(unresolved.to_dict("records"), listed)
        for _, row in unresolved.iterrows():
            update = _resolve(row, verdicts[row["row_id"]], console)
            if update:
                updates[row_key(row)] = update
    for _, row in rows.iterrows():
        if row["ref"]:
            _say(console, f"asking Kaggle for ref {row['ref']} ({Path(row['file']).name})")
            try:
                updates[row_key(row)] = remote_fields(client.get_submission(api, int(row["ref"])))
            except (KitError, ValueError) as exc:
                _warn(console, f"ref {row['ref']} ({Path(row['file']).name}) not refreshed: {exc}")
    return updates


def _resolve(row: pd.Series, verdict: Verdict, console: Console) -> dict[str, str] | None:
    """The ledger update for a row without a ref, from what Kaggle's list says of it, and one line about it."""
    name, when = Path(row["file"]).name, row["time"]
    if verdict.kind == "found":
        _say(console, f"{name} sent at {when} ({row['status']}) is on Kaggle as ref {verdict.found.ref}: recorded")
        return remote_fields(verdict.found)
    if verdict.kind == "ambiguous":
        refs = ", ".join(str(s.ref) for s in verdict.candidates)
        why = (f"ambiguous: Kaggle has {len(verdict.candidates)} submissions of {name} with this message (refs {refs}) "
               "and the times do not tell which is this one")
        _warn(console, f"{name} sent at {when}: {why}; kept as {UNKNOWN} (not sent again without --force); "
                       "check the refs on kaggle.com")
        return {"status": UNKNOWN, "error_description": why}
    if row["status"] == SENDING and still_sending(row["error_description"], parse_time(when), dt.datetime.now(dt.UTC)):
        _say(console, f"{name}: a `kit submit` started at {when} is still sending it ({row['error_description']}); left as {SENDING}")
        return None
    _warn(console, f"{name} sent at {when} is not among Kaggle's latest submissions: it was not created; "
                   f"recorded as {NOT_FOUND}, so `kit submit` may send these bytes again")
    cut = "the upload stopped before Kaggle created it; " if row["status"] == SENDING else ""
    return {"status": NOT_FOUND, "error_description": f"{cut}not among Kaggle's submissions on {now_utc()}"}


def download(cfg: CompetitionConfig, competition: str | None = None, console: Console | None = None) -> Path:
    """Download and unpack the competition's files into data/<slug>/ and print the next step."""
    console = console or Console()
    slug = _slug(cfg, competition)
    target = Path("data") / slug
    api = client.connect(console)
    client.download_files(api, slug, target)
    for archive in sorted(target.glob("*.zip")):
        try:
            _safe_extract(archive, target)
        finally:
            archive.unlink(missing_ok=True)
    _say(console, f"downloaded '{slug}' into {target}")
    _say(console, f"next: point data.dir at {target} in your competition config (configs/chest-xray.toml for this competition), "
                  f"then run `kit --config <that file> folds`")
    _say(console, f"or: `kit init {target}` writes a config from the files themselves (and says what it found)")
    return target


DOWNLOAD_MANIFEST = ".kit-download.json"  # in data/<slug>/: sha256 of every file as the last download unpacked it


def _safe_extract(archive: Path, target: Path) -> None:
    """Unzip, refusing members that would land outside `target`, and refusing to overwrite a file the user
    has changed since the last download (its sha256 is neither the recorded one nor the new one); nothing is
    unpacked then. The manifest beside the files records what this download unpacked."""
    root = target.resolve()
    manifest_path = target / DOWNLOAD_MANIFEST
    manifest = read_json(manifest_path) or {}
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for member in zf.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise KitError(f"{archive}: member '{member}' would be written outside {target}; not unpacking")
            hashes = {m.filename: _zip_member_sha256(zf, m) for m in members}
            changed = [name for name, sha in hashes.items() if (target / name).is_file()
                       and file_sha256(target / name) not in (sha, manifest.get(name))]
            if changed:
                raise KitError(
                    f"{target}: {len(changed)} files were changed after the last `kit download` (e.g. {changed[0]!r}) and would "
                    "be overwritten; move them away (or delete them) and run `kit download` again; nothing was unpacked"
                )
            zf.extractall(target)
    except zipfile.BadZipFile:
        raise KitError(f"{archive}: not a valid zip file; delete it and run `kit download` again") from None
    write_json(manifest_path, {**manifest, **hashes})


def _zip_member_sha256(zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> str:
    with zf.open(member) as f:
        return stream_sha256(f)


def _print_scores(console: Console, file: Path, slug: str, row: dict[str, str]) -> None:
    """The public score beside the nested-CV score and trivial baseline of the file's provenance."""
    public, cv, trivial = number(row["public_score"]), number(row["nested_cv_score"]), number(row["trivial_baseline"])
    se = number(row.get("nested_cv_se", ""))
    table = Table(title=escape(f"{file.name} on '{slug}' (ref {row['ref']})"))
    table.add_column("what")
    table.add_column("score", justify="right")
    table.add_row("public leaderboard score (Kaggle)", signed(public))
    if number(row["private_score"]) is not None:
        table.add_row("private leaderboard score (Kaggle)", signed(number(row["private_score"])))
    table.add_row("nested-CV score (kit blend)", signed(cv) + (f" ± {se:.4f}" if se is not None and cv is not None else ""))
    table.add_row("trivial baseline (nested CV)", signed(trivial))
    table.add_row("[bold]public − nested CV", "[bold]" + signed(_difference(public, cv)))
    console.print(table)


def _print_ledger(console: Console, rows: pd.DataFrame, slug: str, path: Path) -> None:
    """One row per submission; the trivial baseline goes in the caption when every row has the same one."""
    private = any(number(p) is not None for p in rows["private_score"])  # known once the competition has ended
    trivials = {t for t in rows["trivial_baseline"] if number(t) is not None}
    shared_trivial = len(trivials) <= 1
    caption = f"trivial baseline (nested CV): {signed(number(next(iter(trivials))))}" if len(trivials) == 1 else None
    table = Table(title=escape(f"submissions to '{slug}' ({path})"), caption=caption)
    names = ["sent (UTC)", "file", "message", "ref", "status", "public"] + (["private"] if private else [])
    names += ["nested CV", "public − CV"] + ([] if shared_trivial else ["trivial"]) + ["made of"]
    for name in names:
        table.add_column(name, justify="left" if name in ("sent (UTC)", "file", "message", "status", "made of") else "right",
                         no_wrap=name in ("sent (UTC)", "ref", "public", "private", "nested CV", "public − CV", "trivial"))
    for _, row in rows.iterrows():
        public, cv = number(row["public_score"]), number(row["nested_cv_score"])
        status = row["status"] + (f": {row['error_description']}" if row["error_description"] else "")
        made_of = ", ".join(x for x in (row["weights"] or row["variants"], row["decision_rule"]) if x)
        sent = parse_time(row["time"])
        cells = [sent.strftime("%Y-%m-%d %H:%M") if sent else row["time"], Path(row["file"]).name, row["message"], row["ref"] or "—",
                 status, signed(public)] + ([signed(number(row["private_score"]))] if private else [])
        cells += [signed(cv), signed(_difference(public, cv))] + ([] if shared_trivial else [signed(number(row["trivial_baseline"]))])
        table.add_row(*(Text(c) for c in [*cells, made_of or "—"]))  # Text: a message like "[v2]" is shown, not read as markup
    console.print(table)


def _describe(row: pd.Series) -> str:
    score = number(row["public_score"])
    return (f"ref {row['ref'] or '?'} on {row['time']} ({row['status']}" + (f", public {score:+.4f}" if score is not None else "")
            + f", message {row['message']!r})")


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _warn(console: Console, text: str) -> None:
    console.print(f"warning: {' '.join(text.split())}", style="yellow", markup=False, highlight=False, soft_wrap=True)
