"""Stage `kit doctor`: will each variant fit and run fast on this machine, before hours are spent?

For each variant at its image size and batch size: the device and the autocast dtype the trainer will use
(`kit.training.device`'s own choices), whether channels_last and torch.compile work, the peak memory of
training steps on a real batch (the trainer's own `Trainer.train_step`, built by `kit.training.trainer` as `kit train`
builds it: mixing, forward, backward, accumulation, clipping, optimizer step, EMA copy, schedule) and of the evaluation pass
(the trainer's own `predict_logits`: batches of max(batch_size, 64) images with its TTA, while the optimizer
state is still held) against the device's memory, with a batch size or gradient accumulation that fits when it does not, the model's images/s against the
training loader's at the configured workers, and the image cache's disk need against free space. One table
and `runs/doctor.json`, which `kit plan` reads.

Memory is measured where it is held: on a GPU `torch.cuda.max_memory_allocated` (reset before the model is
built), on the CPU the growth of the process's peak resident memory (`VmHWM` in /proc/self/status, reset
through /proc/self/clear_refs; elsewhere `getrusage` ru_maxrss, which cannot be reset and so gives an upper
bound). On the CPU the process also maps the image cache (np.memmap): its pages show in the resident memory
the real job reaches (reclaimable, so the advice leaves them out) and are added to `job_peak_bytes`, the peak
`kit train`'s process is predicted to reach. Weights are never downloaded here: the network is built with random weights of the same shape.
"""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import platform
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from kit.config import CompetitionConfig, ModelConfig, load_model, with_overrides
from kit.data.cache import cache_paths, resize_gray
from kit.data.sources import open_source
from kit.errors import KitError
from kit.paths import doctor_json
from kit.records import DoctorReport
from kit.training.augment import make_mixer
from kit.training.dataset import to_model_input
from kit.training.device import pick_precision
from kit.training.trainer import Trainer, build_model, build_trainer

MEMORY_HEADROOM = 0.9  # advise a batch that fits in 90% of the device's memory (fragmentation, cuDNN workspaces)
WARMUP_STEPS = 2  # untimed: the first allocates the optimizer state, both build the kernels' plans
MIN_TIMED_STEPS, MAX_TIMED_STEPS, MIN_TIMED_SECONDS = 3, 50, 2.0  # timed steps: at least 3 and 2 s (at most 50)
LOADER_IMAGES = 128  # real images the loader's rate is measured on

