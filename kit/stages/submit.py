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
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kit.artifacts import read_meta
from kit.config import CompetitionConfig
from kit.decision.metrics import signed
from kit.errors import KitError
from kit.leaderboard import client
from kit.leaderboard.ledger import (
    LEDGER_NAME,
    SENDING,
    append_entry,
    correlation,
    file_sha256,
    find_sent,
    ledger_path,
    new_entry,
    number,
    read_ledger,
    remote_fields,
    remove_row,
    row_key,
    scored_pairs,
    update_rows,
)
from kit.submission import check_submission_file, is_synthetic

PICTURE_NAME = "cv_vs_public.png"
SENDING_MATCH_SECONDS = 600  # a SENDING row matches a Kaggle submission of the same file and message made this soon after


def _failure(message: str, exit_code: int) -> KitError:
    """A KitError with its own exit code: 1 when Kaggle could not score a file, 130 after Ctrl-C."""
    err = KitError(message)
    err.exit_code = exit_code
    return err


def newest_submission(cfg: CompetitionConfig) -> Path:
    files = [p for p in cfg.paths.submissions.glob("*.csv") if p.name != LEDGER_NAME]
    if not files:
        raise KitError(f"{cfg.paths.submissions}: no submission files; run `kit blend` first")
    return max(files, key=lambda p: p.stat().st_mtime)


