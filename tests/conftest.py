"""Shared fixtures: tiny synthetic competitions (seeded, 32 px or 28 px) with their configs.

Each fixture is session-scoped: the dataset is generated once and shared, so tests must not
modify it (copy it first). Outputs (folds, oof, submissions, cache, runs) live in the temp dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.config import CompetitionConfig, load_competition

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TinyCompetition:
    root: Path  # temp dir: data/, folds/, oof/, submissions/, cache/, runs/ and competition.toml
    config_path: Path
    cfg: CompetitionConfig


def write_config(root: Path, data_lines: str, task: str, variants: list[str], n_folds: int = 3) -> Path:
    """A competition TOML whose paths all point inside `root` (models: the repo's configs/models)."""
    text = f"""task = "{task}"
seed = 0
variants = {variants!r}

[data]
{data_lines}

[folds]
n_folds = {n_folds}
seed = 0
path = "{root / 'folds' / 'folds.csv'}"

[calibrate]
trials = 20
storage = "sqlite:///{root / 'oof' / 'optuna.db'}"

[paths]
oof = "{root / 'oof'}"
submissions = "{root / 'submissions'}"
cache = "{root / 'cache'}"
models = "{REPO / 'configs' / 'models'}"
runs = "{root / 'runs'}"
"""
    path = root / "competition.toml"
    path.write_text(text.replace("'", '"'))
    return path


@pytest.fixture(scope="session")
def tiny_competition(tmp_path_factory) -> TinyCompetition:
    """Kaggle layout: 300 train / 100 test images at 32 px, 20 classes (each >= 5 in train), 3 folds."""
    from kit.data.synth import generate

    root = tmp_path_factory.mktemp("tiny_competition")
    generate(root / "data", n_train=300, n_test=100, size=32, seed=0, processes=1)
    data_lines = f"""source = "kaggle"
dir = "{root / 'data'}"
patient_column = "patient_id"
solution_csv = "solution.csv\""""
    path = write_config(root, data_lines, "multi-class", ["cnn_demo"])
    return TinyCompetition(root, path, load_competition(path))


@pytest.fixture(scope="session")
def tiny_chestmnist(tmp_path_factory) -> TinyCompetition:
    """ChestMNIST-format npz: 14 labels, multi-label, 28 px, 200 train / 50 val / 100 test, 3 folds."""
    from kit.data.synth import generate

    root = tmp_path_factory.mktemp("tiny_chestmnist")
    generate(root / "data", n_train=200, n_test=100, n_val=50, size=28, seed=0, task="multi-label", processes=1)
    data_lines = f"""source = "medmnist"
dir = "{root / 'data'}"
npz = "chestmnist.npz\""""
    path = write_config(root, data_lines, "multi-label", ["chestmnist_cnn"])
    return TinyCompetition(root, path, load_competition(path))


# A tiny, fast training recipe (EMA, staged fine-tuning, cosine warm-up, sampler, augmentation) on 16 px.
TINY_RECIPE = dict(
    backbone="chestmnist_cnn", pretrained=False, image_size=16, in_chans=1, cnn_width=8, epochs=2,
    batch_size=32, lr=3e-3, loss="ce", augment="mild", sampler_power=0.5, scheduler="cosine",
    warmup_epochs=1, ema_decay=0.9, freeze_epochs=1, unfreeze_lr_factor=0.5, early_stopping_patience=5,
    tta_hflip=True,
)


def _toml_line(key: str, value) -> str:
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}"
    if isinstance(value, str):
        return f'{key} = "{value}"'
    return f"{key} = {value!r}"


@pytest.fixture(scope="session")
def tiny_run(tiny_competition):
    """make(root, name="tiny", **recipe_keys) -> the tiny competition's config with its own models/, runs/ and
    oof/ under `root` and one variant `name` (TINY_RECIPE updated by the keys); the shared folds are made once."""
    from rich.console import Console

    from kit.data.folds import make_folds

    def make(root: Path, name: str = "tiny", **keys) -> CompetitionConfig:
        models = root / "models"
        models.mkdir(parents=True, exist_ok=True)
        (models / f"{name}.toml").write_text("\n".join(_toml_line(k, v) for k, v in {**TINY_RECIPE, **keys}.items()) + "\n")
        cfg = tiny_competition.cfg
        paths = cfg.paths.model_copy(update={"models": models, "runs": root / "runs", "oof": root / "oof"})
        cfg = cfg.model_copy(update={"paths": paths, "variants": [name]})
        if not Path(cfg.folds.path).is_file():
            make_folds(cfg, console=Console(quiet=True))
        return cfg

    return make
