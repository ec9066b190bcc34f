"""The authenticated Kaggle API and the few calls the kit makes through it, each failure one line.

`import kaggle` authenticates at import time (and prints help or exits when it cannot), so the
package is imported only inside `connect`, with its chatter captured. The official client's public
calls are used: `competition_submit`, `competition_submissions`, `competition_get_submission_limits`,
`competition_download_files`, and the SDK's `get_submission` (by ref). A submission is sent in the
client's own three steps (StartSubmissionUpload, the PUT of the bytes, CreateSubmission), so that the
kit knows which step failed: before CreateSubmission nothing was submitted; once CreateSubmission has
left the machine, a lost answer (5xx, dropped connection, garbled body, timeout, no ref) is
`MaybeSubmitted`, never "nothing was submitted" and never retried. Only read calls are retried, with
backoff. Every HTTP request has connect and read timeouts, capped by the command's `Deadline`, and
`watchdog` bounds what the package does on its own (its import-time authentication).

Secrets never reach a message: errors name the exception type and the HTTP status, not texts that
could hold a header, and server texts are scrubbed of the credentials before they are shown.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from kit.errors import KitError, credential_forms, scrub_secrets

CREDENTIALS_HELP = (
    "Kaggle credentials {what}: put your API token in ~/.kaggle/kaggle.json as "
    '{{"username": "...", "key": "..."}} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, '
    "or set KAGGLE_API_TOKEN (kaggle.com > Settings > API > Create New Token)"
)
ENVIRONMENTS = ("PROD", "TEST", "LOCALHOST", "ADMIN", "STAGING", "QA")  # what kagglesdk's get_env() accepts
STATUSES = ("PENDING", "COMPLETE", "ERROR")
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # between checks of a pending submission; 30 s from then on
CONNECT_SECONDS = 10.0  # per HTTP request: time to open the connection
READ_SECONDS = 60.0  # per HTTP request: time without a byte of the answer
RETRY_PAUSES = (0.5, 1.0, 2.0)  # read calls only: pauses before the 2nd, 3rd and 4th try (or the server's Retry-After)
RETRY_AFTER_CAP = 30.0
WATCHDOG_GRACE = 1.0  # the watchdog fires this long after the deadline: the per-request timeouts end calls first
UPLOAD_FAILED = "the upload to Kaggle failed"


class Deadline:
    """When the whole command must be over (None: no limit); HTTP timeouts are capped by what is left."""

    def __init__(self, seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.end = None if seconds is None else clock() + seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - self._clock()

    def http_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for the next request; requests.Timeout when the deadline has passed."""
        import requests

        left = self.left()
        if left is None:
            return CONNECT_SECONDS, READ_SECONDS
        if left <= 0:
            raise requests.Timeout(f"--timeout {self.seconds:g} s has passed")
        return min(CONNECT_SECONDS, left), min(READ_SECONDS, left)


class CommandTimedOut(BaseException):
    """Raised by `watchdog` in the main thread when the deadline has passed. A BaseException, so that the
    package's own `except Exception` cannot swallow it."""


class MaybeSubmitted(KitError):
    """CreateSubmission left the machine but its answer was lost: the submission may exist on Kaggle."""

    def __init__(self, reason: str, exit_code: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


@contextlib.contextmanager
def watchdog(deadline: Deadline):
    """Interrupt whatever blocks (a socket read the package opened without a timeout) shortly after the
    deadline, with CommandTimedOut. Only in the main thread of a platform with SIGALRM; else a no-op."""
    left = deadline.left()
    usable = left is not None and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise CommandTimedOut()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(left, 0.0) + WATCHDOG_GRACE)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timeout_adapter(deadline: Deadline):
    """A requests adapter that gives every request the deadline's (connect, read) timeouts."""
    from requests.adapters import HTTPAdapter

    class _TimeoutAdapter(HTTPAdapter):
        def send(self, request, **kwargs):
            kwargs["timeout"] = deadline.http_timeout()
            return super().send(request, **kwargs)

    return _TimeoutAdapter()


def _with_timeouts(session, deadline: Deadline):
    adapter = _timeout_adapter(deadline)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session

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


