"""Typed configs, validated once at load.

`configs/competition.toml` says where the data is, what the task and metric are and which
variants to train; `configs/models/<variant>.toml` holds one model variant's training recipe.
Any problem (unknown key, wrong type, missing file) becomes one `KitError` line that names the
file and the key.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from kit.errors import KitError
from kit.files import read_text
from kit.paths import DEFAULT_STORAGE, RESERVED_NAMES, RESERVED_SUFFIXES, SEED_SUFFIX

DEFAULT_CONFIG = Path("configs/competition.toml")
DEFAULT_MODELS = Path("configs/models")
Task = Literal["multi-class", "multi-label"]


# Names and paths are data (issue 18): one alphabet for every name that becomes part of a file name, checked
# before anything is read or written; `~` and `$VAR` in path keys expanded, an unset variable refused.
NAME_ALPHABET = "letters, digits, '.', '_' and '-'"
NAME_MAX_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9._-]+")
# RESERVED_NAMES and RESERVED_SUFFIXES (kit.paths): the names of files the kit writes itself, or a keyword


def name_problem(value: object) -> str | None:
    """Why `value` cannot be a name the kit makes file names of (None when it can)."""
    if not isinstance(value, str) or not value:
        return "a name must be non-empty text"
    if len(value) > NAME_MAX_LENGTH:
        return f"{len(value)} characters; a name has at most {NAME_MAX_LENGTH}"
    bad = sorted({c for c in value if not _NAME.fullmatch(c)})
    if bad:
        return f"holds {', '.join(repr(c) for c in bad[:5])}; a name may hold only {NAME_ALPHABET}"
    if ".." in value or value[0] in ".-":
        return "may not start with '.' or '-' nor hold '..'"
    lower = value.lower()
    if lower in RESERVED_NAMES:
        return f"reserved: the kit uses it for its own files or as a keyword ({', '.join(RESERVED_NAMES)})"
    if lower.endswith(RESERVED_SUFFIXES):
        return f"ends like a file the kit writes beside a variant's ({', '.join(RESERVED_SUFFIXES)})"
    return None


def check_name(value: object, what: str) -> str:
    """`value` when it is a valid name; else KitError naming `what` (e.g. "--name") and the rule."""
    problem = name_problem(value)
    if problem:
        raise KitError(f"{what} {value!r}: {problem}")
    return value  # type: ignore[return-value]


def _name_field(value: object) -> object:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def expand_path(value: object) -> object:
    """`~` and `$VAR`/`${VAR}` in a path key expanded; a variable that is not set is refused (a literal `$HOME/x`
    folder would otherwise be created in the working directory)."""
    if not isinstance(value, str | Path):
        return value
    text = os.path.expandvars(os.path.expanduser(str(value)))
    unset = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    if unset:
        raise ValueError(f"environment variable ${unset.group(1)} is not set; set it, or write the path out")
    if text.startswith("~"):
        raise ValueError(f"'{text.split('/')[0]}' is not a user of this machine; write the path out")
    return Path(text)


def relative_to_what(path: Path) -> str:
    """For messages about a missing path: a relative path is relative to the working directory, not the config."""
    return "" if Path(path).is_absolute() else f" (relative to the working directory {Path.cwd()}, not to the config file)"


Name = Annotated[str, BeforeValidator(_name_field)]
Slug = Annotated[str, BeforeValidator(lambda v: v if v == "" else _name_field(v))]  # "": no Kaggle competition (MedMNIST)
PathKey = Annotated[Path, BeforeValidator(expand_path)]


class _Strict(BaseModel):
    # allow_inf_nan=False: no float key of any config or recipe may be inf or nan (issue 18)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Where the competition's files are and how to read them."""

    source: str = "kaggle"  # a data layout of kit.data.sources.LAYOUTS: "kaggle" (CSV + image folders) or "medmnist" (npz)
    dir: PathKey = Path("data/synth")
    # Kaggle layout
    train_csv: str | None = "train.csv"  # None (left out) with class folders: `train_images` has a {label} folder
    test_csv: str = "sample_submission.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    train_id_column: str | None = None  # the train CSV's id column when its name differs from the sample's
    drop_test_ids: bool = False  # rows of the train CSV whose id is a test id (a CSV of every image, as NIH's) are left out of training
    repeated_ids: Literal["stop", "same_label"] = "stop"  # "same_label": rows repeating an id (one per box) read once when their labels agree
    label_column: str | None = None
    class_columns: list[str] | None = None
    patient_column: str | None = None
    # a pattern with {id}; a glob in its folder part or a list of patterns (images over several folders);
    # train_images may name class folders as {label} ("train/{label}/{id}.png": no train CSV)
    train_images: str | list[str] = "train/{id}.png"
    test_images: str | list[str] = "test/{id}.png"
    workers: int | None = Field(None, ge=1)  # processes decoding images into the cache (default: every core)
    solution_csv: str | None = None
    # label_column layouts (kit init writes these): a multi-label cell holds labels joined by label_separator;
    # none_label is the value that means "no class" (e.g. "No Finding"), read as a row of zeros; integer labels
    # are ordered numerically (0, 1, 2, ..., 10), names alphabetically, unless the sample's columns give the order
    label_separator: str = Field("|", min_length=1)
    none_label: str | None = None
    # MedMNIST layout: npz file inside dir
    npz: str = "chestmnist.npz"
    # what to do with a missing or unreadable image
    on_bad_image: Literal["stop", "skip"] = "stop"
    # an image with more pixels is refused in one line before it is decoded (a decompression bomb, a huge scan)
    max_image_pixels: int = Field(50_000_000, ge=1)

    @model_validator(mode="after")
    def _one_label_format(self) -> DataConfig:
        if self.label_column is not None and self.class_columns is not None:
            raise ValueError("give label_column or class_columns, not both")
        from kit.data.sources import LAYOUTS  # the readers register themselves; imported here, after kit.config

        if self.source not in LAYOUTS:
            raise ValueError(f"unknown data.source {self.source!r}; use one of {LAYOUTS.names()}")
        if any("{label}" in p for p in ([self.test_images] if isinstance(self.test_images, str) else self.test_images)):
            raise ValueError("test_images cannot hold {label}: test images have no class folders")
        folders = isinstance(self.train_images, str) and "{label}" in self.train_images
        if folders and self.train_csv is not None:
            raise ValueError("train_images names class folders ({label}): the labels come from them; remove train_csv")
        if not folders and self.train_csv is None:
            raise ValueError("train_csv is needed unless train_images names class folders ('train/{label}/{id}.png')")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_csv_with_class_folders(cls, values: Any) -> Any:
        """Class folders (`{label}` in train_images) hold the labels: train_csv's default does not apply."""
        if isinstance(values, dict) and "{label}" in str(values.get("train_images", "")) and "train_csv" not in values:
            values = {**values, "train_csv": None}
        return values