def doctor(
    cfg: CompetitionConfig,
    variants: list[str],
    overrides: dict | None = None,
    *,
    device_memory: int | None = None,
    compile_check: bool | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure every variant here; print one table and write runs/doctor.json (atomic). `device_memory`
    (bytes) replaces the device's own figure, to plan for a smaller GPU or to test the advice.
    `compile_check`: compile the real model (default: on a GPU, or when the variant sets compile = true);
    a tiny probe checks the toolchain either way."""
    from kit.training.device import pick_device

    console = console or Console()
    mcfgs = [with_overrides(load_model(name, cfg), overrides) for name in variants]
    source = open_source(cfg)
    if len(source.train) == 0:
        raise KitError(f"{cfg.data.dir}: the training split is empty; check data.train_csv in {cfg.source_file}")
    device = pick_device()
    memory_total, memory_source = _device_memory(device)
    if device_memory is not None:
        memory_total, memory_source = int(device_memory), "given (--memory-gb)"
    probe = _compile_probe(device) if _checks_compile(device, compile_check, mcfgs) else {"works": None}
    report: dict[str, Any] = {
        "machine": {
            "device": device.type, "device_name": _device_name(device), "cpu_cores": _cores(), "torch_threads": torch.get_num_threads(),
            "memory_bytes": memory_total, "memory_source": memory_source, "memory_method": _memory_method(device),
            "torch": torch.__version__, "python": platform.python_version(),
        },
        "data": {"n_train": len(source.train), "n_test": len(source.test), "n_classes": len(source.classes), "n_folds": cfg.folds.n_folds},
        "compile_probe": probe,
        "variants": {},
    }
    batches: dict[int, np.ndarray] = {}
    for mcfg in mcfgs:
        if mcfg.image_size not in batches:
            batches[mcfg.image_size] = _real_images(source.train, mcfg.image_size, max(LOADER_IMAGES, mcfg.batch_size))
        with console.status(f"doctor: {mcfg.name} at {mcfg.image_size} px, batch {mcfg.batch_size} on {device.type}"):
            result = check_variant(
                mcfg, batches[mcfg.image_size], source, cfg, device, memory_total,
                compile_check=compile_check, probe=probe,
            )
        report["variants"][mcfg.name] = result
    DoctorReport.parse(report, doctor_json(cfg)).write(doctor_json(cfg))
    _print(report, console)
    console.print(f"wrote {doctor_json(cfg)}; `kit plan` turns these rates into the grid's time")
    return report


def check_variant(
    mcfg: ModelConfig, images: np.ndarray, source, cfg: CompetitionConfig, device: torch.device, memory_total: int,
    *,
    compile_check: bool | None = None, probe: dict | None = None,
) -> dict[str, Any]:
    """One variant's row of the report (see the module docstring)."""

    precision = pick_precision(device, mcfg.amp)
    n_classes = len(source.classes)
    labels = _labels_for(source, len(images))
    predicted = (math.ceil(len(source.train) / cfg.folds.n_folds), len(source.test))  # rows a job predicts: a held-out fold, the test set
    result: dict[str, Any] = {
        "backbone": mcfg.backbone, "image_size": mcfg.image_size, "batch_size": mcfg.batch_size, "epochs": mcfg.epochs,
        "grad_accum_steps": mcfg.grad_accum_steps, "max_train_images": mcfg.max_train_images, "tta_hflip": mcfg.tta_hflip,
        "num_workers": mcfg.num_workers, "crt_epochs": mcfg.crt_epochs,
        "autocast": "float32 (none)" if precision.dtype is None else str(precision.dtype).removeprefix("torch."),
        "grad_scaler": precision.needs_scaler, "weights": _weights_note(mcfg),
    }
    channels_last = mcfg.channels_last
    try:
        step = _measure_steps(mcfg, images, labels, source.task, n_classes, device, channels_last=channels_last, predicted=predicted)
        result["channels_last"] = "on" if channels_last else "off (channels_last = false)"
    except RuntimeError as exc:
        if not channels_last or _is_out_of_memory(exc):
            raise _step_failed(mcfg, exc) from None
        step = _measure_steps(mcfg, images, labels, source.task, n_classes, device, channels_last=False, predicted=predicted)
        result["channels_last"] = f"fails here ({type(exc).__name__}); set channels_last = false"
    result.update(step)
    result["memory"] = memory_advice(step["peak_bytes"], step["fixed_bytes"], mcfg.batch_size, memory_total, mcfg.grad_accum_steps,
                                     even=mcfg.mixup_alpha > 0 or mcfg.cutmix_alpha > 0)
    result["memory"].update(job_peak(step, device, len(source.train) + len(source.test), mcfg.image_size))
    result["compile"] = _compile_verdict(mcfg, images, labels, n_classes, device, task=source.task, compile_check=compile_check, probe=probe or {})
    loader_rate = loader_images_per_s(mcfg, images, labels)
    result["loader_images_per_s_per_worker"] = loader_rate
    result.update(feeding(step["train_images_per_s"], loader_rate, mcfg.num_workers, _cores()))
    result["disk"] = cache_disk(source, mcfg.image_size, Path(cfg.paths.cache))
    return result


def memory_advice(peak: int, fixed: int, batch: int, total: int, accum: int = 1, even: bool = False) -> dict[str, Any]:
    """Does a batch of `batch` fit in `total` bytes? Peak = fixed (weights, gradients, optimizer state, EMA)
    + batch × per-image activations; when it does not fit, the largest batch that does and the gradient
    accumulation that keeps the effective batch (batch × accumulation)."""
    budget = int(total * MEMORY_HEADROOM)
    per_image = max(peak - fixed, 0) / batch
    out: dict[str, Any] = {"peak_bytes": int(peak), "device_bytes": int(total), "budget_bytes": budget,
                           "fits": peak <= budget, "per_image_bytes": int(per_image), "fixed_bytes": int(fixed)}
    if out["fits"]:
        out["advice"] = f"fits: {_gib(peak)} of {_gib(total)}"
        return out
    largest = int((budget - fixed) // per_image) if per_image > 0 else 0
    if even:
        largest -= largest % 2
    if largest < 1:
        out.update(suggested_batch_size=None, suggested_grad_accum_steps=None,
                   advice=f"does not fit even at batch 1 ({_gib(fixed)} for weights and optimizer state alone, {_gib(budget)} usable): "
                          "use a smaller image_size or backbone")
        return out
    accum_needed = math.ceil(batch * accum / largest)
    new_batch = max(1, math.ceil(batch * accum / accum_needed))
    if even and new_batch % 2:
        new_batch -= 1
    predicted = int(fixed + per_image * new_batch)
    out.update(suggested_batch_size=new_batch, suggested_grad_accum_steps=accum_needed, predicted_peak_bytes=predicted,
               advice=f"out of memory: {_gib(peak)} needed, {_gib(budget)} usable; set batch_size = {new_batch} and "
                      f"grad_accum_steps = {accum_needed} (effective batch {new_batch * accum_needed}, about {_gib(predicted)})")
    return out


def job_peak(step: dict, device: torch.device, n_images: int, size: int) -> dict[str, int]:
    """The peak `kit train`'s process reaches: the larger of the training and evaluation phases (measured);
    on the CPU plus the image cache's pages, which the job maps (both splits by its test prediction) and
    which resident memory counts. On a GPU the cache stays in host memory: nothing is added."""
    cache = n_images * size * size if device.type == "cpu" else 0
    return {"train_step_peak_bytes": int(step["train_peak_bytes"]), "predict_peak_bytes": int(step["predict_peak_bytes"]),
            "cache_resident_bytes": int(cache), "job_peak_bytes": int(step["peak_bytes"] + cache)}


def feeding(model_rate: float, loader_rate_per_worker: float, workers: int, cores: int) -> dict[str, Any]:
    """Which one bounds an epoch: the model or the loader. With `num_workers = 0` the main process loads
    between steps (the two times add up); with workers, they load in parallel (the slower one bounds).
    `workers_to_feed`: the loader workers that would keep the model busy."""
    needed = max(1, math.ceil(model_rate / max(loader_rate_per_worker, 1e-9)))
    if workers == 0:
        epoch_rate = 1 / (1 / model_rate + 1 / loader_rate_per_worker)
        bound = "model" if model_rate < loader_rate_per_worker else "loader"
        loader_rate = loader_rate_per_worker
    else:
        loader_rate = loader_rate_per_worker * workers
        epoch_rate = min(model_rate, loader_rate)
        bound = "model" if model_rate <= loader_rate else "loader"
    note = f"{bound} bounds; {needed} loader worker{'s' if needed > 1 else ''} would feed the model"
    if needed + 1 > cores:
        note += f" (this machine has {cores} cores)"
    return {"loader_images_per_s": loader_rate, "epoch_images_per_s": epoch_rate, "bound": bound, "workers_to_feed": needed, "feeding": note}


def cache_disk(source, size: int, cache_dir: Path) -> dict[str, Any]:
    """The uint8 cache's bytes for both splits at `size` (0 for a split already cached) against free space."""
    need = 0
    for split in (source.train, source.test):
        data_path, meta_path = cache_paths(split, size, cache_dir)
        if not (data_path.is_file() and meta_path.is_file()):
            need += len(split) * size * size
    folder = cache_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    return {"cache_bytes_needed": need, "free_bytes": free, "fits": need <= free,
            "advice": ("already cached" if need == 0 else f"needs {_gib(need)}, {_gib(free)} free")
            + ("" if need <= free else "; free space or set paths.cache to a larger disk")}


def loader_images_per_s(mcfg: ModelConfig, images: np.ndarray, labels: np.ndarray) -> float:
    """The training loader's images/s in one process (one loader worker's rate): the variant's augmentation
    on uint8 images and the kit's collation, as `kit train` runs them."""
    from kit.training.dataset import CachedDataset, collate_uint8

    dataset = CachedDataset(images, np.arange(len(images)), labels, mcfg.augment,
                            randaugment_magnitude=mcfg.randaugment_magnitude, randaugment_ops=mcfg.randaugment_ops)
    order = np.arange(len(images))
    collate_uint8([dataset[int(j)] for j in order[: min(8, len(order))]])  # warm-up: first calls build the pipeline
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loader worker runs with one thread
    try:
        start = time.perf_counter()
        for lo in range(0, len(order), mcfg.batch_size):
            collate_uint8([dataset[int(j)] for j in order[lo : lo + mcfg.batch_size]])
        return len(order) / max(time.perf_counter() - start, 1e-9)
    finally:
        torch.set_num_threads(threads)


def _measure_steps(
    mcfg: ModelConfig, images: np.ndarray, labels: np.ndarray, task: str, n_classes: int, device: torch.device, *, channels_last: bool,
    predicted: tuple[int, ...] = (),
) -> dict:
    """Peak memory and images/s of training steps on a real batch, built as `train_fold` builds them, then of the
    evaluation pass (`predict_logits`, as `_run_epoch` calls it: the eval model, default batch, TTA) with the
    optimizer state still held, as in the real job. `peak_bytes` is the larger of the two phases."""
    measured = mcfg.model_copy(update={"pretrained": False, "weights": None, "channels_last": channels_last, "compile": False})
    batch = mcfg.batch_size
    rows = np.resize(np.arange(len(images)), batch)  # a real batch (repeated images when the data is smaller)
    x_cpu = torch.from_numpy(np.ascontiguousarray(images[rows]))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(labels[rows]))
    _warm_up(measured, images, n_classes, device)
    gc.collect()
    meter = _PeakMeter(device)
    trainer = _build_measured_trainer(measured, n_classes, device, task, labels)
    model = trainer.model
    n_params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # weights + gradients + AdamW's two moments (+ the EMA copy): what stays whatever the batch
    fixed = param_bytes * (4 + (1 if trainer.ema is not None else 0))
    step = _real_step(trainer, x_cpu, y, n_classes, task)

    trainer.step_model.train()
    first_s, timed, train_rate = _time_steps(step, batch, device)
    train_peak = meter.peak()
    meter.restart_peak()
    infer_rate = _inference_rate(trainer.eval_model, images, measured, device, predicted)
    predict_peak = meter.peak()
    peak = max(train_peak, predict_peak)  # the two phases follow each other: the job's peak is the higher one
    model.train()
    return {"params": int(n_params), "peak_bytes": int(peak), "train_peak_bytes": int(train_peak), "predict_peak_bytes": int(predict_peak),
            "fixed_bytes": int(fixed), "warmup_steps_s": first_s, "timed_steps": timed,
            "train_images_per_s": train_rate, "inference_images_per_s": infer_rate}


def _build_measured_trainer(mcfg: ModelConfig, n_classes: int, device: torch.device, task: str, labels: np.ndarray) -> Trainer:
    """The job's trainer, built by the training core's own functions (`build_model`, `build_trainer`), at the first
    epoch that trains every weight (after `freeze_epochs`: the step whose gradients and memory are the largest)."""
    trainer = build_trainer(
        mcfg, model=build_model(mcfg, n_classes, device, init_seed=0), device=device, task=task, train_labels=labels,
        optimizer_steps_per_epoch=1,
    )
    trainer.start_epoch(mcfg.freeze_epochs)
    return trainer


def _real_step(trainer: Trainer, x_cpu: torch.Tensor, y: torch.Tensor, n_classes: int, task: str):
    """The training step `kit train` runs (`Trainer.train_step`: mixup/cutmix, autocast, accumulation, clipping,
    GradScaler, EMA, schedule), called as `Trainer.train_epoch` calls it: the optimizer steps every
    `grad_accum_steps` calls."""
    mixer = make_mixer(trainer.mcfg, n_classes, task, 0)
    accum, calls = trainer.mcfg.grad_accum_steps, iter(range(1, 1 << 62))

    def step() -> None:
        call = next(calls)
        trainer.train_step(x_cpu, y, mixer=mixer, group_size=accum, optimizer_step=call % accum == 0)

    return step


def _time_steps(step, batch: int, device: torch.device) -> tuple[float, int, float]:
    """(seconds of the warm-up steps, steps timed, images/s of the timed ones): at least MIN_TIMED_STEPS, and more
    up to MIN_TIMED_SECONDS, so a fast model is timed over enough steps to be steady."""
    first = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        step()
    _sync(device)
    first_s = time.perf_counter() - first
    start, timed = time.perf_counter(), 0
    while timed < MIN_TIMED_STEPS or (time.perf_counter() - start < MIN_TIMED_SECONDS and timed < MAX_TIMED_STEPS):
        step()
        timed += 1
        _sync(device)
    return first_s, timed, timed * batch / max(time.perf_counter() - start, 1e-9)


def _warm_up(mcfg: ModelConfig, images: np.ndarray, n_classes: int, device: torch.device) -> None:
    """One unmeasured backward and evaluation pass of the variant on two images, so that what a process loads once
    on its first calls (library code paged in, counted by the CPU's resident memory; kernel plans) is not charged
    to the variant measured first: `kit train` pays it once per process, whatever the variant."""
    from kit.training.evaluation import predict_logits

    rows = np.resize(np.arange(len(images)), 2)  # two images: batch norm's training mode needs more than one
    model = build_model(mcfg, n_classes, device, init_seed=0)
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[rows]))[:, None].to(device), mcfg.in_chans, mcfg.channels_last)
    model.train()
    with pick_precision(device, mcfg.amp).autocast():
        logits = model(x)
    logits.float().sum().backward()
    predict_logits(model, images, rows, mcfg, device)
    del model, x, logits
    _sync(device)


