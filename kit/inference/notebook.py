"""The inference notebook of a package (`kit package`): install the kit offline, then `kit predict`.

Its code cells are plain Python (no shell magics), so the same cells run in a Kaggle notebook, in Jupyter and
under a bare interpreter (`code_cells` extracts them; tests/test_package.py runs them that way with the
network blocked). Every location can be set by an environment variable, for a local check before pushing:
KIT_PACKAGE (the dataset folder), KIT_DATA (the competition's data folder), KIT_WORK (where the submission goes).
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "kit-package.json"  # the package's own record; the notebook finds the dataset folder by it

_INSTALL = """\
# Install the kit and the wheels a Kaggle image lacks, offline: only this dataset's wheels/ folder is read.
import glob, json, os, subprocess, sys
from pathlib import Path

def find(name):  # a file at most three folders below /kaggle/input (a deep glob would walk every test image)
    return Path(next(p for depth in ("*", "*/*", "*/*/*") for p in sorted(glob.glob(f"/kaggle/input/{{depth}}/{{name}}"))))

PACKAGE = Path(os.environ.get("KIT_PACKAGE") or find("{marker}").parent)
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(PACKAGE / "wheels"), "kit"], check=True)
"""

_PREDICT = """\
# Run the trained ensemble on the competition's (hidden) test set and write the submission.
record = json.loads((PACKAGE / "{marker}").read_text())
WORK = Path(os.environ.get("KIT_WORK", "/kaggle/working"))
DATA = Path(os.environ.get("KIT_DATA") or find(record["data_marker"]).parent)
env = {{**os.environ, "KIT_PACKAGE": str(PACKAGE), "KIT_DATA": str(DATA), "KIT_WORK": str(WORK), "NO_ALBUMENTATIONS_UPDATE": "1"}}
subprocess.run([sys.executable, "-m", "kit", "--config", str(PACKAGE / "competition.toml"), "predict", "--name", record["blend"],
                "--output", str(WORK / "submission.csv"), "--max-minutes", str(record["max_minutes"])], check=True, env=env)
"""


def notebook(title: str) -> dict[str, Any]:
    """The notebook as nbformat 4 JSON: a title cell and the two code cells."""
    def code(text: str) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": text.splitlines(keepends=True)}

    return {
        "cells": [
            {"cell_type": "markdown", "metadata": {},
             "source": [f"# {title}\n", "\n", "Written by `kit package`: installs the kit offline and runs `kit predict` on the test set.\n"]},
            code(_INSTALL.format(marker=MARKER)),
            code(_PREDICT.format(marker=MARKER)),
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def code_cells(nb: dict[str, Any]) -> str:
    """The notebook's code, cell after cell, as one script."""
    return "\n".join("".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code")


def dumps(nb: dict[str, Any]) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