class MetricConfig(_Strict):
    """The leaderboard metric, by a name of the metric registry (kit.decision.metrics.METRICS). `linear`:
    per class (a·TP − b·FP − w·FN) / N_c, averaged over classes (the chest X-ray competition: a = b = 1,
    w = 5); `log_loss` takes optional per-class `weights`; the others take no parameter."""

    name: str = "linear"
    a: float = Field(1.0, ge=0, allow_inf_nan=False)
    b: float = Field(1.0, ge=0, allow_inf_nan=False)
    w: float = Field(5.0, ge=0, allow_inf_nan=False)
    weights: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = None  # log_loss: one per class

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from kit.decision.metrics import METRICS  # the registry imports nothing of the config at import time

        return METRICS.validate(name)

    @model_validator(mode="after")
    def _meaningful(self) -> MetricConfig:
        if self.weights is not None and self.name != "log_loss":
            raise ValueError(f"'weights' belong to the 'log_loss' metric, not '{self.name}'; remove them")
        if self.name != "linear":
            given = sorted({"a", "b", "w"} & self.model_fields_set)
            if given:
                raise ValueError(f"weights {given} belong to the 'linear' metric, not '{self.name}'; remove them")
        elif self.a + self.w <= 0:
            raise ValueError("a + w must be positive, or a correct prediction would be worth no more than a miss")
        return self


