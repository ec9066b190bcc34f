"""Shared fixtures: tiny synthetic competitions (seeded, 32 px or 28 px) with their configs.

Each fixture is session-scoped: the dataset is generated once and shared, so tests must not
modify it (copy it first). Outputs (folds, oof, submissions, cache, runs) live in the temp dir.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config import CalibrateConfig, CompetitionConfig, DataConfig, FoldsConfig, PathsConfig, load_competition

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


def stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold per row, each class dealt round-robin over k folds after a shuffle."""
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def simulated_oof(n: int = 600, k: int = 3, seed: int = 0, signal: float = 1.5, prior=(0.7, 0.2, 0.07, 0.03)):
    """(logits, labels, fold, q): labels drawn from `prior`, logits of a model trained with an
    inverse-frequency sampler (calibrated under the uniform prior q)."""
    rng = np.random.default_rng(seed)
    prior = np.asarray(prior)
    c = len(prior)
    counts = np.maximum(np.round(prior * n).astype(int), k)
    y = rng.permutation(np.repeat(np.arange(c), counts))
    z = rng.normal(size=(len(y), c))
    z[np.arange(len(y)), y] += signal
    q = np.full(c, 1 / c)
    logits = signal * z + np.log(q)
    return logits.astype(np.float32), np.eye(c, dtype=np.uint8)[y], stratified_folds(y, k, rng), q


@pytest.fixture()
def make_oof():
    """The `simulated_oof` helper, for tests that need labelled logits of a known sampler-trained model."""
    return simulated_oof


@pytest.fixture()
def make_folds_for():
    """The `stratified_folds` helper."""
    return stratified_folds


