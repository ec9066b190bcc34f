"""The authenticated Kaggle API and the few calls the kit makes through it, each failure one line.

`import kaggle` authenticates at import time (and prints help or exits when it cannot), so the
package is imported only inside `connect`, with its chatter captured. The official client's public
calls are used: `competition_submit`, `competition_submissions`, `competition_get_submission_limits`,
`competition_download_files`, and the SDK's `get_submission` (by ref). Secrets never reach a
message: errors name the exception type and the HTTP status, not texts that could hold a header,
and server texts are scrubbed of the credentials before they are shown.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from kit.errors import KitError

CREDENTIALS_HELP = (
    "Kaggle credentials {what}: put your API token in ~/.kaggle/kaggle.json as "
    '{{"username": "...", "key": "..."}} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, '
    "or set KAGGLE_API_TOKEN (kaggle.com > Settings > API > Create New Token)"
)
ENVIRONMENTS = ("PROD", "TEST", "LOCALHOST", "ADMIN", "STAGING", "QA")  # what kagglesdk's get_env() accepts
STATUSES = ("PENDING", "COMPLETE", "ERROR")
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # between checks of a pending submission; 30 s from then on

DEFAULT_WAIT_SECONDS = 900.0  # how long `kit submit --wait` waits for Kaggle to score a submission


@dataclass(frozen=True)
class RemoteSubmission:
    """One submission as Kaggle reports it; scores are Kaggle's own text ('' while unknown)."""

    ref: int
    status: str  # PENDING, COMPLETE or ERROR
    public_score: str = ""
    private_score: str = ""
    error_description: str = ""
    file_name: str = ""
    description: str = ""
    date: str = ""  # ISO 8601, UTC


@dataclass(frozen=True)
class SubmissionLimits:
    used_today: int
    left_today: int
    limited_by_total: bool = False


def connect(console: Console | None = None):
    """An authenticated KaggleApi, or KitError with one line on what is wrong and how to fix it.

    kaggle 2.2.4 pins the API endpoint from command-line flags and ignores the SDK's
    KAGGLE_API_ENVIRONMENT (TEST means http://localhost:7777, a local test server); when that
    variable is set the client is built for the environment it names. Unset or PROD: the package's
    own client, unchanged. A kaggle.json that other users can read gets the kaggle CLI's warning.
    """
    _check_environment()
    api = _quietly(_make_api)
    _warn_if_readable_by_others(Path(api.config), console or Console())
    _quietly(api.authenticate)
    if not _has_credentials(api):
        raise KitError(CREDENTIALS_HELP.format(what=_what_failed()))
    return api


def _make_api():
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class _EnvAwareKaggleApi(KaggleApi):
        def build_kaggle_client(self):
            if os.environ.get("KAGGLE_API_ENVIRONMENT", "PROD") in ("", "PROD"):
                return super().build_kaggle_client()
            return KaggleClient(
                env=get_env(),
                verbose="--verbose" in self.args,
                username=self.config_values.get(self.CONFIG_NAME_USER),
                password=self.config_values.get(self.CONFIG_NAME_KEY),
                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                response_processor=self.get_response_processor(),
            )

    return _EnvAwareKaggleApi()


@contextlib.contextmanager
def _captured():
    """The package's prints, captured and dropped: its progress bars, its help text, and with VERBOSE=1 the
    SDK's request dumps, whose headers hold the credentials."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _quietly(step):
    """Run an import or authentication step with the package's prints captured and its failures one line."""
    try:
        with _captured():
            return step()
    except SystemExit:  # the package printed its help and called exit(): nothing usable was found
        raise KitError(CREDENTIALS_HELP.format(what=_what_failed())) from None
    except Exception as exc:  # a token that did not check out, no network to check it, malformed files, ...
        raise _authentication_error(exc) from None


