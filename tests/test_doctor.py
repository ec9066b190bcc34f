"""kit doctor (CPU run on a tiny variant, advice when memory is short) and kit plan (grid time from its rates)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from kit.errors import KitError
from tests.conftest import assert_one_line_error, run_kit


def _doctor_in_a_fresh_process(cfg) -> dict:
    from kit.stages.doctor import doctor

    return doctor(cfg, ["tiny"], console=Console(quiet=True))


@pytest.fixture(scope="module")
def doctored(tiny_competition, tmp_path_factory, variant_run):
    """doctor in a new interpreter, as `kit doctor` runs: on the CPU its memory figures are the growth of the
    process's peak, which a test process that has already trained models may not show (freed heap is reused)."""
    import multiprocessing

    root = tmp_path_factory.mktemp("doctor")
    cfg = variant_run(tiny_competition, root)
    # a cache folder of its own: other tests build the shared tiny competition's cache, and doctor reports what is left to build
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"cache": root / "cache"})})
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        report = pool.apply(_doctor_in_a_fresh_process, (cfg,))
    return cfg, report


@pytest.mark.subprocess
@pytest.mark.slow
def test_doctor_cpu_run_on_a_tiny_variant(doctored):
    from kit.paths import doctor_json as doctor_report_path

    cfg, report = doctored
    written = json.loads(doctor_report_path(cfg).read_text())
    assert written["variants"].keys() == {"tiny"} and written["machine"]["device"] == "cpu"
    row = written["variants"]["tiny"]
    assert row["autocast"] == "float32 (none)" and row["grad_scaler"] is False  # the trainer's CPU choice (amp = true)
    assert row["channels_last"] == "on" and row["compile"]["checked"] == "no"  # CPU: compile skipped unless asked, and said so
    assert 0 < row["memory"]["fixed_bytes"] and row["memory"]["fits"]
    assert row["train_images_per_s"] > 0 and row["inference_images_per_s"] > 0 and row["loader_images_per_s"] > 0
    assert row["bound"] in ("model", "loader") and row["workers_to_feed"] >= 1
    n = written["data"]["n_train"] + written["data"]["n_test"]
    assert row["disk"]["cache_bytes_needed"] == n * 16 * 16  # the tiny variant's 16 px cache, not built yet
    mem = row["memory"]  # the job's peak: the higher of the two measured phases, plus the mapped cache on the CPU
    assert mem["train_step_peak_bytes"] > 0 and mem["predict_peak_bytes"] > 0
    assert mem["peak_bytes"] == max(mem["train_step_peak_bytes"], mem["predict_peak_bytes"])
    assert mem["cache_resident_bytes"] == n * 16 * 16 and mem["job_peak_bytes"] == mem["peak_bytes"] + n * 16 * 16


@pytest.mark.subprocess
@pytest.mark.slow
def test_doctor_advises_a_batch_that_fits_when_memory_is_short(doctored):
    from kit.stages.doctor import MEMORY_HEADROOM, memory_advice

    mem = doctored[1]["variants"]["tiny"]["memory"]
    per_image, fixed = mem["per_image_bytes"], mem["fixed_bytes"]
    assert per_image > 0
    device = int((fixed + per_image * 8.5) / MEMORY_HEADROOM)  # room for 8 images of the 32
    advice = memory_advice(fixed + per_image * 32, fixed, 32, device)
    assert not advice["fits"]
    assert advice["suggested_batch_size"] == 8 and advice["suggested_grad_accum_steps"] == 4  # effective batch kept at 32
    assert "batch_size = 8" in advice["advice"] and "grad_accum_steps = 4" in advice["advice"]
    assert advice["predicted_peak_bytes"] <= device * MEMORY_HEADROOM


def test_evaluation_pass_is_the_trainers_own(monkeypatch):
    """doctor times (and measures) the trainer's predict_logits at its default batch, with the variant's TTA."""
    import numpy as np
    import torch

    import kit.training.evaluation as evaluation
    from kit.config import ModelConfig
    from kit.stages.doctor import _inference_rate
    from tests.conftest import TINY_VARIANT

    calls = []

    def spy(model, images, indices, mcfg, device, batch_size=None):
        calls.append((len(indices), batch_size, mcfg.tta_hflip))
        return np.zeros((len(indices), 2), np.float32)

    monkeypatch.setattr(evaluation, "predict_logits", spy)
    mcfg = ModelConfig(name="tiny", **{**TINY_VARIANT, "batch_size": 8})
    rate = _inference_rate(torch.nn.Identity(), np.zeros((5, 16, 16), np.uint8), mcfg, torch.device("cpu"), predicted=(200, 300))
    assert rate > 0 and len(calls) >= 6  # a full batch, the two last batches, then at least 3 timed full batches
    assert calls[:3] == [(64, None, True), (8, None, True), (44, None, True)]  # max(batch_size, 64) rows: the trainer's default batch
    assert set(calls[3:]) == {(64, None, True)}  # 200 and 300 rows end with batches of 8 and 44