def submit(
    cfg: CompetitionConfig,
    file: Path | None,
    message: str,
    competition: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    timeout: float = client.DEFAULT_WAIT_SECONDS,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Validate `file` (default: newest submission), record it, send it with `message`; with `wait`, poll
    until Kaggle has scored it and print its public score beside its nested-CV score. A dry run sends nothing."""
    console = console or Console()
    file = Path(file) if file is not None else newest_submission(cfg)
    if not message or not message.strip():
        raise KitError("--message is empty; say what this submission is (it shows on the leaderboard page)")
    if wait and timeout <= 0:
        raise KitError(f"--timeout {timeout:g}: give the seconds to wait for the score, more than 0")
    slug = competition or cfg.kaggle.competition
    frame = check_submission_file(file, cfg)
    meta = read_meta(file.with_suffix(".json"))
    synthetic = bool((meta or {}).get("synthetic")) or is_synthetic(cfg)
    ledger = ledger_path(cfg.paths.submissions)
    sha = file_sha256(file)
    earlier = find_sent(read_ledger(ledger), sha, slug)
    summary = {"file": str(file), "rows": len(frame), "bytes": file.stat().st_size, "competition": slug, "message": message, "sha256": sha}

    if dry_run:
        notes = []
        if earlier is not None and not force:
            notes.append(f"already sent as {_describe(earlier)}, would be refused without --force")
        if synthetic:
            notes.append("synthetic data, would be refused without --dry-run")
        _say(console, f"dry run: would submit {file} ({len(frame)} rows, {summary['bytes']} bytes, validated against the sample) "
                      f"to '{slug}' with message {message!r}" + "".join(f" — {n}" for n in notes))
        return {**summary, "dry_run": True, "synthetic": synthetic, "duplicate": earlier is not None}
    if synthetic:
        raise KitError(
            f"{file}: made from synthetic data ({cfg.data.dir}); the leaderboard would only count it against you. "
            "Point the config at the real data, or use --dry-run"
        )
    if earlier is not None and not force:
        raise KitError(f"{file}: these bytes were already sent to '{slug}' as {_describe(earlier)}; --force sends them again (one more of today's submissions)")
    entry = new_entry(file, sha, message, slug, meta)
    key = row_key(entry)
    append_entry(ledger, entry)  # first: a folder that cannot take the row stops the submission before any request
    try:
        api = client.connect(console)
        limits = client.submission_limits(api, slug)
        if limits is not None and limits.left_today == 0 and (limits.used_today > 0 or limits.limited_by_total):
            cap = "the competition's total" if limits.limited_by_total else f"today's ({limits.used_today} sent today)"
            raise KitError(f"'{slug}': no submissions left, {cap} limit is reached (Kaggle's count); nothing was sent. "
                           "Daily counts reset at 00:00 UTC")
        ref, said = client.send(api, file, message, slug)
    except KitError:
        _forget(ledger, key)  # nothing was submitted: the ledger records submissions only
        raise
    except KeyboardInterrupt:
        raise _failure(f"interrupted during the upload of {file}: {ledger} keeps it as {SENDING}; "
                       "`kit submissions` asks Kaggle whether it arrived", 130) from None
    try:
        update_rows(ledger, {key: {"ref": str(ref or ""), "status": "PENDING"}})
    except KitError as exc:
        raise KitError(f"submitted {file} to '{slug}' as ref {ref}, but the ledger was not updated: {exc}") from None
    left = "" if limits is None else f"; Kaggle allowed {limits.left_today} more today before this one"
    _say(console, f"submitted {file} to '{slug}' as ref {ref or '?'}: {said or 'no message'}; recorded in {ledger}{left}")
    result = {**summary, "dry_run": False, "response": said, "ref": ref, "status": "PENDING"}
    if not wait:
        _say(console, "`kit submissions` shows its public score once Kaggle has scored it (or use --wait)")
        return result
    if not ref:
        raise _failure(f"Kaggle gave no ref for {file}; {ledger} keeps it as PENDING; `kit submissions` finds its score later", 1)

    remote = _wait(api, ref, timeout, console, ledger)
    update_rows(ledger, {key: remote_fields(remote)})
    row = {**entry, **remote_fields(remote)}
    if remote.status == "ERROR":
        raise _failure(f"Kaggle could not score {file} (ref {ref}): {remote.error_description or 'no description given'}; "
                       f"recorded as ERROR in {ledger}", 1)
    if remote.status == "PENDING":
        raise _failure(f"{file} (ref {ref}) is not scored after {timeout:g} s; it stays PENDING in {ledger}; "
                       "`kit submissions` fills in its score later", 1)
    _print_scores(console, file, slug, row)
    return {**result, **remote_fields(remote)}


def _forget(ledger: Path, key: str) -> None:
    """Drop the SENDING row of a submission that was not sent; if even that fails, `kit submissions` flags the row."""
    try:
        remove_row(ledger, key)
    except KitError:
        pass


def _wait(api, ref: int, timeout: float, console: Console, ledger: Path) -> client.RemoteSubmission:
    """Poll Kaggle for `ref` with a spinner; Ctrl-C or a lost connection leaves the row PENDING."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task(f"waiting for Kaggle to score ref {ref}")

    def on_wait(last: client.RemoteSubmission, elapsed: float, next_in: float) -> None:
        progress.update(task, description=f"waiting for Kaggle to score ref {ref}: {last.status}, next check in {next_in:.0f} s "
                                          f"(gives up after {timeout:g} s)")

    try:
        with progress:
            remote = client.wait_until_scored(lambda: client.get_submission(api, ref), timeout, on_wait)
    except KeyboardInterrupt:
        raise _failure(f"interrupted while waiting: ref {ref} stays PENDING in {ledger}; `kit submissions` fills in its score later", 130) from None
    except KitError as exc:
        raise KitError(f"{exc} (ref {ref} stays PENDING in {ledger}; `kit submissions` fills in its score later)") from None
    return remote


def submissions(
    cfg: CompetitionConfig,
    competition: str | None = None,
    refresh: bool = True,
    refresh_all: bool = False,
    console: Console | None = None,
) -> pd.DataFrame:
    """Refresh the competition's unscored rows from Kaggle (every row with `refresh_all`, e.g. for private
    scores after the deadline), print the ledger beside the nested-CV scores, draw public against nested
    CV, and show today's remaining submissions when the API says. A failed refresh is one warning line."""
    console = console or Console()
    slug = competition or cfg.kaggle.competition
    path = ledger_path(cfg.paths.submissions)
    ledger = read_ledger(path)
    if ledger.empty:
        _say(console, f"no submissions recorded yet in {path}; `kit submit` records every file it sends")
        return ledger
    limits = None
    if refresh:
        wanted = ledger["competition"] == slug
        if not refresh_all:
            wanted &= ledger["status"].isin(["PENDING", SENDING])
        try:
            api = client.connect(console)
            updates = _refresh(api, ledger[wanted], slug, console)
            limits = client.submission_limits(api, slug)
        except KitError as exc:
            _warn(console, f"not refreshed from Kaggle: {exc}")
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
        picture = cv_vs_public_png(cv, public, names, cfg.paths.submissions / PICTURE_NAME, r, trivial, title=f"public vs nested CV on '{slug}'")
        corr = f"r = {r:+.3f}" if r is not None else "r needs 3 or more points that vary"
        _say(console, f"public vs nested CV over {len(cv)} scored submissions: {corr}; picture: {picture}")
    else:
        _say(console, "no scored submission with a nested-CV score yet: no picture")
    if limits is not None:
        capped = " (the competition's total limit)" if limits.limited_by_total else ""
        _say(console, f"today on '{slug}': {limits.used_today} submitted, {limits.left_today} left{capped} (Kaggle's count, resets 00:00 UTC)")
    return rows


def _refresh(api, rows: pd.DataFrame, slug: str, console: Console) -> dict[str, dict[str, str]]:
    """Ledger updates keyed by row: each row with a ref asked by ref; a SENDING row (interrupted upload)
    matched against Kaggle's latest submissions by file name, message and time."""
    updates: dict[str, dict[str, str]] = {}
    listed: list[client.RemoteSubmission] | None = None
    known_refs = set(rows["ref"])
    for _, row in rows.iterrows():
        if row["ref"]:
            try:
                updates[row_key(row)] = remote_fields(client.get_submission(api, int(row["ref"])))
            except (KitError, ValueError) as exc:
                _warn(console, f"ref {row['ref']} ({Path(row['file']).name}) not refreshed: {exc}")
            continue
        if row["status"] != SENDING:
            continue
        if listed is None:
            listed = client.list_submissions(api, slug)
        match = _match_sending(row, [s for s in listed if str(s.ref) not in known_refs])
        if match is None:
            _warn(console, f"{Path(row['file']).name} sent at {row['time']} is not among Kaggle's latest submissions: "
                           "the upload was probably cut off; check kaggle.com, or send it again with --force")
        else:
            known_refs.add(str(match.ref))
            updates[row_key(row)] = remote_fields(match)
    return updates


def _match_sending(row: pd.Series, listed: list[client.RemoteSubmission]) -> client.RemoteSubmission | None:
    sent = _parse_time(row["time"])
    for remote in listed:
        when = _parse_time(remote.date)
        close = sent is not None and when is not None and 0 <= (when - sent).total_seconds() <= SENDING_MATCH_SECONDS
        if remote.file_name == Path(row["file"]).name and remote.description == row["message"] and close:
            return remote
    return None


def _parse_time(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def download(cfg: CompetitionConfig, competition: str | None = None, console: Console | None = None) -> Path:
    """Download and unpack the competition's files into data/<slug>/ and print the next step."""
    console = console or Console()
    slug = competition or cfg.kaggle.competition
    target = Path("data") / slug
    api = client.connect(console)
    client.download_files(api, slug, target)
    for archive in sorted(target.glob("*.zip")):
        _safe_extract(archive, target)
        archive.unlink()
    _say(console, f"downloaded '{slug}' into {target}")
    _say(console, f"next: point data.dir at {target} in your competition config (configs/chest-xray.toml for this competition), "
                  f"then run `kit --config <that file> folds`")
    _say(console, f"or: `kit init {target}` writes a config from the files themselves (and says what it found)")
    return target


def _safe_extract(archive: Path, target: Path) -> None:
    """Unzip, refusing members that would land outside `target`."""
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise KitError(f"{archive}: member '{member}' would be written outside {target}; not unpacking")
            zf.extractall(target)
    except zipfile.BadZipFile:
        raise KitError(f"{archive}: not a valid zip file; delete it and run `kit download` again") from None


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
        sent = _parse_time(row["time"])
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