class FoldsConfig(_Strict):
    n_folds: int = Field(5, ge=2)
    seed: int = Field(42, ge=0, le=2**32 - 1)  # the fold splitter's seed (numpy takes 0 .. 2**32 - 1)
    path: PathKey = Path("folds/folds.csv")


class CalibrateConfig(_Strict):
    """The decision layer's search budget and where its Optuna studies are stored."""

    candidates: list[str] | None = None  # decision rules to compare (default: all for the task)
    offset_range: float = Field(2.0, gt=0, allow_inf_nan=False)  # per-class offsets searched in [-range, range] (log-probability units)
    grid_points: int = Field(17, ge=3)  # grid of the coordinate ascent per class
    sweeps: int = Field(3, ge=1)  # passes over the classes
    shrinkage: float = Field(20.0, ge=0, allow_inf_nan=False)  # a class with N fitting images may move range * N / (N + shrinkage)
    search: Literal["coordinate", "cmaes", "tpe"] = "coordinate"  # the offsets search (docs/decision.md: measured)
    search_trials: int = Field(300, ge=1)  # trials of the "cmaes" / "tpe" searches
    selection: Literal["one_se", "best"] = "one_se"  # the simplest candidate within one SE of the best, or the best
    storage: str = DEFAULT_STORAGE
    threshold_method: Literal["metric", "youden", "f1"] = "metric"  # multi-label fitted thresholds
    accept_stale_oof: bool = False  # calibrate/blend an OOF trained on data that has changed since (normally refused)


class BlendConfig(_Strict):
    """`kit blend`'s stacker (the weighting "stack", kit.ensemble.stack): its C grid, inner CV and class weighting."""

    stack_cs: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    stack_inner_folds: int = Field(3, ge=2, le=20)  # inner stratified K-fold that chooses C (log-loss)
    stack_max_inner_rows: int = Field(10_000, ge=100)  # the inner CV of C runs on at most this many fitting rows (fixed seed)
    stack_class_weight: Literal["none", "balanced"] = "none"  # "balanced": classes weigh equally in the fit


class PathsConfig(_Strict):
    oof: PathKey = Path("oof")
    submissions: PathKey = Path("submissions")
    cache: PathKey = Path(".cache/kit")
    models: PathKey = Path("configs/models")
    runs: PathKey = Path("runs")


class KaggleConfig(_Strict):
    competition: Slug = "26-t-1-dl-gen-ainppe-1"


class CompetitionConfig(_Strict):
    """The whole competition: data, task, metric, folds and the variants to train."""

    task: Task = "multi-class"
    seed: int = 42
    variants: list[Name] = Field(default_factory=list)
    data: DataConfig = Field(default_factory=DataConfig)  # built on first use: its validation asks the data layouts registry
    metric: MetricConfig = MetricConfig()
    folds: FoldsConfig = FoldsConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    blend: BlendConfig = BlendConfig()
    paths: PathsConfig = PathsConfig()
    kaggle: KaggleConfig = KaggleConfig()
    source_file: Path | None = Field(None, exclude=True)

    @field_validator("variants")
    @classmethod
    def _each_variant_once(cls, variants: list[str]) -> list[str]:
        repeated = sorted({v for v in variants if variants.count(v) > 1})
        if repeated:
            raise ValueError(f"variant {repeated[0]!r} is listed {variants.count(repeated[0])} times; list each variant once")
        return variants

    @model_validator(mode="after")
    def _metric_fits_task(self) -> CompetitionConfig:
        if self.task == "multi-label" and self.metric.name == "balanced_accuracy":
            raise ValueError("metric 'balanced_accuracy' (mean recall) is for multi-class; predicting every label would score 1")
        if self.task == "multi-label" and self.metric.name in ("accuracy", "quadratic_weighted_kappa"):
            raise ValueError(f"metric '{self.metric.name}' scores one class per row: it is for multi-class (ordinal grades for kappa)")
        if self.metric.weights is not None and self.data.class_columns and len(self.metric.weights) != len(self.data.class_columns):
            raise ValueError(f"metric.weights has {len(self.metric.weights)} values for {len(self.data.class_columns)} class columns")
        return self


