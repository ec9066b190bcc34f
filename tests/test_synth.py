"""Synthetic benchmark presets: `easy` unchanged, `realistic` reproducible, counts kept, recorded, bad OUT."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data.synth import FINDING_NAMES, REALISTIC_CONTRAST, draw_chest, generate, patient_anatomy, scale_counts
from kit.errors import KitError

# Fingerprints of the generator's output before the realistic preset existed (same arguments as below):
# the easy preset must stay the same data, image for image.
EASY_KAGGLE_SHA256 = "cea4c6a495f65e5a4b5fedddf2eb92e17e20bb49b6c3343a66677cd63ccd65d5"
EASY_NPZ_SHA256 = "75ac6f86ed49b101b14c7a6020a28144342124122bf35b9c8b5551860db69760"


def kaggle_fingerprint(root: Path) -> str:
    """SHA-256 over the CSVs and the decoded pixels of every image (PNG bytes depend on zlib, pixels do not)."""
    h = hashlib.sha256()
    for name in ("train.csv", "solution.csv", "sample_submission.csv"):
        h.update((root / name).read_bytes())
    for split in ("train", "test"):
        for path in sorted((root / split).glob("*.png")):
            h.update(path.name.encode())
            h.update(np.asarray(Image.open(path)).tobytes())
    return h.hexdigest()


def npz_fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    with np.load(root / "chestmnist.npz") as npz:
        for key in sorted(npz.files):
            h.update(key.encode())
            h.update(np.ascontiguousarray(npz[key]).tobytes())
    return h.hexdigest()


def test_easy_preset_is_the_original_data(tmp_path):
    generate(tmp_path / "k", n_train=120, n_test=40, size=24, seed=11, processes=1)
    assert kaggle_fingerprint(tmp_path / "k") == EASY_KAGGLE_SHA256
    generate(tmp_path / "m", n_train=60, n_test=20, n_val=10, size=20, seed=11, task="multi-label", processes=1, difficulty="easy")
    assert npz_fingerprint(tmp_path / "m") == EASY_NPZ_SHA256
    manifest = json.loads((tmp_path / "k" / "synth.json").read_text())
    assert manifest["difficulty"] == "easy" and "contrast" not in manifest


def test_realistic_is_reproducible_keeps_counts_and_labels_and_is_recorded(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, n_train=120, n_test=40, size=24, seed=seed, processes=1, difficulty="realistic")
    generate(tmp_path / "easy", n_train=120, n_test=40, size=24, seed=5, processes=1)
    assert kaggle_fingerprint(tmp_path / "a") == kaggle_fingerprint(tmp_path / "b")
    assert kaggle_fingerprint(tmp_path / "a") != kaggle_fingerprint(tmp_path / "c")
    train = pd.read_csv(tmp_path / "a" / "train.csv", dtype={"id": str})
    assert train.drop(columns=["id", "patient_id"]).sum().to_dict() == scale_counts(120)
    # same seed, same labels and patients as easy: only the pictures differ
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "easy" / "train.csv").read_bytes()
    assert (tmp_path / "a" / "solution.csv").read_bytes() == (tmp_path / "easy" / "solution.csv").read_bytes()
    image = "train/img_000007.png"
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / image)), np.asarray(Image.open(tmp_path / "easy" / image)))
    manifest = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert manifest["difficulty"] == "realistic" and manifest["contrast"] == REALISTIC_CONTRAST
    assert manifest["train_counts"] == scale_counts(120)


def test_realistic_multilabel_keeps_its_labels(tmp_path):
    generate(tmp_path / "e", n_train=60, n_test=20, n_val=10, size=20, seed=3, task="multi-label", processes=1)
    generate(tmp_path / "r", n_train=60, n_test=20, n_val=10, size=20, seed=3, task="multi-label", processes=1, difficulty="realistic")
    with np.load(tmp_path / "e" / "chestmnist.npz") as easy, np.load(tmp_path / "r" / "chestmnist.npz") as real:
        assert np.array_equal(easy["train_labels"], real["train_labels"])
        assert not np.array_equal(easy["train_images"], real["train_images"])


def _realistic(findings: list[str], i: int, contrast: dict[str, float]) -> np.ndarray:
    rng = np.random.default_rng([9, i])
    anatomy = patient_anatomy(np.random.default_rng([8, i]))
    return draw_chest(48, findings, rng, anatomy, "realistic", contrast).astype(np.float64)


def test_realistic_contrast_factor_sets_how_visible_a_finding_is():
    """Contrast 0 erases a finding exactly (everything else identical); more contrast, a larger difference."""
    for name in FINDING_NAMES:
        diffs = []
        for factor in (0.0, 0.5, 1.5):
            contrast = {**REALISTIC_CONTRAST, name: factor}
            diffs.append(np.mean([np.abs(_realistic([name], i, contrast) - _realistic([], i, contrast)).mean() for i in range(6)]))
        assert diffs[0] == 0.0, name
        assert 0 < diffs[1] < diffs[2], (name, diffs)


def test_bad_difficulty_and_contrast_tables_are_one_line_errors(tmp_path):
    with pytest.raises(KitError, match="--difficulty 'hard'"):
        generate(tmp_path / "x", n_train=100, n_test=20, size=16, processes=1, difficulty="hard")
    with pytest.raises(KitError, match="missing Hernia"):
        no_hernia = {f: 1.0 for f in FINDING_NAMES if f != "Hernia"}
        generate(tmp_path / "x", n_train=100, n_test=20, size=16, processes=1, difficulty="realistic", contrast=no_hernia)
    with pytest.raises(KitError, match="realistic only"):
        generate(tmp_path / "x", n_train=100, n_test=20, size=16, processes=1, contrast=dict(REALISTIC_CONTRAST))
    assert not (tmp_path / "x").exists()


def _kit_in_process(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """The console script's entry point, in-process: exit code, stdout, stderr."""
    from kit.cli import main

    monkeypatch.setattr(sys, "argv", ["kit", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.subprocess
def test_synth_cli_pointed_at_a_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    small = ["--n-train", "100", "--n-test", "20", "--size", "16"]
    # a real process once: exit status and stderr exactly as a user sees them
    result = subprocess.run([sys.executable, "-m", "kit", "synth", str(target), *small], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert str(target) in result.stderr.replace("\n", "") and "is a file" in result.stderr
    code, _, err = _kit_in_process(["synth", str(target / "inside"), *small], monkeypatch, capsys)
    assert code == 2 and "is a file" in err and "Traceback" not in err
    assert target.read_text() == "keep me"
    code, out, err = _kit_in_process(["synth", str(tmp_path / "r"), *small, "--difficulty", "realistic"], monkeypatch, capsys)
    assert code == 0, err
    assert "realistic" in out and json.loads((tmp_path / "r" / "synth.json").read_text())["difficulty"] == "realistic"


def test_calibration_step_moves_each_factor_towards_its_target():
    """benchmarks/synth_difficulty: below target -> more contrast, above -> less; a rare class whose
    bootstrap interval covers its target keeps its factor (its AUC is noise, not a signal to chase)."""
    from benchmarks.synth_difficulty import CHEXNET_AUC, update_contrast

    def row(n_train: int, contrast: float, auc: float, interval: tuple[float, float]) -> dict:
        return {"n_train": n_train, "contrast": contrast, "auc": auc, "bootstrap_90": list(interval)}

    def round_(auc_of: dict[str, float], factor: float) -> dict:
        table = {f: row(500, factor, 0.85, (0.83, 0.87)) for f in FINDING_NAMES}
        for f, (n, auc, interval) in auc_of.items():
            table[f] = row(n, factor, auc, interval)
        return {"table": table}

    low, high, rare = "Infiltration", "Emphysema", "Hernia"
    first = round_({low: (600, 0.60, (0.58, 0.62)), high: (500, 0.99, (0.98, 1.0)), rare: (13, 0.80, (0.55, 0.99))}, 1.0)
    nxt = update_contrast([first])
    assert nxt[low] > 1.0 and nxt[high] < 1.0 and nxt[rare] == 1.0
    # a second round on the line through both points: the step lands between them when the target lies between
    second = round_({low: (600, CHEXNET_AUC[low] + 0.1, (0.8, 0.83)), high: (500, 0.99, (0.98, 1.0)), rare: (13, 0.999, (0.998, 1.0))}, 1.0)
    second["table"][low]["contrast"] = nxt[low]
    third = update_contrast([first, second])
    assert 1.0 < third[low] < nxt[low] and third[rare] < 1.0


def test_every_finding_has_one_painter():
    """The painter registry covers every class the generator can draw, and refuses a second painter for a name."""
    from kit.data.synth import PAINTERS, painter
    from kit.errors import KitError

    assert set(PAINTERS) == set(FINDING_NAMES)
    with pytest.raises(KitError, match="two painters"):
        painter("Nodule")(lambda canvas, mark: None)
    with pytest.raises(KitError, match="no painter for finding 'Ghost'"):
        draw_chest(16, ["Ghost"], np.random.default_rng(0), patient_anatomy(np.random.default_rng(1)))
