"""Stage `kit package NAME`: a blend made into a Kaggle dataset and an offline inference notebook.

A code competition runs a notebook without internet on Kaggle's GPU image, reading the weights from a
dataset. This stage writes both, from what training and `kit blend --name NAME` wrote:

    <out>/dataset/        the Kaggle dataset (dataset-metadata.json)
        wheels/           the kit as a wheel, and the wheels of the dependencies a Kaggle image lacks (README.md lists them)
        oof/              the blend record and each member's OOF + JSON (model config, classes, folds, seeds)
        runs/             each member's fold weights (best.pt, or decoupled.pt after cRT/τ-norm), float16 with --half
        competition.toml  the config, its folders set from $KIT_PACKAGE, $KIT_DATA and $KIT_WORK by the notebook
        kit-package.json  what the package holds (files and sizes), read by the notebook
    <out>/notebook/       the notebook (.ipynb) and kernel-metadata.json (GPU on, internet off, the sources)

The notebook's cells install the wheels with pip's --no-index and run `kit predict` on the competition's test
set, writing /kaggle/working/submission.csv: the blend's own CSV when the test set is the one it was fitted on
(tests/test_package.py checks this offline in a fresh environment). `--push` (kit.leaderboard.kernels) creates or
versions the dataset and pushes the notebook.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from kit.config import CompetitionConfig, check_name
from kit.errors import KitError
from kit.files import atomic_write, write_json, write_text
from kit.inference.notebook import MARKER, dumps, notebook
from kit.inference.predict import blend_plan, blend_record_path
from kit.paths import META_EXT, OOF_EXT, PACKAGE_STORAGE, oof_in, oof_meta_json

# What a Kaggle GPU image lacks of the kit's dependencies (it has torch, torchvision, timm, numpy, scipy, pandas,
# scikit-learn, optuna, pydantic, typer, rich, kaggle, opencv, ...): shipped as wheels at the versions installed here.
KAGGLE_LACKS = ("albumentations", "albucore", "stringzilla", "simsimd", "iterative-stratification", "cmaes", "optuna-dashboard", "bottle")
KAGGLE_PYTHON = "3.11"  # the Python of Kaggle's image: binary wheels are fetched for it
DEFAULT_MAX_MINUTES = 500.0  # a code competition's notebook limit is typically 9 hours; stop well before


def package(
    cfg: CompetitionConfig,
    name: str,
    *,
    out: Path | None = None,
    half: bool = False,
    dataset: str | None = None,
    kernel: str | None = None,
    wheels_from: Path | None = None,
    python_version: str = KAGGLE_PYTHON,
    max_minutes: float = DEFAULT_MAX_MINUTES,
    console: Console | None = None,
) -> Path:
    """Write the package folder of blend `name`; its path. `wheels_from`: a folder of wheels to take the
    dependencies' wheels from instead of the package index (an offline machine)."""
    console = console or Console()
    check_name(name, "NAME")
    owner = os.environ.get("KAGGLE_USERNAME") or "your-kaggle-username"
    dataset = _slug(dataset or f"{owner}/kit-{name}-models", "--dataset")
    kernel = _slug(kernel or f"{dataset.split('/')[0]}/kit-{name}-inference", "--kernel")
    plan = blend_plan(cfg, name)  # every piece present and matching before anything is written
    out = Path(out) if out is not None else Path("packages") / name
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=_parent(out)))
    try:
        files = _write_dataset(cfg, name, plan, staging / "dataset", half=half, wheels_from=wheels_from, python_version=python_version, console=console)
        record = {
            "blend": name, "competition": cfg.kaggle.competition, "task": cfg.task, "classes": plan.classes,
            "data_marker": cfg.data.test_csv if cfg.data.source == "kaggle" else cfg.data.npz, "max_minutes": max_minutes,
            "half_precision": half, "members": list(plan.blend.members), "dataset": dataset, "kernel": kernel,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "kit": metadata.version("kit"), "files": files,
        }
        write_json(staging / "dataset" / MARKER, record)
        write_json(staging / "dataset" / "dataset-metadata.json", {"title": f"kit {name}"[:50].ljust(6, "_"), "id": dataset,
                                                                   "licenses": [{"name": "CC0-1.0"}]})
        write_text(staging / "dataset" / "README.md", _readme(record))
        _write_notebook(staging / "notebook", name, cfg, dataset, kernel)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    total = sum(f["bytes"] for f in files.values())
    console.print(f"package '{name}': {len(files)} files, {total / 2**20:.1f} MiB in {out / 'dataset'}; notebook {out / 'notebook'} "
                  f"(dataset {dataset}, kernel {kernel})", soft_wrap=True, highlight=False)
    return out