class ModelConfig(_Strict):
    """One variant's training recipe; defaults follow the published ConvNeXt report."""

    name: Name = ""
    backbone: str = "convnext_tiny"
    pretrained: bool = True
    weights: str | None = None
    image_size: int = Field(224, ge=8)
    in_chans: int = Field(3, ge=1)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(8e-5, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    loss: str = "ce"  # a name registered in kit.training.losses.LOSSES (checked at load)
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
    source_file: Path | None = Field(None, exclude=True)  # the TOML it was read from (messages name it)
    # long-tail recipes (docs/training.md names the paper of each)
    logit_adjust_tau: float = Field(1.0, ge=0)  # loss = "logit_adjusted": CE on logit + τ·log(class frequency)
    ldam_max_margin: float = Field(0.5, gt=0)  # loss = "ldam": margin of the rarest class (∝ n_c^(−1/4))
    ldam_scale: float = Field(30.0, gt=0)  # loss = "ldam": the cosine head's logit scale s
    class_weights: Literal["none", "effective_number"] = "none"  # per-class loss weights (Cui et al. 2019)
    class_weight_beta: float = Field(0.9999, ge=0, lt=1)  # effective number (1 − β^n_c)/(1 − β)
    class_weights_from_epoch: int = Field(0, ge=0)  # deferred re-weighting (DRW): weights from this epoch on
    crt_epochs: int = Field(0, ge=0)  # > 0: classifier re-training (cRT) of the head after training
    crt_lr: float = Field(1e-3, gt=0)
    crt_sampler_power: float = Field(1.0, ge=0, le=1)  # cRT's class-balanced sampling
    tau_norm: float = Field(0.0, ge=0)  # > 0: τ-normalised head weights w_c/‖w_c‖^τ after training
    allow_double_rebalancing: bool = False  # sampler_power > 0 together with a re-balancing loss
    # training options of timm's train.py
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    mixup_prob: float = Field(1.0, ge=0, le=1)  # probability that a batch is mixed
    mixup_switch_prob: float = Field(0.5, ge=0, le=1)  # with both alphas: probability of cutmix over mixup
    drop_path_rate: float = Field(0.0, ge=0, lt=1)  # stochastic depth (timm backbones)
    grad_accum_steps: int = Field(1, ge=1)  # optimizer step every N batches (effective batch N·batch_size)
    layer_decay: float | None = Field(None, gt=0, le=1)  # layer-wise lr decay: lr·decay^(depth from the head)
    randaugment_magnitude: int = Field(0, ge=0, le=30)  # 0 off; torchvision RandAugment magnitude (9 is usual)
    randaugment_ops: int = Field(2, ge=1, le=14)  # RandAugment ops per image
    # GPU-ready training (docs/scale-out.md)
    compile: bool = False  # torch.compile the training step's model (first epoch pays the compile time)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    persistent_workers: bool = True  # with num_workers > 0: keep loader workers alive across epochs
    prefetch_factor: int = Field(2, ge=1)  # with num_workers > 0: batches each worker prepares ahead
    # second round and scale TTA (docs/training.md, "Pseudo-labels" and "Test-time augmentation")
    pseudo_label_from: Name | None = None  # first-round variant whose test_logits[k] soft-label the test images in fold k
    pseudo_label_temperature: float = Field(1.0, gt=0, allow_inf_nan=False)  # soft labels softmax(logits / T)
    pseudo_label_min_confidence: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)  # drop test images less sure than this
    tta_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)  # held-out/test logits averaged over rescaled images
    # seed ensembles (docs/training.md): each seed is its own job; the OOF is the seeds' mean
    seeds: list[StrictInt] | None = None

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, name: str) -> str:
        from kit.training.losses import LOSSES  # the loss registry (imports torch): asked only when a variant is read

        return LOSSES.validate(name)

    @model_validator(mode="after")
    def _recipe_combinations(self) -> ModelConfig:
        problem = recipe_conflict(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _second_round_and_tta(self) -> ModelConfig:
        bad_scales = [s for s in self.tta_scales if not (math.isfinite(s) and 0.5 < s <= 2.0)]
        if bad_scales:
            raise ValueError(f"key 'tta_scales': {bad_scales[0]} is not a rescaling factor in (0.5, 2]")
        if self.pseudo_label_from is None:
            unused = [k for k in ("pseudo_label_temperature", "pseudo_label_min_confidence") if k in self.model_fields_set]
            if unused:
                raise ValueError(f"key '{unused[0]}': it applies to pseudo-labels, but pseudo_label_from is not set")
        elif self.pseudo_label_from in ("", self.name):
            raise ValueError(f"key 'pseudo_label_from' = {self.pseudo_label_from!r}: name a first-round variant, not this one")
        return self


def _loss(m: ModelConfig):
    """The variant's registered loss (`kit.training.losses.LOSSES`): what it trains and how it re-balances."""
    from kit.training.losses import loss_of

    return loss_of(m)


def _kit_backbone(name: str):
    """The kit's own backbone `name` from its registry (`kit.models.registry.BACKBONES`), None for a timm name."""
    from kit.models.registry import kit_backbone

    return kit_backbone(name)


def recipe_conflict(m: ModelConfig) -> str | None:
    """Why a variant's keys do not go together (None when they do); checked once, at load."""
    if m.seeds is not None:
        seeds_problem = seeds_conflict(m.seeds)
        if seeds_problem:
            return seeds_problem
    rebalancing_loss = _loss(m).rebalancing or m.class_weights != "none"
    if m.sampler_power > 0 and rebalancing_loss and not m.allow_double_rebalancing:
        key, value = ("class_weights", m.class_weights) if m.class_weights != "none" else ("loss", m.loss)
        return (
            f"keys 'sampler_power' and '{key}': sampler_power = {m.sampler_power} re-weights the batches and {key} = \"{value}\" "
            "re-balances the loss, "
            "and the two compound (a re-weighting sampler with a class-weighted loss scored -117 in a published run); "
            "set sampler_power = 0, or allow_double_rebalancing = true to train it anyway"
        )
    if m.class_weights != "none" and _loss(m).label_weights:
        return f"key 'class_weights': loss = \"{m.loss}\" already weights each label by pos_weight; use class_weights = \"none\""
    if m.crt_epochs > 0 and m.tau_norm > 0:
        return "keys 'crt_epochs' and 'tau_norm': both re-balance the classifier after training (Kang et al. 2020); use one"
    if m.tau_norm > 0 and _loss(m).cosine_head:
        return "key 'tau_norm': the LDAM head is already norm-free (cosine); τ-normalisation would change nothing"
    if (m.mixup_alpha > 0 or m.cutmix_alpha > 0) and m.batch_size % 2:
        return f"key 'batch_size' = {m.batch_size}: mixup/cutmix pairs each image with another of its batch; use an even batch_size"
    own = _kit_backbone(m.backbone) if m.drop_path_rate > 0 or m.layer_decay is not None else None
    if m.drop_path_rate > 0 and own is not None and not own.drop_path:
        return f"key 'drop_path_rate': {m.backbone} has no residual blocks to drop; set drop_path_rate = 0 or use a timm backbone"
    if m.layer_decay is not None and own is not None and not own.layer_decay:
        return f"key 'layer_decay': {m.backbone} has no layer groups for timm's layer-wise decay; remove the key or use a timm backbone"
    if m.class_weights == "none" and m.class_weights_from_epoch > 0:
        return "key 'class_weights_from_epoch': it defers class weights, but class_weights = \"none\""
    if m.class_weights_from_epoch >= m.epochs:
        return f"key 'class_weights_from_epoch' = {m.class_weights_from_epoch}: epochs = {m.epochs}, so the weights would never apply"
    return None


# --- seed ensembles: the seed list's checks and the per-seed OOF name (kept in one block) ---
# SEED_SUFFIX (kit.paths): oof/<variant>.seed<s>.npz; a variant name may not end like this


def seeds_conflict(seeds: list[int]) -> str | None:
    """Why a `seeds` list is unusable (None when it is fine): it must name at least one seed, each once."""
    if not seeds:
        return "key 'seeds': the list is empty; give at least one seed (e.g. seeds = [0, 1, 2]) or remove the key"
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        return f"key 'seeds': seed {repeated[0]} is listed twice; each seed trains one job, list each once"
    return None


def recipe_task_conflict(m: ModelConfig, task: str) -> str | None:
    """Why a variant's keys do not fit the competition's task (None when they do): the task is known only with
    the competition's data, so `kit train` checks this before it builds any job (and a job again when it builds its loss)."""
    if task not in _loss(m).tasks:  # the loss registry says which tasks each loss trains
        from kit.training.losses import LOSSES

        usable = [f'"{n}"' for n in LOSSES.names() if task in LOSSES.get(n).tasks]
        if task == "multi-class":
            return (f"key 'loss': \"{m.loss}\" is a per-label sigmoid loss for multi-label; its logits are not softmax logits, so "
                    f"calibrate and blend would refuse the OOF; use {usable[0]} (or {', '.join(usable[1:])})")
        return f"key 'loss': \"{m.loss}\" is a softmax loss for multi-class; use {' or '.join(usable)} for multi-label"
    if task != "multi-label":
        return None
    if m.tau_norm > 0:
        return "key 'tau_norm': τ-normalisation balances a softmax head; the task is multi-label"
    if m.class_weights != "none":
        return "key 'class_weights': multi-label losses weight labels by pos_weight; the task is multi-label"
    return None


def _first_error_line(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    if not first["loc"]:  # a check across keys: its message names them
        return f"{path}: {first['msg'].removeprefix('Value error, ')}"
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}'; check its spelling against the documented keys"
    if first["type"] == "missing":
        return f"{path}: missing key '{key}'"
    return f"{path}: key '{key}': {first['msg']} (got {first.get('input')!r})"


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise KitError(f"{path}: config file not found{relative_to_what(path)}")
    try:
        return tomllib.loads(read_text(path, "check the path"))
    except tomllib.TOMLDecodeError as exc:
        raise KitError(f"{path}: not valid TOML: {exc}") from None


def load_competition(path: str | Path = DEFAULT_CONFIG) -> CompetitionConfig:
    """Read and validate the competition config; raise KitError naming file and key."""
    path = Path(path)
    raw = _submissions_per_config(_read_toml(path), path)
    try:
        cfg = CompetitionConfig.model_validate({**raw, "source_file": path})
    except ValidationError as exc:
        raise KitError(_first_error_line(path, exc)) from None
    from kit.owned import check_config_paths

    check_config_paths(cfg)  # no output path of the config is a folder or a file another stage owns
    return cfg


def _submissions_per_config(raw: dict, path: Path) -> dict:
    """One submissions folder (and ledger) per competition: a config other than the default one
    (configs/competition.toml) that does not set `paths.submissions` writes to submissions/<its stem>/,
    so two competitions' files, ledgers and `kit submit`'s newest file never mix."""
    paths = raw.get("paths", {})
    if path.stem == DEFAULT_CONFIG.stem or not isinstance(paths, dict) or "submissions" in paths:
        return raw
    return {**raw, "paths": {**paths, "submissions": f"submissions/{path.stem}"}}


def load_model(name: str, cfg: CompetitionConfig) -> ModelConfig:
    """Read and validate `configs/models/<name>.toml` (the directory comes from paths.models)."""
    check_name(name, "variant")
    path = cfg.paths.models / f"{name}.toml"
    if SEED_SUFFIX.search(name):
        raise KitError(f"{path}: variant name '{name}' ends like a per-seed OOF file (oof/<variant>.seed<N>.npz); rename the file")
    if not path.is_file():
        known = ", ".join(available_variants(cfg)) or "none"
        raise KitError(f"{path}: no such variant '{name}' (known: {known}){relative_to_what(path)}")
    raw = _read_toml(path)
    if "name" in raw and raw["name"] != name:
        raise KitError(
            f"{path}: key 'name' = {raw['name']!r} differs from the file's name {name!r}; a variant is named by its file: "
            "remove the key (or rename the file), so that two files never write one variant's runs and OOF"
        )
    try:
        mcfg = ModelConfig.model_validate({**raw, "name": name, "source_file": path})
    except ValidationError as exc:
        raise KitError(_first_error_line(path, exc)) from None
    problem = input_size_problem(mcfg)
    if problem:
        raise KitError(f"{path}: {problem}")
    return mcfg


def input_size_problem(mcfg: ModelConfig) -> str | None:
    """Why the backbone cannot take `image_size` images (None when it can, or when timm does not know it):
    a fixed-size transformer (ViT, Swin) fails at its first batch otherwise, after the data is cached."""
    import timm

    if not timm.is_model(mcfg.backbone):
        return None
    pretrained = timm.models.get_pretrained_cfg(mcfg.backbone)
    if pretrained is None or not pretrained.input_size:
        return None
    size = int(pretrained.input_size[-1])
    if pretrained.fixed_input_size and mcfg.image_size != size:
        return (f"key 'image_size' = {mcfg.image_size}: backbone '{mcfg.backbone}' takes only {size} px images (a fixed input size); "
                f"set image_size = {size}, or choose a convolutional backbone")
    smallest = int(pretrained.min_input_size[-1]) if pretrained.min_input_size else None
    if smallest and mcfg.image_size < smallest:
        return f"key 'image_size' = {mcfg.image_size}: backbone '{mcfg.backbone}' needs images of at least {smallest} px; set image_size >= {smallest}"
    return None


def model_file(mcfg: ModelConfig) -> Path:
    """The TOML a variant was read from, for messages (the default place for a config built in code)."""
    return mcfg.source_file or DEFAULT_MODELS / f"{mcfg.name}.toml"


def available_variants(cfg: CompetitionConfig) -> list[str]:
    return sorted(p.stem for p in cfg.paths.models.glob("*.toml"))


def resolve_variants(names: list[str] | None, cfg: CompetitionConfig) -> list[str]:
    """`None` or ["all"] means the variants listed in the competition config."""
    if not names or names == ["all"]:
        if not cfg.variants:
            raise KitError(f"{cfg.source_file}: key 'variants' is empty; list the variants to train")
        return list(cfg.variants)
    for name in names:
        check_name(name, "variant")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise KitError(f"variant {repeated[0]!r} is given {names.count(repeated[0])} times; give each variant once")
    return names


def with_overrides(mcfg: ModelConfig, overrides: dict | None, origin: str = "command line") -> ModelConfig:
    """The variant with some keys replaced (e.g. `kit train --epochs 1`), validated again as a whole, so the
    new values enter the job identity like any key of the TOML. Bad values: one line naming the key."""
    if not overrides:
        return mcfg
    try:
        # only the keys the TOML set, so checks that look at which keys were given see the same ones
        return ModelConfig.model_validate({**mcfg.model_dump(exclude_unset=True), **overrides, "source_file": mcfg.source_file})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        where = f"--{key.replace('_', '-')} " if key else ""
        raise KitError(f"{origin}: {where}{first['msg'].removeprefix('Value error, ')} (variant '{mcfg.name}', {model_file(mcfg)})") from None

