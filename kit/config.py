"""Typed configs, validated once at load.

`configs/competition.toml` says where the data is, what the task and metric are and which
variants to train; `configs/models/<variant>.toml` holds one model variant's training recipe.
Any problem (unknown key, wrong type, missing file) becomes one `KitError` line that names the
file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kit.errors import KitError

DEFAULT_CONFIG = Path("configs/competition.toml")
Task = Literal["multi-class", "multi-label"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the competition's files are and how to read them."""

    source: Literal["kaggle", "medmnist"] = "kaggle"
    dir: Path = Path("data/synth")
    # Kaggle layout
    train_csv: str = "train.csv"
    test_csv: str = "sample_submission.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    label_column: str | None = None
    class_columns: list[str] | None = None
    patient_column: str | None = None
    train_images: str = "train/{id}.png"
    test_images: str = "test/{id}.png"
    solution_csv: str | None = None
    # MedMNIST layout: npz file inside dir
    npz: str = "chestmnist.npz"
    # what to do with a missing or unreadable image
    on_bad_image: Literal["stop", "skip"] = "stop"

    @model_validator(mode="after")
    def _one_label_format(self) -> DataConfig:
        if self.label_column is not None and self.class_columns is not None:
            raise ValueError("give label_column or class_columns, not both")
        return self


class MetricConfig(_Strict):
    """Per class: (a·TP − b·FP − w·FN) / N_c, averaged over classes."""

    a: float = 1.0
    b: float = 1.0
    w: float = 5.0


class FoldsConfig(_Strict):
    n_folds: int = Field(5, ge=2)
    seed: int = 42
    path: Path = Path("folds/folds.csv")


class CalibrateConfig(_Strict):
    trials: int = Field(300, ge=0)
    sampler: Literal["tpe", "cmaes"] = "tpe"
    offset_range: float = Field(3.0, gt=0)
    storage: str = "sqlite:///oof/optuna.db"
    threshold_method: Literal["youden", "f1", "cost"] = "cost"
    workers: int = Field(0, ge=0)  # processes for the offset searches; 0: one per core when trials >= 100


class PathsConfig(_Strict):
    oof: Path = Path("oof")
    submissions: Path = Path("submissions")
    cache: Path = Path(".cache/kit")
    models: Path = Path("configs/models")
    runs: Path = Path("runs")


class KaggleConfig(_Strict):
    competition: str = "26-t-1-dl-gen-ainppe-1"


class CompetitionConfig(_Strict):
    """The whole competition: data, task, metric, folds and the variants to train."""

    task: Task = "multi-class"
    seed: int = 42
    variants: list[str] = Field(default_factory=list)
    data: DataConfig = DataConfig()
    metric: MetricConfig = MetricConfig()
    folds: FoldsConfig = FoldsConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    paths: PathsConfig = PathsConfig()
    kaggle: KaggleConfig = KaggleConfig()
    source_file: Path | None = Field(None, exclude=True)


class ModelConfig(_Strict):
    """One variant's training recipe; defaults follow the published ConvNeXt report."""

    name: str = ""
    backbone: str = "convnext_tiny"
    pretrained: bool = True
    weights: str | None = None
    image_size: int = Field(224, ge=8)
    in_chans: int = Field(3, ge=1)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(8e-5, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    loss: Literal["ce", "focal", "bce"] = "ce"
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    pos_weight_clip: float = Field(10.0, gt=0)
    augment: Literal["none", "mild", "moderate", "strong"] = "moderate"
    sampler_power: float = Field(0.0, ge=0, le=1)
    scheduler: Literal["plateau", "cosine"] = "plateau"
    warmup_epochs: int = Field(0, ge=0)
    amp: bool | Literal["bf16", "fp16"] = True  # true: bf16 (fp16 + GradScaler where unsupported) on CUDA, float32 on CPU
    grad_clip: float = Field(1.0, ge=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    freeze_epochs: int = Field(0, ge=0)
    unfreeze_lr_factor: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.0, ge=0, lt=1)
    early_stopping_patience: int = Field(4, ge=1)
    tta_hflip: bool = True
    temperature: float = Field(1.0, gt=0)
    num_workers: int = Field(0, ge=0)
    channels_last: bool = True
    max_train_images: int | None = Field(None, ge=1)
    cnn_width: int = Field(32, ge=4)  # chestmnist_cnn: channels of the first block (doubling per block)
    compile: bool = False  # torch.compile the training step's model (first epoch pays the compile time)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    persistent_workers: bool = True  # with num_workers > 0: keep loader workers alive across epochs
    prefetch_factor: int = Field(2, ge=1)  # with num_workers > 0: batches each worker prepares ahead


def _first_error_line(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}'; check its spelling against the documented keys"
    if first["type"] == "missing":
        return f"{path}: missing key '{key}'"
    return f"{path}: key '{key}': {first['msg']} (got {first.get('input')!r})"


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise KitError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise KitError(f"{path}: not valid TOML: {exc}") from None


def load_competition(path: str | Path = DEFAULT_CONFIG) -> CompetitionConfig:
    """Read and validate the competition config; raise KitError naming file and key."""
    path = Path(path)
    raw = _read_toml(path)
    try:
        return CompetitionConfig.model_validate({**raw, "source_file": path})
    except ValidationError as exc:
        raise KitError(_first_error_line(path, exc)) from None


def load_model(name: str, cfg: CompetitionConfig) -> ModelConfig:
    """Read and validate `configs/models/<name>.toml` (the directory comes from paths.models)."""
    path = cfg.paths.models / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(available_variants(cfg)) or "none"
        raise KitError(f"{path}: no such variant '{name}' (known: {known})")
    raw = _read_toml(path)
    try:
        return ModelConfig.model_validate({"name": name, **raw})
    except ValidationError as exc:
        raise KitError(_first_error_line(path, exc)) from None


def available_variants(cfg: CompetitionConfig) -> list[str]:
    return sorted(p.stem for p in cfg.paths.models.glob("*.toml"))


def resolve_variants(names: list[str] | None, cfg: CompetitionConfig) -> list[str]:
    """`None` or ["all"] means the variants listed in the competition config."""
    if not names or names == ["all"]:
        if not cfg.variants:
            raise KitError(f"{cfg.source_file}: key 'variants' is empty; list the variants to train")
        return list(cfg.variants)
    return names
