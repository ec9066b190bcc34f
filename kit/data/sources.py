"""Data sources behind one small interface: ids, an (n, C) label array, class names, an image reader.

One module per layout, each registered in `LAYOUTS` under its `data.source` name: kit/data/kaggle_csv.py
("kaggle": a train CSV or class folders, image folders, sample_submission.csv) and kit/data/medmnist_npz.py
("medmnist": one npz); kit/data/common.py holds DataSource, Split and the image decoding they share.
`open_source` opens the layout named by `data.source` and checks everything it can without decoding an
image, so a bad dataset fails in a second with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kit.config import CompetitionConfig, relative_to_what
from kit.data.common import DataSource
from kit.data.kaggle_csv import kaggle_test_labels, open_kaggle
from kit.data.medmnist_npz import medmnist_test_labels, open_medmnist
from kit.errors import KitError
from kit.registry import Registry

@dataclass(frozen=True)
class DataLayout:
    """One way a competition's files are laid out: how to open it, where its test labels are, what to do when absent."""

    open: Callable[[CompetitionConfig, Path], DataSource]
    test_labels: Callable[[CompetitionConfig], pd.DataFrame | None]
    when_absent: str  # what to do when data.dir does not exist


LAYOUTS: Registry[DataLayout] = Registry("data layout")

LAYOUTS.add("kaggle", DataLayout(
    open_kaggle, kaggle_test_labels,
    "run `make synth` for the synthetic benchmark, `kit download` for the competition, or point data.dir at the folder you placed",
))
LAYOUTS.add("medmnist", DataLayout(
    open_medmnist, medmnist_test_labels, "place chestmnist.npz there, or run `kit synth {dir} --task multi-label` for a synthetic stand-in",
))


def open_source(cfg: CompetitionConfig) -> DataSource:
    """Open and check the configured data (no image decoding); KitError with one line on bad input."""
    data_dir = Path(cfg.data.dir)
    layout = LAYOUTS.get(cfg.data.source, where=f"{cfg.source_file}: data.source")
    if not data_dir.is_dir():
        how = layout.when_absent.format(dir=data_dir)
        raise KitError(f"{cfg.source_file}: data.dir = '{data_dir}' does not exist{relative_to_what(data_dir)}; {how}")
    return layout.open(cfg, data_dir)


def test_labels(cfg: CompetitionConfig) -> pd.DataFrame | None:
    """The test labels where they are known (synthetic solution.csv, MedMNIST test_labels): id + class columns."""
    return LAYOUTS.get(cfg.data.source).test_labels(cfg)


test_labels.__test__ = False  # a data function, not a pytest test
