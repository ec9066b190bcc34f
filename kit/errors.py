"""One exception type for bad input: the CLI prints its message as one line and exits 2.

A message never carries a Kaggle credential: `str(KitError)` and `scrub_secrets` remove every form
of the key and token the environment or kaggle.json holds (the raw value, `user:key`, the base64 of
`user:key` that a Basic Authorization header carries, a bearer token).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

MASK = "***"


class KitError(Exception):
    """Bad input or a state the user must fix. The message names the file, row or key and what to do."""

    exit_code = 2

    def __str__(self) -> str:
        return scrub_secrets(super().__str__())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up on the way (temp files, locks) runs; exit code 143."""


def credential_forms(user: str | None, key: str | None, token: str | None = None) -> list[str]:
    """Every form in which these credentials can appear in text, longest first."""
    forms: list[str] = []
    for secret in (key, token):
        if secret and len(secret) >= 8:  # shorter values are no real key, and masking them would mangle messages
            forms.append(secret)
    if user and key:
        pair = f"{user}:{key}"
        encoded = base64.b64encode(pair.encode()).decode()
        forms += [pair, encoded, encoded.rstrip("="), base64.urlsafe_b64encode(pair.encode()).decode().rstrip("=")]
    return sorted(set(forms), key=len, reverse=True)


def known_secrets() -> list[str]:
    """The credential forms of KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN and the user's kaggle.json."""
    env = os.environ
    forms = credential_forms(env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY"), env.get("KAGGLE_API_TOKEN"))
    try:  # no HOME, an unreadable or malformed file: no secrets from there
        config = Path(env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
        values = json.loads(config.read_text())
    except (OSError, ValueError, RuntimeError):
        values = None
    if isinstance(values, dict):
        forms += credential_forms(str(values.get("username") or ""), str(values.get("key") or ""), None)
    return sorted(set(forms), key=len, reverse=True)


def scrub_secrets(text: str, extra: list[str] | None = None) -> str:
    """`text` with every known credential form replaced by ***."""
    for secret in sorted(set(known_secrets() + (extra or [])), key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text
