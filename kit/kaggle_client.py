"""`kit submit` and `kit download` through the official kaggle package.

`import kaggle` authenticates at import time (and prints help or exits when it cannot), so the
package is imported only inside the functions that need it, with its chatter captured. A file is
validated against the competition's sample submission before any request is made, and data made
by `kit synth` is never sent unless it is a dry run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from rich.console import Console

from kit.config import CompetitionConfig
from kit.errors import KitError
from kit.submission import SYNTHETIC_MARKER, check_submission_file

CREDENTIALS_HELP = (
    "Kaggle credentials {what}: put your API token in ~/.kaggle/kaggle.json as "
    '{{"username": "...", "key": "..."}} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, '
    "or set KAGGLE_API_TOKEN (kaggle.com > Settings > API > Create New Token)"
)


def _kaggle_api():
    """An authenticated KaggleApi, or KitError with one line on how to set credentials.

    kaggle 2.2.4 pins the API endpoint from command-line flags and ignores the SDK's
    KAGGLE_API_ENVIRONMENT (TEST → http://localhost:7777, used to test against a local server);
    when that variable is set the client is built for the environment it names. Unset or PROD:
    the package's own client, unchanged.
    """
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
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

            api = _EnvAwareKaggleApi()
            api.authenticate()
    except SystemExit:  # the package printed its help and called exit(): nothing usable was found
        raise KitError(CREDENTIALS_HELP.format(what=_what_failed())) from None
    except Exception as exc:  # malformed kaggle.json, bad environment value, no network to check a token, ...
        import requests

        if isinstance(exc, requests.ConnectionError):
            raise KitError("Kaggle API: cannot reach the server to check the credentials (connection failed); check the network") from None
        raise KitError(CREDENTIALS_HELP.format(what=f"could not be read ({type(exc).__name__})")) from None
    if not _has_credentials(api):
        raise KitError(CREDENTIALS_HELP.format(what=_what_failed()))
    return api


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


def _api_error(exc: Exception, action: str) -> KitError:
    """One line for a failed API call; credentials problems say how to fix them. Never echoes a key."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return KitError(CREDENTIALS_HELP.format(what=f"were rejected (HTTP {status} while trying to {action})"))
        return KitError(f"Kaggle API: {action} failed with HTTP {status} {exc.response.reason}; check the competition slug and that you joined it")
    if isinstance(exc, requests.ConnectionError):
        return KitError(f"Kaggle API: cannot reach the server to {action} (connection failed); check the network")
    return KitError(f"Kaggle API: {action} failed ({type(exc).__name__})")


def newest_submission(cfg: CompetitionConfig) -> Path:
    files = sorted(cfg.paths.submissions.glob("*.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise KitError(f"{cfg.paths.submissions}: no submission files; run `kit blend` first")
    return files[-1]


def _is_synthetic(cfg: CompetitionConfig, file: Path) -> bool:
    """Provenance says so, or the data directory carries the SYNTHETIC marker of `kit synth`."""
    meta = file.with_suffix(".json")
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("synthetic"):
                return True
        except (json.JSONDecodeError, AttributeError):
            raise KitError(f"{meta}: provenance file is not valid JSON; rewrite it with `kit blend`") from None
    return (cfg.data.dir / SYNTHETIC_MARKER).exists()


def submit(
    cfg: CompetitionConfig,
    file: Path | None,
    message: str,
    competition: str | None = None,
    dry_run: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Validate `file` (default: newest submission) and send it with `message`; a dry run stops before sending."""
    console = console or Console()
    file = Path(file) if file is not None else newest_submission(cfg)
    if not message or not message.strip():
        raise KitError("--message is empty; say what this submission is (it shows on the leaderboard page)")
    slug = competition or cfg.kaggle.competition
    frame = check_submission_file(file, cfg)
    synthetic = _is_synthetic(cfg, file)
    summary = {"file": str(file), "rows": len(frame), "bytes": file.stat().st_size, "competition": slug, "message": message}
    if dry_run:
        console.print(
            f"dry run: would submit {file} ({len(frame)} rows, {summary['bytes']} bytes, validated against the sample) "
            f"to '{slug}' with message {message!r}" + (" — synthetic data, would be refused without --dry-run" if synthetic else ""),
            markup=False, soft_wrap=True,
        )
        return {**summary, "dry_run": True, "synthetic": synthetic}
    if synthetic:
        raise KitError(
            f"{file}: made from synthetic data ({cfg.data.dir}); the leaderboard would only count it against you. "
            "Point the config at the real data, or use --dry-run"
        )
    api = _kaggle_api()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            response = api.competition_submit(str(file), message, slug, quiet=True)
    except Exception as exc:
        raise _api_error(exc, f"submit to '{slug}'") from None
    text = getattr(response, "message", "") or ""
    ref = getattr(response, "ref", None)
    if text == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", object()):
        raise KitError(f"{file}: the upload to Kaggle failed; try again later")
    console.print(f"submitted {file} to '{slug}': {text or 'no message'}" + (f" (ref {ref})" if ref else ""), markup=False, soft_wrap=True)
    return {**summary, "dry_run": False, "response": text, "ref": ref}


def download(cfg: CompetitionConfig, competition: str | None = None, console: Console | None = None) -> Path:
    """Download and unpack the competition's files into data/<slug>/ and print the next step."""
    console = console or Console()
    slug = competition or cfg.kaggle.competition
    target = Path("data") / slug
    api = _kaggle_api()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.competition_download_files(slug, path=str(target), quiet=True)
    except Exception as exc:
        raise _api_error(exc, f"download '{slug}'") from None
    archives = sorted(target.glob("*.zip"))
    for archive in archives:
        _safe_extract(archive, target)
        archive.unlink()
    console.print(f"downloaded '{slug}' into {target}", markup=False, soft_wrap=True)
    console.print(
        f"next: point data.dir at {target} in your competition config (configs/chest-xray.toml for this competition), "
        f"then run `kit --config <that file> folds`",
        markup=False, soft_wrap=True,
    )
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
