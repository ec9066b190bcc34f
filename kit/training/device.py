"""Where a job runs, in which precision, compiled or not: the one place that makes these choices.

Every CUDA-only branch here has a CPU twin that the tests execute: `amp = "bf16"` and
`amp = "fp16"` (with its GradScaler) run autocast on the CPU exactly as on a GPU, channels_last
and torch.compile work on the CPU too. Only the automatic choice (`amp = true`: bf16 where the
GPU supports it, else fp16 + GradScaler, as on Kaggle's T4) depends on the hardware, and it is a
pure function of its inputs (`pick_precision(..., bf16_supported=...)`), tested for both answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from kit.config import ModelConfig


def pick_device() -> torch.device:
    """The job's device: the GPU when one is visible (Ray makes only the job's own GPU visible), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Precision:
    """Autocast dtype of a job (None: full float32) and whether its loss needs a GradScaler."""

    device_type: str
    dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16  # bf16 has float32's exponent range: no underflow, no scaler

    def autocast(self) -> torch.autocast:
        if self.dtype is None:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


_NAMED = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_precision(device: torch.device, amp: bool | str, bf16_supported: bool | None = None) -> Precision:
    """`amp = true`: bf16 on a GPU that has it, fp16 + GradScaler on one that has not (T4), float32 on the CPU.
    `amp = "bf16"` / `"fp16"`: that dtype on any device (on the CPU: the twin of the GPU path).
    `amp = false`: float32 everywhere."""
    if amp is False:
        return Precision(device.type, None)
    if isinstance(amp, str):
        return Precision(device.type, _NAMED[amp])
    if device.type != "cuda":
        return Precision(device.type, None)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return Precision(device.type, torch.bfloat16 if bf16_supported else torch.float16)


def prepare_model(model: nn.Module, mcfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(model, step_module): channels_last applied to `model`; `step_module` is what the training step
    calls: `torch.compile(model)` when `compile = true`, else the model itself. Checkpoints, EMA and
    evaluation keep using `model`, so state dicts never carry the compiled wrapper's key prefix."""
    if mcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not mcfg.compile:
        return model, model
    return model, torch.compile(model, mode=None if mcfg.compile_mode == "default" else mcfg.compile_mode)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels (and cuBLAS workspace) for the duration of one job, restored afterwards.
    Set where the job runs, so a job in a Ray worker process is as reproducible as one in the driver."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at CUDA init
    was_deterministic, was_benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.backends.cudnn.benchmark = was_benchmark


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads for one job (None: leave them). The thread count changes the order of float
    sums on the CPU, so OOF bytes match across executors only for the same threads per job."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
