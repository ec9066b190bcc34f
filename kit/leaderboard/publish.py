"""`kit package --push`: the package's dataset created or versioned on Kaggle, then its notebook pushed.

Through the kaggle package's own public calls (`dataset_status`, `dataset_create_new`, `dataset_create_version`,
`kernels_push`), authenticated and time-boxed as every other call (kit.leaderboard.client). The dataset's folders
(wheels/, oof/, runs/) are uploaded as zip archives, which Kaggle unpacks. A new dataset is processed before a
notebook can mount it, so the push waits until Kaggle reports it "ready" before pushing the notebook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from kit.errors import KitError
from kit.leaderboard import client

READY_POLL_SECONDS = 5.0


def push(folder: Path, *, timeout: float = 900.0, console: Console | None = None, sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """Create or version the dataset of `folder` (a `kit package` output) and push its notebook; their URLs."""
    console = console or Console()
    dataset_dir, notebook_dir = Path(folder) / "dataset", Path(folder) / "notebook"
    for needed in (dataset_dir / "dataset-metadata.json", notebook_dir / "kernel-metadata.json"):
        if not needed.is_file():
            raise KitError(f"{needed}: not found; write the package with `kit package NAME` first")
    dataset = json.loads((dataset_dir / "dataset-metadata.json").read_text())["id"]
    kernel = json.loads((notebook_dir / "kernel-metadata.json").read_text())["id"]
    deadline = client.Deadline(timeout)
    with client.watchdog(deadline):
        api = client.connect(console, deadline)
        exists = _dataset_status(api, dataset) is not None
        with console.status(f"uploading the dataset {dataset} ({'new version' if exists else 'new dataset'})"):
            if exists:
                response = _call(lambda: api.dataset_create_version(str(dataset_dir), version_notes="kit package", quiet=True, dir_mode="zip"),
                                 api, f"version the dataset {dataset}")
            else:
                response = _call(lambda: api.dataset_create_new(str(dataset_dir), public=False, quiet=True, dir_mode="zip"),
                                 api, f"create the dataset {dataset}")
        _refused(response, f"the dataset {dataset}", api)
        with console.status(f"waiting for Kaggle to process {dataset}"):
            _wait_ready(api, dataset, deadline, sleep)
        saved = _call(lambda: api.kernels_push(str(notebook_dir)), api, f"push the notebook {kernel}")
        _refused(saved, f"the notebook {kernel}", api)
    urls = {"dataset": str(getattr(response, "url", "") or dataset), "kernel": str(getattr(saved, "url", "") or kernel),
            "kernel_version": str(getattr(saved, "version_number", "") or "")}
    console.print(f"pushed dataset {urls['dataset']} and notebook {urls['kernel']}"
                  + (f" (version {urls['kernel_version']})" if urls["kernel_version"] else "")
                  + f"; once it has run: `kit submit --kernel {kernel}"
                  + (f" --version {urls['kernel_version']}" if urls["kernel_version"] else "") + " -m MESSAGE`", soft_wrap=True, highlight=False)
    return urls


def _call(step: Callable, api, action: str):
    try:
        with client._captured():
            return step()
    except KitError:
        raise
    except client.CommandTimedOut:
        raise KitError(f"--timeout passed while trying to {action}; retry with more time") from None
    except ValueError as exc:  # the kaggle package's own checks of the metadata, before any request
        import json as _json

        if not isinstance(exc, _json.JSONDecodeError):
            raise KitError(f"cannot {action}: {client.clean_text(client.scrub(str(exc), api))}; fix the package's metadata JSON") from None
        raise client.api_error(exc, action, api) from None
    except Exception as exc:
        raise client.api_error(exc, action, api) from None


def _dataset_status(api, dataset: str) -> str | None:
    """The dataset's status ("ready", ...), or None when it does not exist yet (HTTP 404)."""
    import requests

    try:
        with client._captured():
            return str(api.dataset_status(dataset) or "")
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return None
        raise client.api_error(exc, f"look up the dataset {dataset}", api) from None
    except Exception as exc:
        raise client.api_error(exc, f"look up the dataset {dataset}", api) from None


def _refused(response, what: str, api) -> None:
    error = getattr(response, "error", "") or ""
    if error:
        raise KitError(f"Kaggle refused {what}: {client.clean_text(client.scrub(str(error), api))}")


def _wait_ready(api, dataset: str, deadline: client.Deadline, sleep: Callable[[float], None]) -> None:
    while True:
        status = (_dataset_status(api, dataset) or "").lower()
        if status == "ready":
            return
        if status in ("failed", "deleted"):
            raise KitError(f"Kaggle could not process the dataset {dataset} (status '{status}'); look at its page on kaggle.com")
        left = deadline.left()
        if left is not None and left <= READY_POLL_SECONDS:
            raise KitError(f"the dataset {dataset} is not ready within the --timeout (status {status or 'unknown'!r}); "
                           "push the notebook later with `kit package --push` again")
        sleep(READY_POLL_SECONDS)