def send(api, file: Path, message: str, slug: str) -> tuple[int, str]:
    """Upload `file` as a submission to `slug`: (ref, Kaggle's message). An upload the client reports as
    failed (it returns a message instead of raising) is a KitError: nothing was submitted."""
    try:
        with _captured():
            response = api.competition_submit(str(file), message, slug, quiet=True)
    except Exception as exc:
        raise api_error(exc, f"submit to '{slug}'", api) from None
    text = getattr(response, "message", "") or ""
    if text == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise KitError(f"{file}: the upload to Kaggle failed ({text!r}), so nothing was submitted; try again later")
    return int(getattr(response, "ref", 0) or 0), scrub(text, api)


def get_submission(api, ref: int) -> RemoteSubmission:
    """The submission `ref` as Kaggle reports it now (the SDK's GetSubmission)."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionRequest

    request = ApiGetSubmissionRequest()
    request.ref = int(ref)
    try:
        with _captured(), api.build_kaggle_client() as client:
            return _remote(client.competitions.competition_api_client.get_submission(request))
    except Exception as exc:
        raise api_error(exc, f"get submission {ref}", api) from None


def list_submissions(api, slug: str) -> list[RemoteSubmission]:
    """The latest submissions of the caller's team to `slug` (one page of up to 100), newest first."""
    try:
        with _captured():
            found = api.competition_submissions(slug, page_size=100) or []
    except Exception as exc:
        raise api_error(exc, f"list the submissions to '{slug}'", api) from None
    return [_remote(s) for s in found if s is not None]


