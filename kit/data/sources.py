"""Data sources behind one small interface: ids, an (n, C) label array, class names, an image reader.

One module per layout: kit/data/kaggle_csv.py (train.csv + image folders + sample_submission.csv)
and kit/data/medmnist_npz.py (one npz); kit/data/common.py holds DataSource, Split and the image
decoding they share. `open_source` picks the reader named by `data.source` and checks everything it
can without decoding an image, so a bad dataset fails in a second with one line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kit.config import CompetitionConfig, relative_to_what
from kit.data.common import DataSource
from kit.data.kaggle_csv import kaggle_test_labels, open_kaggle
from kit.data.medmnist_npz import medmnist_test_labels, open_medmnist
from kit.errors import KitError


def open_source(cfg: CompetitionConfig) -> DataSource:
    """Open and check the configured data (no image decoding); KitError with one line on bad input."""
    data_dir = Path(cfg.data.dir)
    if not data_dir.is_dir():
        how = (
            f"place chestmnist.npz there, or run `kit synth {data_dir} --task multi-label` for a synthetic stand-in"
            if cfg.data.source == "medmnist"
            else "run `make synth` for the synthetic benchmark, `kit download` for the competition, or point data.dir at the folder you placed"
        )
        raise KitError(f"{cfg.source_file}: data.dir = '{data_dir}' does not exist{relative_to_what(data_dir)}; {how}")
    if cfg.data.source == "medmnist":
        return open_medmnist(cfg, data_dir)
    return open_kaggle(cfg, data_dir)


def test_labels(cfg: CompetitionConfig) -> pd.DataFrame | None:
    """The test labels where they are known (synthetic solution.csv, MedMNIST test_labels): id + class columns."""
    if cfg.data.source == "medmnist":
        return medmnist_test_labels(cfg)
    return kaggle_test_labels(cfg)


test_labels.__test__ = False  # a data function, not a pytest test
