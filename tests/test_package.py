"""`kit package`: the package installs offline in a fresh environment and its notebook writes `kit blend`'s CSV.

The stand-in for Kaggle's GPU image is a fresh virtual environment (the stdlib's venv, pip from ensurepip) that
sees this machine's installed distributions (torch and the rest) through a folder of links, less the kit itself
and less every package `KAGGLE_LACKS` lists. The kit and those must then come from the package's wheels/ folder,
installed with pip's --no-index: if the kit's wheel or a listed wheel were missing, or the list missed a
dependency, the install fails. The notebook's code cells then run under a bare interpreter with the network cut
(`unshare -n` where it works, else every proxy pointed at a closed loopback port).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from rich.console import Console

from kit.inference.notebook import code_cells
from kit.stages.blend import blend
from kit.stages.package import KAGGLE_LACKS, package
from kit.stages.train import train

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def _stand_in_image(root: Path) -> Path:
    """A fresh venv whose sys.path also holds links to this environment's packages, less the kit and KAGGLE_LACKS."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(root / "venv")], check=True, capture_output=True)
    python = root / "venv" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    for own in [*site.glob("setuptools*"), *site.glob("_distutils_hack"), *site.glob("distutils-precedence.pth")]:
        shutil.rmtree(own) if own.is_dir() else own.unlink()  # ensurepip's old setuptools would hide the image's
    here = Path(sysconfig.get_paths()["purelib"])
    left_out = set()
    for name in ("kit", *KAGGLE_LACKS):
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        left_out |= {Path(f).parts[0] for f in files}
    canonical = {n.lower().replace("-", "_") for n in ("kit", *KAGGLE_LACKS)}  # a dist-info is <name>-<version>.dist-info
    farm = root / "image"
    farm.mkdir()
    for entry in here.iterdir():
        dist_info = entry.suffix == ".dist-info" and entry.name.split("-")[0].lower().replace(".", "_") in canonical
        if entry.name in left_out or dist_info or entry.name.startswith("__editable__") or entry.suffix == ".pth" or entry.name == "__pycache__":
            continue
        (farm / entry.name).symlink_to(entry)
    (site / "kaggle-image.pth").write_text(f"{farm}\n")
    return python


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the block ends: a connection there is refused


def _offline(command: list[str]) -> list[str]:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True) if shutil.which("unshare") else None
    return ["unshare", "-n", *command] if probe is not None and probe.returncode == 0 else command


@pytest.mark.timeout(3600)  # training, the wheels' download, a fresh venv's install and the notebook's run, on a loaded machine
def test_package_installs_offline_and_its_notebook_writes_the_blend_csv(tiny_competition, tmp_path, variant_run):
    cfg = variant_run(tiny_competition, tmp_path, name="tiny", epochs=1)
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"submissions": tmp_path / "submissions"})})
    train(cfg, ["tiny"], None, resume=False, console=Console(quiet=True))
    blend(cfg, ["tiny"], "b", console=Console(quiet=True))
    try:
        out = package(cfg, "b", out=tmp_path / "pkg", dataset="kit-tester/kit-b-models", console=Console(quiet=True))
    except Exception as exc:  # the dependencies' wheels come from the package index
        if "pip download" in str(exc):
            pytest.skip(f"no package index to fetch the listed wheels from: {exc}")
        raise
    dataset = out / "dataset"
    record = json.loads((dataset / "kit-package.json").read_text())
    wheels = sorted(p.name for p in (dataset / "wheels").iterdir())
    assert any(w.startswith("kit-") for w in wheels) and any(w.startswith("albumentations-") for w in wheels)
    assert not any(w.startswith("torch") for w in wheels)
    assert all(record["files"][f"wheels/{w}"]["bytes"] > 0 for w in wheels)
    assert set(json.loads((out / "notebook" / "kernel-metadata.json").read_text())) >= {"enable_gpu", "enable_internet", "dataset_sources"}

    python = _stand_in_image(tmp_path / "kaggle")
    def runs(code: str) -> bool:
        return subprocess.run([python, "-c", code], capture_output=True, cwd=tmp_path).returncode == 0

    assert runs("import torch, timm, pandas") and not runs("import albumentations") and not runs("import kit")  # the image lacks these
    notebook = json.loads(next((out / "notebook").glob("*.ipynb")).read_text())
    script = tmp_path / "notebook.py"
    script.write_text(code_cells(notebook))
    work = tmp_path / "work"
    work.mkdir()
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KIT_", "PIP_", "UV_"))}
    env.update(KIT_PACKAGE=str(dataset), KIT_DATA=str(cfg.data.dir), KIT_WORK=str(work), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull,
               **{k: f"http://127.0.0.1:{port}" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")})
    result = subprocess.run(_offline([str(python), str(script)]), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "submission.csv").read_bytes() == (cfg.paths.submissions / "b.csv").read_bytes()
