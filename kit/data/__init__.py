"""Data: layout readers (Kaggle CSV, MedMNIST npz), the synthetic benchmark, the image cache and folds."""

from kit.data.cache import CachedImages, cached_images
from kit.data.folds import load_fold_assignment, make_folds
from kit.data.common import DataSource, Split
from kit.data.medmnist_npz import CHESTMNIST_CLASSES
from kit.data.sources import open_source, test_labels

__all__ = ["CHESTMNIST_CLASSES", "CachedImages", "DataSource", "Split", "cached_images", "load_fold_assignment", "make_folds", "open_source", "test_labels"]