def test_memory_advice_rules():
    from kit.stages.doctor import memory_advice

    gib = 2**30
    assert memory_advice(4 * gib, gib, 32, 16 * gib)["fits"]
    odd = memory_advice(13 * gib, gib, 32, int(8.2 * gib), even=True)  # mixup needs an even batch
    assert odd["suggested_batch_size"] % 2 == 0 and odd["suggested_batch_size"] * odd["suggested_grad_accum_steps"] >= 32
    hopeless = memory_advice(20 * gib, 15 * gib, 32, 16 * gib)
    assert hopeless["suggested_batch_size"] is None and "does not fit even at batch 1" in hopeless["advice"]


def test_feeding_says_which_one_bounds():
    from kit.stages.doctor import feeding

    inline = feeding(model_rate=100.0, loader_rate_per_worker=100.0, workers=0, cores=8)
    assert inline["epoch_images_per_s"] == pytest.approx(50.0)  # no workers: loading and the step take turns
    starved = feeding(model_rate=1000.0, loader_rate_per_worker=300.0, workers=2, cores=8)
    assert starved["bound"] == "loader" and starved["epoch_images_per_s"] == 600.0 and starved["workers_to_feed"] == 4
    fed = feeding(model_rate=1000.0, loader_rate_per_worker=300.0, workers=4, cores=2)
    assert fed["bound"] == "model" and "2 cores" in fed["feeding"]


def test_compile_verdicts_without_compiling():
    import torch

    from kit.config import ModelConfig
    from kit.stages.doctor import _compile_verdict

    cpu = torch.device("cpu")
    missing = _compile_verdict(
        ModelConfig(compile=True), None, None, 2, cpu, task="multi-class", compile_check=None, probe={"works": False, "reason": "no C++ compiler"}
    )
    assert missing["works"] is False and "no C++ compiler" in missing["advice"] and "set compile = false" in missing["advice"]
    skipped = _compile_verdict(ModelConfig(), None, None, 2, cpu, task="multi-class", compile_check=None, probe={"works": None})
    assert skipped["checked"] == "no" and "kit doctor --compile" in skipped["advice"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_doctor_cli_with_a_small_device_memory(doctored, tiny_competition, tmp_path, capsys):
    """--memory-gb stands for a smaller device: the table and the JSON say it does not fit."""
    from kit.stages.doctor import doctor

    cfg = doctored[0]
    report = doctor(cfg, ["tiny"], device_memory=1024, console=Console(quiet=True))
    mem = report["variants"]["tiny"]["memory"]
    assert not mem["fits"] and mem["device_bytes"] == 1024 and "does not fit even at batch 1" in mem["advice"]
    assert report["machine"]["memory_source"].startswith("given")
    code, _, err = run_kit(["doctor", "--memory-gb", "0", "--config", tiny_competition.config_path], capsys)
    assert_one_line_error(code, err, "--memory-gb")


@pytest.mark.subprocess
@pytest.mark.slow
def test_plan_times_the_grid_from_doctors_rates(doctored, capsys):
    from kit.paths import doctor_json as doctor_report_path
    from kit.stages.plan import fold_seconds, makespan, plan

    cfg = doctored[0]
    report = json.loads(doctor_report_path(cfg).read_text())  # the latest doctor run's file, which plan reads
    row = report["variants"]["tiny"]
    n_train, n_test, k = report["data"]["n_train"], report["data"]["n_test"], cfg.folds.n_folds
    fold = fold_seconds(row, n_train, n_test, k)
    expected_epoch = fold["train_images"] / row["epoch_images_per_s"] + -(-n_train // k) / row["inference_images_per_s"]
    assert fold["epoch_s"] == pytest.approx(expected_epoch)
    assert fold["fold_s"] == pytest.approx(row["epochs"] * expected_epoch + n_test / row["inference_images_per_s"])
    result = plan(cfg, hours=1e-6, gpus=None, console=Console(quiet=True))
    assert result["grid_seconds"][1] == pytest.approx(k * fold["fold_s"])
    assert result["grid_seconds"][2] < result["grid_seconds"][1]
    assert result["fits"][1]["all"] is False and result["fits"][1]["epochs_for_all"] is None
    assert makespan([4, 3, 3, 2], 2) == 6 and makespan([5, 1], 4) == 5


def test_plan_refuses_without_doctor(tiny_competition, tmp_path, variant_run):
    from kit.stages.plan import plan

    cfg = variant_run(tiny_competition, tmp_path)
    with pytest.raises(KitError, match="run `kit doctor` first"):
        plan(cfg, console=Console(quiet=True))