def connect(console: Console | None = None, deadline: Deadline | None = None):
    """An authenticated KaggleApi, or KitError with one line on what is wrong and how to fix it.

    kaggle 2.2.4 pins the API endpoint from command-line flags and ignores the SDK's
    KAGGLE_API_ENVIRONMENT (TEST means http://localhost:7777, a local test server); when that
    variable is set the client is built for the environment it names. Unset or PROD: the package's
    own client, unchanged. Every request of every client it builds has timeouts capped by `deadline`.
    A kaggle.json that other users can read gets the kaggle CLI's warning.
    """
    _check_environment()
    api = _quietly(_make_api)
    api.kit_deadline = deadline or Deadline()
    shown = console or Console()
    api.kit_say = lambda text: shown.print(f"note: {clean_text(scrub(text, api))}", style="yellow", markup=False,
                                           highlight=False, soft_wrap=True)
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
        kit_deadline = Deadline()

        def build_kaggle_client(self):
            if os.environ.get("KAGGLE_API_ENVIRONMENT", "PROD") in ("", "PROD"):
                client = super().build_kaggle_client()
            else:
                client = KaggleClient(
                    env=get_env(),
                    verbose="--verbose" in self.args,
                    username=self.config_values.get(self.CONFIG_NAME_USER),
                    password=self.config_values.get(self.CONFIG_NAME_KEY),
                    api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                    response_processor=self.get_response_processor(),
                )
            # the SDK's session sends without a timeout; its adapters are the requests way to give one
            client._http_client._init_session()
            _with_timeouts(client._http_client._session, self.kit_deadline)
            return client

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


def send(api, file: Path, data: bytes, message: str, slug: str) -> tuple[int, str]:
    """Upload `data` (the bytes of `file` as they were read and checked; the file is not read again) as a
    submission to `slug`: (ref, Kaggle's message).

    A failure before CreateSubmission is a KitError (nothing was submitted). Once CreateSubmission has
    been sent, any failure (an HTTP error, a dropped connection, a body that is not the answer, a
    timeout, Ctrl-C, an answer without a ref) is MaybeSubmitted: the caller must not say "not sent".
    """
    import requests
    from kagglesdk.competitions.types.competition_api_service import (
        ApiCreateSubmissionRequest,
        ApiStartSubmissionUploadRequest,
    )

    start = ApiStartSubmissionUploadRequest()
    start.competition_name = slug
    start.file_name = file.name
    start.content_length = len(data)
    start.last_modified_epoch_seconds = int(time.time())
    try:
        with _captured(), api.build_kaggle_client() as kaggle:
            upload = kaggle.competitions.competition_api_client.start_submission_upload(start)
    except Exception as exc:
        raise _not_submitted(api_error(exc, f"start the upload to '{slug}'", api)) from None
    if not getattr(upload, "create_url", "") or not getattr(upload, "token", ""):
        raise KitError(f"{file}: {UPLOAD_FAILED} (Kaggle gave no upload address), so nothing was submitted; try again later")
    try:
        with requests.Session() as session:  # no credentials: the upload address is a signed URL
            answer = _with_timeouts(session, api.kit_deadline).put(upload.create_url, data=data)
        failed = "" if answer.status_code in (200, 201) else f"HTTP {answer.status_code}"
    except requests.Timeout as exc:
        left = api.kit_deadline.left()
        failed = f"{type(exc).__name__}: no answer in time" + ("" if left is None else f", --timeout {api.kit_deadline.seconds:g} s")
        raise KitError(f"{file}: {UPLOAD_FAILED} ({failed}), so nothing was submitted; try again later, "
                       "or give a larger --timeout (a large file on a slow line needs longer)") from None
    except requests.RequestException as exc:
        failed = type(exc).__name__
    if failed:
        raise KitError(f"{file}: {UPLOAD_FAILED} ({failed}), so nothing was submitted; try again later")

    create = ApiCreateSubmissionRequest()
    create.competition_name = slug
    create.blob_file_tokens = upload.token
    create.submission_description = message
    return _create(api, lambda competitions: competitions.create_submission(create), f"submit to '{slug}'")


def send_kernel(api, kernel: str, version: int | None, file_name: str, message: str, slug: str) -> tuple[int, str]:
    """Submit notebook `kernel` (OWNER/SLUG; `version`, else its latest) to code competition `slug`, its output
    `file_name` being the submission: (ref, Kaggle's message). One request, CreateCodeSubmission, with the failure
    handling of `send`'s CreateSubmission: a refusal (HTTP < 500) is a KitError, any other failure MaybeSubmitted."""
    from kagglesdk.competitions.types.competition_api_service import ApiCreateCodeSubmissionRequest

    owner, notebook = kernel.split("/")
    request = ApiCreateCodeSubmissionRequest()
    request.competition_name = slug
    request.kernel_owner = owner
    request.kernel_slug = notebook
    if version is not None:
        request.kernel_version = int(version)
    request.file_name = file_name
    request.submission_description = message
    return _create(api, lambda competitions: competitions.create_code_submission(request), f"submit notebook {kernel} to '{slug}'")


