"""One exception type for bad input: the CLI prints its message as one line and exits 2.

A message never carries a Kaggle credential: `str(KitError)` and `scrub_secrets` remove every form
(`credential_forms`) of every credential the kaggle package can read (`known_secrets`: the environment,
kaggle.json, the access-token files, the OAuth cache), and the CLI's consoles write through
`ScrubbedStream`, so what reaches the screen, the ledger, a report or a traceback is masked.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import quote

MASK = "***"


class KitError(Exception):
    """Bad input or a state the user must fix. The message names the file, row or key and what to do."""

    exit_code = 2

    def __str__(self) -> str:
        return scrub_secrets(super().__str__())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up on the way (temp files, locks) runs; exit code 143."""


SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")  # a KAGGLE_* variable whose name holds one of these holds a secret


def credential_forms(user: str | None, key: str | None, token: str | None = None) -> list[str]:
    """Every form in which these credentials can appear in text, longest first: the raw key or token (a
    Bearer header carries it as is), its base64 and URL-quoted forms, `user:key` and the base64 of that
    (a Basic header), with and without padding, standard and URL-safe."""
    forms: list[str] = []
    for secret in (key, token):
        if secret and len(secret) >= 8:  # shorter values are no real key, and masking them would mangle messages
            forms += [secret, quote(secret, safe=""), *_base64_forms(secret)]
    if user and key and len(key) >= 8:
        pair = f"{user}:{key}"
        forms += [pair, quote(pair, safe=""), *_base64_forms(pair)]
    return sorted(set(forms), key=len, reverse=True)


def _base64_forms(text: str) -> list[str]:
    standard = base64.b64encode(text.encode()).decode()
    urlsafe = base64.urlsafe_b64encode(text.encode()).decode()
    return [standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("=")]


def credential_sources() -> list[Path]:
    """Every file the kaggle package (and its SDK) may read a credential from, as the installed versions do:
    kaggle.json in the config folder (KAGGLE_CONFIG_DIR, else ~/.kaggle, else on Linux $XDG_CONFIG_HOME/kaggle
    or ~/.config/kaggle), the access-token files ~/.kaggle/access_token(.txt) (also looked for in the config
    folder), the OAuth cache ~/.kaggle/credentials.json, and the files KAGGLE_API_TOKEN or KAGGLE_API_V1_TOKEN
    name when they are paths."""
    env = os.environ
    try:
        home_kaggle = Path.home() / ".kaggle"
    except RuntimeError:  # no HOME
        home_kaggle = None
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    if home_kaggle is not None:
        xdg = Path(env.get("XDG_CONFIG_HOME") or home_kaggle.parent / ".config") / "kaggle"
        folders += [home_kaggle, xdg]
    files = [folder / name for folder in folders for name in ("kaggle.json", "access_token", "access_token.txt", "credentials.json")]
    for variable in ("KAGGLE_API_TOKEN", "KAGGLE_API_V1_TOKEN"):
        value = env.get(variable, "")
        if value and len(value) < 4096 and ("/" in value or "\\" in value or value.startswith("~")):
            files.append(Path(value).expanduser())
    return list(dict.fromkeys(files))


def known_secrets() -> list[str]:
    """The credential forms of every source the kaggle package reads: KAGGLE_USERNAME/KAGGLE_KEY,
    KAGGLE_API_TOKEN and every other KAGGLE_* variable named like a secret, and each file of
    `credential_sources` (kaggle.json's key and any other value named like a secret, an access-token file's token,
    the OAuth cache's tokens). Cached until the environment or one of those files changes."""
    env = os.environ
    secret_vars = tuple(sorted((k, v) for k, v in env.items() if k.startswith("KAGGLE_") and any(w in k for w in SECRET_WORDS)))
    files = credential_sources()
    stamp = (secret_vars, env.get("KAGGLE_USERNAME", ""), tuple((str(p), _stat(p)) for p in files))
    if _CACHE.get("stamp") != stamp:
        _CACHE["forms"] = _collect(dict(secret_vars), env.get("KAGGLE_USERNAME", ""), files)
        _CACHE["stamp"] = stamp
    return _CACHE["forms"]


_CACHE: dict = {}


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return (info.st_mtime_ns, info.st_size) if path.is_file() else None


def _collect(secret_vars: dict[str, str], env_user: str, files: list[Path]) -> list[str]:
    forms = credential_forms(env_user, secret_vars.get("KAGGLE_KEY"), None)
    for value in secret_vars.values():
        forms += credential_forms(env_user, value, None)
    for path in files:
        try:  # unreadable, too large, malformed: nothing from there
            if path.stat().st_size > 1 << 20:
                continue
            text = path.read_text(errors="replace").strip()
        except (OSError, ValueError):
            continue
        try:
            values = json.loads(text) if text.startswith("{") else None  # kaggle.json, credentials.json; a token file is plain text
        except ValueError:
            values = None
        if isinstance(values, dict):
            user = str(values.get("username") or env_user or "")
            for name, value in values.items():
                if isinstance(value, str) and any(w in name.upper() for w in SECRET_WORDS):
                    forms += credential_forms(user, value, None)
        elif text and "\n" not in text:
            forms += credential_forms(env_user, None, text)
    return sorted(set(forms), key=len, reverse=True)


def scrub_secrets(text: str, extra: list[str] | None = None) -> str:
    """`text` with every known credential form replaced by ***."""
    for secret in sorted(set(known_secrets() + (extra or [])), key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


class ScrubbedStream:
    """A text stream writing to `target()` (looked up at each write, e.g. the current sys.stdout) with every
    known credential form masked: what the CLI's consoles print can never show a key or token."""

    def __init__(self, target) -> None:
        self._target = target

    def write(self, text: str) -> int:
        return self._target().write(scrub_secrets(text))

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return bool(getattr(self._target(), "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._target(), "encoding", None) or "utf-8"