def _parent(out: Path) -> Path:
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _slug(value: str, what: str) -> str:
    parts = value.split("/")
    if len(parts) != 2 or not all(parts) or any(" " in p for p in parts) or not 6 <= len(parts[1]) <= 50:
        raise KitError(f"{what} {value!r}: give OWNER/SLUG (your Kaggle user name and a name of 6 to 50 characters)")
    return value


def _write_dataset(cfg: CompetitionConfig, name: str, plan, root: Path, *, half: bool, wheels_from: Path | None, python_version: str,
                   console: Console) -> dict[str, dict[str, Any]]:
    """Copy or convert every piece predict reads; {relative path: {"bytes": size}}."""
    oof, runs = Path(cfg.paths.oof), Path(cfg.paths.runs)
    (root / "oof").mkdir(parents=True)
    shutil.copy2(blend_record_path(cfg, name), root / "oof" / blend_record_path(cfg, name).name)
    for member in plan.members:
        stems = [member.name]
        meta = json.loads(oof_meta_json(oof_in(oof, member.name)).read_text())
        stems += [Path(v["oof"]).stem for v in (meta.get("per_seed") or {}).values()]
        for stem in stems:
            for suffix in (OOF_EXT, META_EXT):
                if (oof / f"{stem}{suffix}").is_file():
                    shutil.copy2(oof / f"{stem}{suffix}", root / "oof" / f"{stem}{suffix}")
        for per_seed in member.weights:
            for path in per_seed:
                target = root / "runs" / path.relative_to(runs)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_weights(path, target, half)
    _write_config(cfg, root / "competition.toml")
    _wheels(root / "wheels", wheels_from, python_version, console)
    return {str(p.relative_to(root)): {"bytes": p.stat().st_size} for p in sorted(root.rglob("*")) if p.is_file()}


def _copy_weights(path: Path, target: Path, half: bool) -> None:
    if not half:
        shutil.copy2(path, target)
        return
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    atomic_write(target, lambda f: torch.save(ckpt, f))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def _toml(table: dict[str, Any], prefix: str = "") -> str:
    """A TOML document of nested dicts of strings, numbers, booleans and lists (None keys left out)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None and not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += ["", f"[{prefix}{k}]", _toml(v, f"{prefix}{k}.")]
    return "\n".join(lines) + "\n"


def _write_config(cfg: CompetitionConfig, path: Path) -> None:
    """The config with every folder moved under the notebook's variables: the package's own files read from
    $KIT_PACKAGE, the competition's data from $KIT_DATA, what predict writes under $KIT_WORK."""
    raw = cfg.model_dump(mode="json", exclude={"source_file"})
    raw["data"]["dir"] = "$KIT_DATA"
    raw["folds"]["path"] = "$KIT_WORK/folds.csv"
    raw["calibrate"]["storage"] = PACKAGE_STORAGE
    raw["paths"] = {"oof": "$KIT_PACKAGE/oof", "runs": "$KIT_PACKAGE/runs", "models": "$KIT_PACKAGE/models",
                    "cache": "$KIT_WORK/cache", "submissions": "$KIT_WORK/submissions"}
    write_text(path, _toml(raw))