def _create(api, call: Callable, what: str) -> tuple[int, str]:
    """One create request, `call(competition_api_client)`, never retried: (ref, Kaggle's message). A refusal (HTTP < 500)
    is a definite answer, a KitError saying nothing was submitted; any other failure, or an answer without a ref, may
    have created the submission (MaybeSubmitted)."""
    import requests

    try:
        with _captured(), api.build_kaggle_client() as kaggle:
            response = call(kaggle.competitions.competition_api_client)
    except KeyboardInterrupt:
        raise MaybeSubmitted("interrupted while Kaggle was creating the submission", exit_code=130) from None
    except CommandTimedOut:
        raise MaybeSubmitted(f"--timeout {api.kit_deadline.seconds:g} s passed while Kaggle was creating the submission") from None
    except Exception as exc:
        if isinstance(exc, requests.HTTPError) and exc.response is not None and exc.response.status_code < 500:
            raise _not_submitted(api_error(exc, what, api)) from None
        raise MaybeSubmitted(_lost_answer(exc, api)) from None
    ref = getattr(response, "ref", 0) or 0
    if not isinstance(ref, int) or ref <= 0:
        raise MaybeSubmitted("Kaggle answered without a submission ref")
    return ref, clean_text(scrub(getattr(response, "message", "") or "", api))


def _not_submitted(err: KitError) -> KitError:
    return KitError(f"{err}; nothing was submitted")