def _inference_rate(model, images: np.ndarray, mcfg: ModelConfig, device: torch.device, predicted: tuple[int, ...] = ()) -> float:
    """Images/s of the evaluation pass (held-out and test predictions) through the trainer's own `predict_logits`
    at its default batch (max(batch_size, 64)) with the variant's TTA (hflip, tta_scales): one image is one row
    of logits, whatever the views. The untimed first calls are the evaluation pass's memory peak: a full batch,
    then the last, smaller batch of each of the `predicted` row counts (each new shape holds its own buffers on the CPU)."""
    from kit.training.evaluation import predict_logits

    batch = max(mcfg.batch_size, 64)
    rows = np.arange(batch) % len(images)  # one full evaluation batch (repeated images when fewer)
    predict_logits(model, images, rows, mcfg, device)
    for tail in sorted({n % batch for n in predicted} - {0}):
        predict_logits(model, images, rows[:tail], mcfg, device)
    _sync(device)
    start, runs = time.perf_counter(), 0
    while runs < MIN_TIMED_STEPS or (time.perf_counter() - start < MIN_TIMED_SECONDS / 2 and runs < MAX_TIMED_STEPS):
        predict_logits(model, images, rows, mcfg, device)
        runs += 1
        _sync(device)
    return runs * len(rows) / max(time.perf_counter() - start, 1e-9)


