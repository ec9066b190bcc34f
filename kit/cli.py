"""The `kit` command line: it only parses options and wires the stage functions of the package.

Each command loads the competition config once (`--config`, default configs/competition.toml)
and calls one stage. Bad input raises KitError, printed here as one line with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from kit.config import DEFAULT_CONFIG, CompetitionConfig, load_competition
from kit.errors import KitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Kaggle competition kit: folds, k-fold training, decision layer, blend, submit.",
)
console = Console()
err_console = Console(stderr=True)
_state: dict[str, Path] = {"config": DEFAULT_CONFIG}


@app.callback()
def _root(
    config: Annotated[Path, typer.Option("--config", "-c", envvar="KIT_CONFIG", help="Competition config (TOML).")] = DEFAULT_CONFIG,
) -> None:
    _state["config"] = config


def _cfg() -> CompetitionConfig:
    return load_competition(_state["config"])


def _not_built(stage: str) -> None:
    raise KitError(f"`kit {stage}` is not built yet")


# --- data (issue 2) ---------------------------------------------------------------------------
# SECTION: data


# --- training (issue 3) -----------------------------------------------------------------------
# SECTION: train


# --- decision layer (issue 4) -----------------------------------------------------------------
# SECTION: calibrate


# --- blend, submissions, kaggle (issue 5) -----------------------------------------------------
# SECTION: blend


def main() -> None:
    """Entry point: KitError becomes one line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except KitError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