def _lost_answer(exc: Exception, api) -> str:
    """Why the answer to CreateSubmission is unusable, in a few words (no server text that could hold a secret)."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"Kaggle answered HTTP {exc.response.status_code} {clean_text(scrub(exc.response.reason or '', api))}".strip()
    if isinstance(exc, requests.Timeout):
        return f"no answer from Kaggle in time ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"the connection dropped before Kaggle answered ({type(exc).__name__})"
    if isinstance(exc, ValueError):
        return f"Kaggle's answer was not readable ({type(exc).__name__})"
    return f"the request failed ({type(exc).__name__})"


def _read_call(call: Callable, deadline: Deadline | None, sleep: Callable[[float], None] = time.sleep,
               say: Callable[[str], None] | None = None, action: str = "ask Kaggle"):
    """`call()`, tried again after a pause when it failed in a way a later try may not (429, 5xx, a dropped
    connection, a timeout): at most len(RETRY_PAUSES) more tries, each after RETRY_PAUSES[i] or the server's
    Retry-After (capped at RETRY_AFTER_CAP), never past the deadline; `say` is told of every pause. Only for
    calls that change nothing on Kaggle (tenacity does the looping)."""
    import tenacity

    def pause(state: tenacity.RetryCallState) -> float:
        return _retry_pause(state.outcome.exception(), RETRY_PAUSES[min(state.attempt_number, len(RETRY_PAUSES)) - 1])

    def past_deadline(state: tenacity.RetryCallState) -> bool:
        left = deadline.left() if deadline is not None else None
        return left is not None and state.upcoming_sleep >= left

    def tell(state: tenacity.RetryCallState) -> None:
        if say is not None:
            why = _failure_words(state.outcome.exception())
            say(f"Kaggle API: {why} while trying to {action}; trying again in {state.upcoming_sleep:g} s "
                f"(try {state.attempt_number + 1} of {len(RETRY_PAUSES) + 1})")

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: _retry_pause(exc, 0.0) is not None),
        wait=pause,
        stop=tenacity.stop_after_attempt(len(RETRY_PAUSES) + 1) | past_deadline,
        before_sleep=tell,
        sleep=sleep,
        reraise=True,
    )
    return retrying(call)


def _read(api, call: Callable, action: str):
    """`_read_call` with the deadline and the line printer that `connect` gave the client."""
    return _read_call(call, getattr(api, "kit_deadline", None), say=getattr(api, "kit_say", None), action=action)


def _failure_words(exc: BaseException | None) -> str:
    """A retried failure in a few words (no server text)."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def _retry_pause(exc: BaseException | None, pause: float) -> float | None:
    """The pause before the next try of a read call, or None when it is not worth another try."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status != 429 and status < 500:
            return None
        try:
            return max(0.0, min(float(exc.response.headers.get("Retry-After", "")), RETRY_AFTER_CAP))
        except ValueError:
            return pause
    return pause if isinstance(exc, requests.ConnectionError | requests.Timeout) else None


def get_submission(api, ref: int) -> RemoteSubmission:
    """The submission `ref` as Kaggle reports it now (the SDK's GetSubmission)."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionRequest

    request = ApiGetSubmissionRequest()
    request.ref = int(ref)

    def call():
        with _captured(), api.build_kaggle_client() as client:
            return client.competitions.competition_api_client.get_submission(request)

    try:
        return _remote(_read(api, call, f"get submission {ref}"))
    except Exception as exc:
        raise api_error(exc, f"get submission {ref}", api) from None


def list_submissions(api, slug: str) -> list[RemoteSubmission]:
    """The latest submissions of the caller's team to `slug` (one page of up to 100), newest first."""
    def call():
        with _captured():
            return api.competition_submissions(slug, page_size=100) or []

    try:
        found = _read(api, call, f"list the submissions to '{slug}'")
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
    def call():
        with _captured():
            return api.competition_get_submission_limits(slug)

    try:
        limits = _read(api, call, f"read today's submission count of '{slug}'")
        return SubmissionLimits(int(limits.num_today), int(limits.num_allowed_now), bool(limits.limited_by_total))
    except Exception:
        return None


def download_files(api, slug: str, target: Path) -> None:
    """The competition's files into `target` (zip archives, as the API sends them)."""
    def call():
        with _captured():
            api.competition_download_files(slug, path=str(target), quiet=True)

    try:
        _read(api, call, f"download '{slug}'")
    except Exception as exc:
        raise api_error(exc, f"download '{slug}'", api) from None


def api_error(exc: Exception, action: str, api=None) -> KitError:
    """One line for a failed API call that says what kind of failure it was; credentials problems say how
    to fix them. Never echoes a key."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return KitError(CREDENTIALS_HELP.format(what=f"were rejected (HTTP {status} while trying to {action})"))
        said = clean_text(scrub(_server_message(exc), api))
        said = f": Kaggle says {said!r}" if said else ""
        reason = clean_text(scrub(exc.response.reason or "", api))
        if status == 429:
            return KitError(f"Kaggle API: rate-limited (HTTP 429 Too Many Requests) while trying to {action}{said}; "
                            "wait a few minutes and run again")
        if status >= 500:
            return KitError(f"Kaggle API: server error (HTTP {status} {reason}) while trying to {action}{said}; "
                            "Kaggle's side failed, retry later")
        hint = "check the submission ref" if status == 404 and "submission" in action else "check the competition slug and that you joined it"
        return KitError(f"Kaggle API: {action} failed with HTTP {status} {reason}{said}; {hint}")
    if isinstance(exc, requests.Timeout):
        return KitError(f"Kaggle API: no answer in time while trying to {action} ({type(exc).__name__}); "
                        "check the network, or retry later (a larger --timeout waits longer)")
    if isinstance(exc, requests.ConnectionError):
        return KitError(f"Kaggle API: cannot reach the server to {action} ({type(exc).__name__}); check the network")
    if isinstance(exc, ValueError):
        return KitError(f"Kaggle API: the answer to {action} was not readable ({type(exc).__name__}); retry later")
    return KitError(f"Kaggle API: {action} failed ({type(exc).__name__})")


_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str) -> str:
    """Text from outside (a server, a file) made safe to print and store: escape sequences and control
    characters removed, whitespace collapsed to single spaces. Rich markup stays text because the kit
    prints such text with markup off."""
    return " ".join(_CONTROL.sub(" ", _ANSI.sub("", str(text))).split())


def scrub(text: str, api=None) -> str:
    """`text` on one line without any credential the client holds or the environment gives, in any form
    (raw key or token, `user:key`, its base64 as a Basic Authorization header carries it)."""
    values = getattr(api, "config_values", None) or {}
    forms = credential_forms(str(values.get("username") or ""), str(values.get("key") or ""), str(values.get("token") or ""))
    return " ".join(scrub_secrets(str(text), forms).split())


def _remote(sub) -> RemoteSubmission:
    status = getattr(getattr(sub, "status", None), "name", None) or "PENDING"
    date = getattr(sub, "date", None)
    def text(name: str) -> str:  # server text: no escape sequences, no control characters, no credential
        return clean_text(scrub(str(getattr(sub, name, "") or "")))

    return RemoteSubmission(
        ref=int(getattr(sub, "ref", 0) or 0),
        status=status if status in STATUSES else "PENDING",
        public_score=text("public_score"),
        private_score=text("private_score"),
        error_description=text("error_description"),
        file_name=text("file_name"),
        description=text("description"),
        date=date.isoformat(timespec="seconds") if hasattr(date, "isoformat") else clean_text(str(date or "")),
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
