"""Which Kaggle submission a ledger row without a ref is (a SENDING or UNKNOWN row), decided without trusting clocks.

Kaggle's list is matched by file name and message first; time only breaks ties, with a wide tolerance,
since this machine's clock may differ from Kaggle's by minutes. When the match is not certain the row is
"ambiguous" (it may exist: nothing is sent again without --force), never "not found". A SENDING row
records which process was sending it, so a row left by a kill before any request is resolved as soon as
that process is gone, while a submit still running is left alone.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kit.leaderboard.client import RemoteSubmission

SAME_DAY_SECONDS = 86_400  # a listed submission made this much before or after the rows is not theirs, whatever the clocks
PAIR_SECONDS = 7_200  # rows and submissions of one file and message, as many of each, made within this: paired in order
TIE_BREAK_SECONDS = 900  # the one submission within this of the row's time (either way) is the row's
SENDER = re.compile(r"being sent by pid (\d+) on (\S+)")
ORPHAN_SECONDS = 3600  # a SENDING row of another machine this old is no submit still running


@dataclass(frozen=True)
class Verdict:
    """What Kaggle's list says about one row: "found" (with the submission), "ambiguous" (with the candidates), "absent"."""

    kind: str
    found: RemoteSubmission | None = None
    candidates: list[RemoteSubmission] = field(default_factory=list)


def sender_tag() -> str:
    """Written in a SENDING row's error_description: which process on which machine is sending it."""
    return f"being sent by pid {os.getpid()} on {socket.gethostname()}"


def still_sending(description: str, sent: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether the submit that wrote a SENDING row may still be running: its process is alive (same machine),
    or (another machine, or an older kit's row) it started less than ORPHAN_SECONDS ago."""
    tag = SENDER.search(description or "")
    if tag is not None and tag.group(2) == socket.gethostname():
        try:
            os.kill(int(tag.group(1)), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OverflowError, ValueError):
            return True
        return True
    return sent is None or (now - sent).total_seconds() < ORPHAN_SECONDS


def parse_time(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def reconcile(rows: list[dict[str, str]], listed: list[RemoteSubmission]) -> dict[str, Verdict]:
    """row_id -> Verdict for rows without a ref, given Kaggle's submissions that no ledger row holds yet.

    Rows and submissions are grouped by (file name, message). A row takes the one submission of its group made
    within TIE_BREAK_SECONDS of its time that no other row of the group is as near to; else, when the group has
    as many submissions made within PAIR_SECONDS of the rows as rows, they pair in order (a clock that is off by
    more than the tie-break); else a submission of the group made within a day leaves the row ambiguous; else absent.
    """
    verdicts: dict[str, Verdict] = {}
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((Path(row["file"]).name, row["message"].strip()), []).append(row)
    for (name, message), group in groups.items():
        group = sorted(group, key=lambda r: r["time"])
        times = [t for t in (parse_time(r["time"]) for r in group) if t is not None]
        same = sorted((s for s in listed if s.file_name == name and s.description.strip() == message), key=lambda s: s.ref)
        within_day = [s for s in same if _within(s, times, SAME_DAY_SECONDS)]
        paired = [s for s in same if _within(s, times, PAIR_SECONDS)]
        near = {r["row_id"]: [s for s in same if _near(r, s)] for r in group}
        for r in group:  # first, each row that has one submission near it which no other row is near
            mine = near[r["row_id"]]
            if len(mine) == 1 and not any(mine[0] in other for key, other in near.items() if key != r["row_id"]):
                verdicts[r["row_id"]] = Verdict("found", mine[0])
        taken = {v.found.ref for v in verdicts.values() if v.found is not None}
        rest = [r for r in group if r["row_id"] not in verdicts]
        pairable = [s for s in paired if s.ref not in taken]
        for k, r in enumerate(rest):  # then the others in order, when as many are left on each side
            if len(pairable) == len(rest):
                verdicts[r["row_id"]] = Verdict("found", pairable[k])
            elif [s for s in within_day if s.ref not in taken]:
                verdicts[r["row_id"]] = Verdict("ambiguous", candidates=[s for s in within_day if s.ref not in taken])
            else:
                verdicts[r["row_id"]] = Verdict("absent")
    return verdicts


def _within(remote: RemoteSubmission, times: list[dt.datetime], seconds: float) -> bool:
    """Made no more than `seconds` before the group's first row or after its last."""
    made = parse_time(remote.date)
    if made is None or not times:
        return True
    return (min(times) - made).total_seconds() <= seconds and (made - max(times)).total_seconds() <= seconds


def _near(row: dict[str, str], remote: RemoteSubmission) -> bool:
    sent, made = parse_time(row["time"]), parse_time(remote.date)
    return sent is not None and made is not None and abs((made - sent).total_seconds()) <= TIE_BREAK_SECONDS