def _wheels(folder: Path, wheels_from: Path | None, python_version: str, console: Console) -> None:
    """The kit's own wheel (built from its source tree) and the pinned wheels of KAGGLE_LACKS."""
    folder.mkdir(parents=True, exist_ok=True)
    _kit_wheel(folder)
    pins = [f"{n}=={metadata.version(n)}" for n in KAGGLE_LACKS if _installed(n)]
    source = ["--no-index", "--find-links", str(wheels_from)] if wheels_from is not None else []
    command = [*_pip(), "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
               "--implementation", "cp", "--dest", str(folder), *source, *pins]
    with console.status(f"package: downloading {len(pins)} wheels for Python {python_version}"):
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KitError(f"pip download of {', '.join(pins)} failed ({last}); connect to the package index, or give --wheels-from a folder holding them")


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def _pip() -> list[str]:
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv is None:
        raise KitError("kit package needs pip or uv to fetch the dependencies' wheels; install one (`python -m ensurepip`)")
    return [uv, "tool", "run", "--quiet", "pip"]


def _kit_wheel(folder: Path) -> None:
    """The kit's wheel, built from a copy of its source tree (so the tree gets no build/ folder)."""
    import kit

    root = Path(kit.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise KitError(f"{root}: the kit's source tree (pyproject.toml) is not here; run kit package from a checkout of the kit")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root / "kit", src / "kit", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), str(src)]
        if _pip()[0] != sys.executable:  # no pip here: uv builds with this interpreter's setuptools
            command = [shutil.which("uv") or "uv", "build", "--quiet", "--wheel", "--no-build-isolation", "--python", sys.executable,
                       "--out-dir", str(folder), str(src)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=src)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise KitError(f"building the kit's wheel failed ({last})")
    for stray in folder.glob(".gitignore"):
        stray.unlink()


def _write_notebook(folder: Path, name: str, cfg: CompetitionConfig, dataset: str, kernel: str) -> None:
    folder.mkdir(parents=True)
    code_file = f"kit-{name}-inference.ipynb"
    write_text(folder / code_file, dumps(notebook(f"kit predict: blend '{name}' on {cfg.kaggle.competition or 'the test set'}")))
    write_json(folder / "kernel-metadata.json", {
        "id": kernel, "title": kernel.split("/")[1], "code_file": code_file, "language": "python", "kernel_type": "notebook",
        "is_private": True, "enable_gpu": True, "enable_tpu": False, "enable_internet": False,
        "dataset_sources": [dataset], "competition_sources": [cfg.kaggle.competition] if cfg.kaggle.competition else [], "kernel_sources": [],
        "model_sources": [],
    })


def _readme(record: dict[str, Any]) -> str:
    files = record["files"]
    wheels = [p for p in files if p.startswith("wheels/")]
    weights = [p for p in files if p.startswith("runs/")]
    lines = [
        f"# kit package: blend '{record['blend']}'", "",
        f"Competition `{record['competition']}`, task {record['task']}, {len(record['classes'])} classes; members "
        f"{', '.join(record['members'])}; weights in {'float16' if record['half_precision'] else 'float32'}.", "",
        "Install offline and predict (what the notebook does):", "",
        "    pip install --no-index --find-links wheels kit",
        "    KIT_PACKAGE=$PWD KIT_DATA=<competition data> KIT_WORK=<output folder> \\",
        f"        python -m kit --config competition.toml predict --name {record['blend']} --output submission.csv", "",
        "## Wheels (the kit, and the dependencies a Kaggle GPU image lacks)", "",
        *[f"- {p.removeprefix('wheels/')} ({files[p]['bytes'] / 2**20:.2f} MiB)" for p in wheels], "",
        "## Fold weights", "",
        *[f"- {p} ({files[p]['bytes'] / 2**20:.2f} MiB)" for p in weights], "",
        f"Total {sum(f['bytes'] for f in files.values()) / 2**20:.1f} MiB.", "",
    ]
    return "\n".join(lines)