def wait_until_scored(
    fetch: Callable[[], RemoteSubmission],
    timeout: float,
    on_wait: Callable[[RemoteSubmission, float, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RemoteSubmission:
    """Call `fetch` until the submission is no longer PENDING or `timeout` seconds have passed; the last answer.

    The first check is immediate, then the pauses grow (BACKOFF_SECONDS). `on_wait(last, elapsed, next_in)`
    is called a few times a second while waiting, for a spinner.
    """
    start = clock()
    pauses = iter(BACKOFF_SECONDS)
    while True:
        remote = fetch()
        elapsed = clock() - start
        if remote.status != "PENDING" or elapsed >= timeout:
            return remote
        until = clock() + min(next(pauses, BACKOFF_SECONDS[-1]), timeout - elapsed)
        while (left := until - clock()) > 0:
            if on_wait is not None:
                on_wait(remote, clock() - start, left)
            sleep(min(0.25, left))


def submission_limits(api, slug: str) -> SubmissionLimits | None:
    """Today's used and remaining submissions, or None when the API does not say (never an error)."""
    try:
        with _captured():
            limits = api.competition_get_submission_limits(slug)
        return SubmissionLimits(int(limits.num_today), int(limits.num_allowed_now), bool(limits.limited_by_total))
    except Exception:
        return None


def download_files(api, slug: str, target: Path) -> None:
    """The competition's files into `target` (zip archives, as the API sends them)."""
    try:
        with _captured():
            api.competition_download_files(slug, path=str(target), quiet=True)
    except Exception as exc:
        raise api_error(exc, f"download '{slug}'", api) from None


def api_error(exc: Exception, action: str, api=None) -> KitError:
    """One line for a failed API call; credentials problems say how to fix them. Never echoes a key."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return KitError(CREDENTIALS_HELP.format(what=f"were rejected (HTTP {status} while trying to {action})"))
        said = scrub(_server_message(exc), api)
        said = f": Kaggle says {said!r}" if said else ""
        hint = "check the submission ref" if status == 404 and "submission" in action else "check the competition slug and that you joined it"
        return KitError(f"Kaggle API: {action} failed with HTTP {status} {exc.response.reason}{said}; {hint}")
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return KitError(f"Kaggle API: cannot reach the server to {action} ({type(exc).__name__}); check the network")
    return KitError(f"Kaggle API: {action} failed ({type(exc).__name__})")


def scrub(text: str, api=None) -> str:
    """`text` on one line without any credential value the client holds or the environment gives."""
    secrets = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    values = getattr(api, "config_values", None) or {}
    secrets += [str(values.get(k) or "") for k in ("key", "token")]
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return " ".join(str(text).split())


def _remote(sub) -> RemoteSubmission:
    status = getattr(getattr(sub, "status", None), "name", None) or "PENDING"
    date = getattr(sub, "date", None)
    return RemoteSubmission(
        ref=int(getattr(sub, "ref", 0) or 0),
        status=status if status in STATUSES else "PENDING",
        public_score=str(getattr(sub, "public_score", "") or ""),
        private_score=str(getattr(sub, "private_score", "") or ""),
        error_description=str(getattr(sub, "error_description", "") or ""),
        file_name=str(getattr(sub, "file_name", "") or ""),
        description=str(getattr(sub, "description", "") or ""),
        date=date.isoformat(timespec="seconds") if hasattr(date, "isoformat") else str(date or ""),
    )


def _server_message(exc: Exception) -> str:
    """The 'message' of a JSON error body, which the SDK puts in the exception; '' otherwise."""
    try:
        body = exc.response.json()  # type: ignore[attr-defined]
    except Exception:
        return ""
    return str(body.get("message", ""))[:200] if isinstance(body, dict) else ""


def _check_environment() -> None:
    value = os.environ.get("KAGGLE_API_ENVIRONMENT")
    if value in (None, "") or value in ENVIRONMENTS:
        return
    shown = repr(value) if re.fullmatch(r"[A-Za-z_]{1,16}", value) else "a value that is not an environment name"
    raise KitError(
        f"KAGGLE_API_ENVIRONMENT is {shown}; it must be one of {', '.join(ENVIRONMENTS)} "
        "(unset it to use kaggle.com)"
    )


def _authentication_error(exc: Exception) -> KitError:
    """Why authentication failed, in one line: a rejected or unusable token, no network, a bad file."""
    import requests

    token_source = _token_source()
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if token_source:
            return KitError(
                f"Kaggle API token from {token_source} was rejected (HTTP {status} while checking it); "
                "create a new token (kaggle.com > Settings > API > Create New Token) and set it again"
            )
        return KitError(CREDENTIALS_HELP.format(what=f"were rejected (HTTP {status} while checking them)"))
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return KitError(f"Kaggle API: cannot reach the server to check the credentials ({type(exc).__name__}); check the network")
    if token_source and isinstance(exc, requests.exceptions.InvalidHeader | UnicodeError | ValueError):
        return KitError(
            f"Kaggle API token from {token_source} cannot be sent: it holds spaces, line breaks or characters "
            "other than letters, digits and punctuation; copy the token again, whole and alone"
        )
    return KitError(CREDENTIALS_HELP.format(what=f"could not be read ({type(exc).__name__})"))


def _token_source() -> str | None:
    """Where kagglesdk takes an access token from (the name, never the token), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text(errors="replace").strip():
            return str(path)
    return None


def _warn_if_readable_by_others(config: Path, console: Console) -> None:
    """The kaggle CLI's warning for a kaggle.json other users can read (the kit captures its output)."""
    if os.name == "nt" or not config.is_file():
        return
    if config.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        console.print(
            f"warning: {config} (your Kaggle API key) is readable by other users on this system; run `chmod 600 {config}`",
            style="yellow", markup=False, highlight=False, soft_wrap=True,
        )


def _what_failed() -> str:
    """'not found', or 'not accepted' when something was given (a token that did not check out, say)."""
    given = any(os.environ.get(k) for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"))
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    given = given or any((config_dir / f).is_file() for f in ("kaggle.json", "access_token", "access_token.txt"))
    return "not accepted (check that they are complete and current)" if given else "not found"


def _has_credentials(api) -> bool:
    """The package falls back to anonymous access for some commands; submitting needs a real identity."""
    values = getattr(api, "config_values", {}) or {}
    token = values.get(getattr(api, "CONFIG_NAME_TOKEN", "token"))
    user, key = values.get(api.CONFIG_NAME_USER), values.get(api.CONFIG_NAME_KEY)
    return bool(token) or bool(user and key)