def sigint_to_default() -> None:
    """`preexec_fn` of the Ctrl-C tests: a runner started in the background (`nohup ... &`) passes SIGINT
    on ignored, and a child that inherits that never sees the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_kit(args: list, capsys) -> tuple[int, str, str]:
    """Run the CLI entry point in-process (as the console script does): exit code, stdout, stderr."""
    from kit.cli import main

    argv = sys.argv
    sys.argv = ["kit", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2 and exactly one line on stderr, holding every needle, no traceback."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def kaggle_copy(tiny_competition: TinyCompetition, tmp_path: Path, **data_keys) -> Path:
    """A private copy of the tiny Kaggle-layout dataset (tests may break it) and its config path."""
    data = tmp_path / "data"
    shutil.copytree(tiny_competition.root / "data", data)
    lines = ['source = "kaggle"', f'dir = "{data}"', 'patient_column = "patient_id"', 'solution_csv = "solution.csv"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in data_keys.items()]
    return write_config(tmp_path, "\n".join(lines), "multi-class", ["cnn_demo"])


def edit_csv(path: Path, edit) -> None:
    """Edit a CSV as a DataFrame; like the kit, only empty fields are missing ("NA" stays a string)."""
    frame = pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])
    edited = edit(frame)
    (frame if edited is None else edited).to_csv(path, index=False)


def _under(folder: Path, path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder.resolve())


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(folder)` makes a folder unwritable: chmod 555 where that stops writes; as root, where it
    does not, new files there are refused at tempfile.mkstemp, the first call of every kit writer."""
    changed: list[Path] = []

    def apply(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        changed.append(folder)
        if os.access(folder, os.W_OK):  # root ignores permission bits
            real = tempfile.mkstemp

            def mkstemp(suffix=None, prefix=None, dir=None, text=False):
                if _under(folder, dir):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
                return real(suffix=suffix, prefix=prefix, dir=dir, text=text)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    yield apply
    for folder in changed:
        folder.chmod(0o755)


@pytest.fixture
def disk_full(monkeypatch):
    """`disk_full(folder)`: every file the kit writes under `folder` fails with the kernel's own ENOSPC
    (its temp file is opened on /dev/full), without filling a disk."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")

    def apply(folder: Path) -> None:
        real = tempfile.mkstemp

        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            fd, name = real(suffix=suffix, prefix=prefix, dir=dir, text=text)
            if _under(folder, dir):
                os.close(fd)
                fd = os.open("/dev/full", os.O_WRONLY)
            return fd, name

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    return apply


CLASSES = ["A", "B", "C"]


def make_layout(
    root: Path,
    train_labels: list[str],
    test_ids: list[str],
    classes: list[str] = CLASSES,
    sample: str = "one-hot",
    sample_value: str = "0",
    variants: list[str] | None = None,
) -> CompetitionConfig:
    """A tiny Kaggle-layout competition (empty image files: the source only stats them) and its config."""
    data = root / "data"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir(parents=True)
    train_ids = [f"tr{i:03d}" for i in range(len(train_labels))]
    if sample == "one-hot":
        train = pd.DataFrame({"id": train_ids, **{c: [int(lab == c) for lab in train_labels] for c in classes}})
        sample_df = pd.DataFrame({"id": test_ids, **{c: [sample_value] * len(test_ids) for c in classes}})
    else:
        train = pd.DataFrame({"id": train_ids, "label": train_labels})
        sample_df = pd.DataFrame({"id": test_ids, "label": [classes[0]] * len(test_ids)})
    train.to_csv(data / "train.csv", index=False)
    sample_df.to_csv(data / "sample_submission.csv", index=False)
    for i in train_ids:
        (data / "train" / f"{i}.png").touch()
    for i in test_ids:
        (data / "test" / f"{i}.png").touch()
    return CompetitionConfig(
        task="multi-class",
        variants=variants or [],
        data=DataConfig(dir=data, label_column="label" if sample == "label" else None, patient_column=None),
        folds=FoldsConfig(n_folds=5, path=root / "folds.csv"),
        calibrate=CalibrateConfig(storage=f"sqlite:///{root / 'optuna.db'}"),
        paths=PathsConfig(oof=root / "oof", submissions=root / "submissions", cache=root / "cache", models=root / "models", runs=root / "runs"),
    )


def one_hot(labels: list[str], classes: list[str] = CLASSES) -> np.ndarray:
    return np.eye(len(classes), dtype=np.uint8)[[classes.index(x) for x in labels]]


def layout_toml(root: Path, cfg: CompetitionConfig, competition: str = "fake-comp") -> Path:
    """A competition TOML for a `make_layout` competition, so the CLI can run on it."""
    path = root / "competition.toml"
    path.write_text(
        f'task = "multi-class"\nvariants = {cfg.variants!r}\n[data]\ndir = "{cfg.data.dir}"\n'
        f'[folds]\nn_folds = {cfg.folds.n_folds}\npath = "{cfg.folds.path}"\n[calibrate]\nstorage = "{cfg.calibrate.storage}"\n'
        f'[paths]\nsubmissions = "{cfg.paths.submissions}"\noof = "{cfg.paths.oof}"\n'
        f'[kaggle]\ncompetition = "{competition}"\n'.replace("'", '"')
    )
    return path


# A tiny, fast recipe that still exercises EMA, staged fine-tuning, cosine warm-up, sampler and augmentation.
TINY_VARIANT = dict(
    backbone="chestmnist_cnn", pretrained=False, image_size=16, in_chans=1, cnn_width=8, epochs=2,
    batch_size=32, lr=3e-3, loss="ce", augment="mild", sampler_power=0.5, scheduler="cosine",
    warmup_epochs=1, ema_decay=0.9, freeze_epochs=1, unfreeze_lr_factor=0.5, early_stopping_patience=5,
    tta_hflip=True,
)


def model_toml(values: dict) -> str:
    """A variant's TOML from a dict of keys (bool, str, number or None-free values)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(v)

    return "\n".join(f"{k} = {fmt(v)}" for k, v in values.items()) + "\n"


def _variant_run(tiny: TinyCompetition, tmp_path: Path, name: str = "tiny", **model_keys) -> CompetitionConfig:
    from rich.console import Console

    from kit.data.folds import make_folds

    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.toml").write_text(model_toml({**TINY_VARIANT, **model_keys}))
    cfg = tiny.cfg
    paths = cfg.paths.model_copy(update={"models": models, "runs": tmp_path / "runs", "oof": tmp_path / "oof"})
    cfg = cfg.model_copy(update={"paths": paths, "variants": [name]})
    if not Path(cfg.folds.path).is_file():
        make_folds(cfg, console=Console(quiet=True))
    return cfg


@pytest.fixture(scope="session")
def variant_run():
    """`variant_run(tiny, tmp_path, name="tiny", **model_keys) -> cfg`: a copy of a tiny competition's config
    whose models/runs/oof live in tmp_path, with the variant `name` (TINY_VARIANT updated by model_keys)."""
    return _variant_run


@pytest.fixture(scope="session")
def tiny_run(tiny_competition):
    """`tiny_run(root, name="tiny", **model_keys) -> cfg`: `variant_run` on the tiny competition."""
    return partial(_variant_run, tiny_competition)


@dataclass(frozen=True)
class TinyGrid:
    root: Path  # data/ (a copy), models/tiny.toml, folds/, runs/, oof/, cache/ and competition.toml, all inside
    config_path: Path
    cfg: CompetitionConfig


@pytest.fixture(scope="session")
def tiny_grid(tiny_competition, tmp_path_factory) -> TinyGrid:
    """The tiny variant (TINY_VARIANT) trained once per session on every fold of the tiny competition, one CPU
    thread per job (as the Ray executor runs a job, so its OOF bytes are the reference the executors compare to).

    Several suites check a finished grid (OOF contract, resume, executors, reliability at the command line);
    training it once for all of them is most of what keeps the suite in minutes. The root holds everything
    (its own copy of the data, copy2: the same mtimes, so the same image fingerprints), so a test that changes
    anything copies it first (`clone_grid`); tests only read it in place.
    """
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _train_tiny_grid(tiny_competition, tmp_path_factory.mktemp("tiny_grid"))
    # under pytest-xdist every worker has its own session: the first to get here trains, the others wait and read
    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above each worker's own
    root, done = shared / "tiny_grid", shared / "tiny_grid.done"
    with FileLock(shared / "tiny_grid.lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died half-way
            root.mkdir()
            _train_tiny_grid(tiny_competition, root)
            done.touch()
    config = root / "competition.toml"
    return TinyGrid(root, config, load_competition(config))


def _train_tiny_grid(tiny_competition: TinyCompetition, root: Path) -> TinyGrid:
    from rich.console import Console

    from kit.data.folds import make_folds
    from kit.stages.train import train

    shutil.copytree(tiny_competition.root / "data", root / "data")
    (root / "models").mkdir()
    (root / "models" / "tiny.toml").write_text(model_toml(TINY_VARIANT))
    data_lines = f'source = "kaggle"\ndir = "{root / "data"}"\npatient_column = "patient_id"\nsolution_csv = "solution.csv"'
    config = write_config(root, data_lines, "multi-class", ["tiny"])
    config.write_text(config.read_text().replace(str(REPO / "configs" / "models"), str(root / "models")))
    cfg = load_competition(config)
    make_folds(cfg, console=Console(quiet=True))
    train(cfg, ["tiny"], None, resume=False, console=Console(quiet=True), cpus_per_job=1)
    return TinyGrid(root, config, cfg)


def clone_grid(grid: Path, tmp_path: Path) -> Path:
    """A private copy of a self-contained trained root such as `tiny_grid.root`, without its image cache; copy2
    keeps mtimes, so the same images keep their fingerprint. Its competition.toml points inside the copy."""
    root = tmp_path / "w"
    shutil.copytree(grid, root, ignore=lambda folder, names: ["cache"] if Path(folder) == grid else [])
    config = root / "competition.toml"
    config.write_text(config.read_text().replace(str(grid), str(root)))
    return root


def dashboard_studies(config: Path, cwd: Path) -> tuple[set[str], str, int]:
    """Start `kit dashboard` on a free port, read its study names over HTTP, stop it.

    Returns (study names, the command's output, the port). The port is asked of the OS, never assumed free.
    """
    import json
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", "--config", str(config), "dashboard", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )
    try:
        body, deadline = None, time.time() + 60
        while time.time() < deadline and body is None:
            try:
                # a request cut at 2 s never saw a dashboard that needs 3 s to read a journal on a busy machine (CI: a Ray test beside it)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=15) as response:
                    body = json.loads(response.read())
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # seen in the full suite: the journal dashboard ignores SIGTERM; what it answered stands
            proc.kill()
            out, _ = proc.communicate()
    assert body is not None, f"dashboard did not answer: {out[-500:]}"
    return {s["study_name"] for s in body["study_summaries"]}, out, port