def _compile_probe(device: torch.device) -> dict[str, Any]:
    """Does torch.compile work here at all? A tiny conv net's training step, compiled and timed. torch.compile
    needs a C++ compiler on the CPU and Triton on a GPU; without them it is reported, not attempted."""
    if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return {"works": False, "reason": "no C++ compiler (c++/g++/clang++) on PATH; torch.compile on the CPU needs one"}
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return {"works": False, "reason": "Triton is not installed; torch.compile on a GPU needs it (pip install triton)"}
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2)).to(device)
    x = torch.randn(4, 3, 16, 16, device=device)
    start = time.perf_counter()
    try:
        compiled = torch.compile(net)
        compiled(x).sum().backward()
        _sync(device)
    except Exception as exc:  # inductor raises many types (BackendCompilerFailed, CalledProcessError, ...)
        return {"works": False, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
    finally:
        torch._dynamo.reset()
    return {"works": True, "seconds": time.perf_counter() - start}


def _checks_compile(device: torch.device, compile_check: bool | None, mcfgs: list[ModelConfig]) -> bool:
    """Default: check torch.compile on a GPU, or when a variant asks for it; on the CPU compiling costs
    from 15 s (a tiny net) to many minutes, so it is skipped unless asked (`--compile`)."""
    if compile_check is not None:
        return compile_check
    return device.type == "cuda" or any(m.compile for m in mcfgs)


def _compile_verdict(mcfg, images, labels, n_classes, device, *, task: str, compile_check: bool | None, probe: dict) -> dict[str, Any]:
    """compile = true/false in the variant, whether it works, and (when checked) the compile time and speed-up."""
    wanted = mcfg.compile
    if probe.get("works") is None:
        compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        return {"works": None, "checked": "no", "advice": f"not checked on the CPU (compile = {str(wanted).lower()}): it needs a C++ compiler "
                f"({'found ' + compiler if compiler else 'none found'}) and takes 15 s to minutes; `kit doctor --compile` checks it"}
    if not probe.get("works"):
        return {"works": False, "checked": "probe", "advice": f"torch.compile unavailable: {probe.get('reason')}"
                + ("; set compile = false" if wanted else "; compile = false is right here")}
    if not _checks_compile(device, compile_check, [mcfg]) and compile_check is None:
        return {"works": True, "checked": "probe", "advice": f"toolchain works (a tiny net compiled in {probe['seconds']:.0f} s); this model "
                "was not compiled (compile = false)"}
    compiled_cfg = mcfg.model_copy(update={"compile": True})
    try:
        start = time.perf_counter()
        rate = _compiled_rate(compiled_cfg, images, labels, n_classes, device, task)
        seconds = time.perf_counter() - start
    except Exception as exc:
        return {"works": False, "checked": "model", "advice": f"compiling the model fails ({type(exc).__name__}); set compile = false"}
    finally:
        torch._dynamo.reset()
    return {"works": True, "checked": "model", "compile_seconds": seconds, "compiled_train_images_per_s": rate,
            "advice": f"works: compiled in {seconds:.0f} s, {rate:.0f} img/s compiled"}


def _compiled_rate(mcfg: ModelConfig, images, labels, n_classes, device, task: str) -> float:
    """Images/s of the compiled model's real training step (`Trainer.train_step`), after the calls that compile it."""
    trainer = _build_measured_trainer(mcfg.model_copy(update={"pretrained": False, "weights": None}), n_classes, device, task, labels)
    rows = np.resize(np.arange(len(images)), mcfg.batch_size)
    x = torch.from_numpy(np.ascontiguousarray(images[rows]))[:, None]
    step = _real_step(trainer, x, torch.from_numpy(np.ascontiguousarray(labels[rows])), n_classes, task)
    trainer.step_model.train()
    for _ in range(2):  # the first call compiles
        step()
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return mcfg.batch_size / max(time.perf_counter() - start, 1e-9)


class _PeakMeter:
    """Peak memory from now on: CUDA's allocator counter, or the growth of the process's peak RSS."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = 0
        else:
            gc.collect()
            _release_free_heap()  # memory freed earlier in this process would otherwise be reused unseen by RSS
            _reset_peak_rss()
            self.base = _rss_bytes()

    def restart_peak(self) -> None:
        """Measure the next phase's peak from the memory held now, against the same starting point."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        return max(_peak_rss_bytes() - self.base, 0)


def _proc_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """glibc's malloc_trim(0): hand freed heap pages back to the OS, so new allocations show up as RSS growth."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _rss_bytes() -> int:
    rss = _proc_status("VmRSS")
    return rss if rss is not None else _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return ("torch.cuda.max_memory_allocated over the training steps and then the evaluation pass (weights, gradients, "
                "optimizer state, activations); the job's peak is the higher of the two")
    if _proc_status("VmHWM") is not None and _reset_peak_rss():
        return ("growth of the process's peak RSS (VmHWM, reset via /proc/self/clear_refs after glibc malloc_trim) over building "
                "the model and the training steps, then over the evaluation pass; the job's peak adds the image cache's mapped pages")
    return "growth of getrusage ru_maxrss (cannot be reset: an upper bound)"


def _device_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory), "torch.cuda.get_device_properties"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo (free RAM now)"
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "physical RAM"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _real_images(split, size: int, n: int) -> np.ndarray:
    """Up to `n` training images, decoded and resized as the cache stores them (the cache is not built here)."""
    rows = np.linspace(0, len(split) - 1, num=min(n, len(split))).astype(int)
    return np.stack([resize_gray(split.read_image(int(i)), size) for i in rows])


def _labels_for(source, n: int) -> np.ndarray:
    rows = np.linspace(0, len(source.train) - 1, num=min(n, len(source.train))).astype(int)
    return np.asarray(source.train.labels, dtype=np.uint8)[rows]


def _weights_note(mcfg: ModelConfig) -> str:
    if mcfg.weights:
        local = not str(mcfg.weights).startswith(("http://", "https://"))
        if local and not Path(mcfg.weights).expanduser().is_file():
            return f"weights file {mcfg.weights} not found"
        return f"from {mcfg.weights}"
    if mcfg.pretrained:
        return "timm/Hugging Face hub (network or the local HF cache); measured with random weights of the same shape"
    return "none (pretrained = false)"


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _step_failed(mcfg: ModelConfig, exc: BaseException) -> KitError:
    if _is_out_of_memory(exc):
        return KitError(f"variant '{mcfg.name}': one training step of batch {mcfg.batch_size} at {mcfg.image_size} px runs out of memory "
                        "on this device; lower batch_size (and raise grad_accum_steps) or image_size, then run `kit doctor` again")
    return KitError(f"variant '{mcfg.name}': a training step fails here ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _print(report: dict[str, Any], console: Console) -> None:
    m = report["machine"]
    table = Table(title=f"kit doctor: {m['device']} ({m['device_name']}), {m['cpu_cores']} cores, memory {_gib(m['memory_bytes'])} ({m['memory_source']})")
    table.add_column("check")
    names = list(report["variants"])
    for name in names:
        table.add_column(name)
    rows = [
        ("image size, batch", lambda r: f"{r['image_size']} px, {r['batch_size']} (×{r['grad_accum_steps']} accumulated)"),
        ("autocast", lambda r: r["autocast"] + (" + GradScaler" if r["grad_scaler"] else "")),
        ("channels_last", lambda r: r["channels_last"]),
        ("torch.compile", lambda r: r["compile"]["advice"]),
        ("peak memory (train step, evaluation)", lambda r: r["memory"]["advice"]),
        ("model img/s (train)", lambda r: f"{r['train_images_per_s']:.0f}"),
        ("loader img/s", lambda r: f"{r['loader_images_per_s']:.0f} ({r['num_workers']} workers; {r['loader_images_per_s_per_worker']:.0f} per worker)"),
        ("bound", lambda r: r["feeding"]),
        ("image cache", lambda r: r["disk"]["advice"]),
        ("weights", lambda r: r["weights"]),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(report["variants"][n]) for n in names))
    console.print(table)
    console.print(f"memory: {m['memory_method']}", highlight=False, soft_wrap=True)
