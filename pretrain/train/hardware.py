"""What the hardware can do: native bf16 on this CPU, the precision `mixed_precision: auto` picks, the attention
kernel `attention_kernel: auto` picks, and the peak FLOP/s that MFU is measured against."""
from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

import torch

from models import ModelConfig
from models.flex import unsupported

from ..errors import ConfigError

# dense bf16 peak of known accelerators (FLOP/s, without sparsity)
KNOWN_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
               "V100": 125e12, "T4": 65e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@lru_cache(maxsize=None)
def measured_matmul_flops(device: str, dtype: str, n: int = 1024, window_s: float = 1.0) -> float:
    """This device's dense matmul rate, measured once per process (the MFU denominator where no peak is known):
    the best of the products timed over at least `window_s` (on a shared machine the rate swings for seconds at a
    time); the trainer also raises this peak to any higher rate the run itself reaches, so MFU never reads above
    100%."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float16 if dtype == "fp16" else torch.float32
    a = torch.randn(n, n, dtype=dt, device=device)
    b = torch.randn(n, n, dtype=dt, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best, count, began = float("inf"), 0, time.perf_counter()
    while count < 8 or time.perf_counter() - began < window_s:
        start = time.perf_counter()
        a @ b
        sync()
        best, count = min(best, time.perf_counter() - start), count + 1
    return 2 * n ** 3 / max(best, 1e-9)


def peak_flops(device: torch.device, precision: str, override: float | None = None) -> float:
    if override:
        return float(override)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in KNOWN_PEAKS.items():
            if key in name:
                return value if precision in ("bf16", "fp16") else value / 2  # tf32 is half the bf16 rate
    return measured_matmul_flops(str(device), precision)


CUBLAS_WORKSPACE = ":4096:8"  # the fixed cuBLAS workspace that CUDA >= 10.2 needs for reproducible GEMMs


def apply_determinism(on: bool) -> None:
    """run.deterministic: torch uses only deterministic kernels (one without a deterministic version raises,
    naming itself) and cuBLAS the fixed workspace it needs for them; set before the first CUDA GEMM. Off leaves
    torch as it is (its default: fastest kernels). The CPU path in fp32 is reproducible either way."""
    if not on:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def resolve_precision(choice: str) -> str:
    """auto: bf16 on GPUs that support it (fp16 with loss scaling otherwise), bf16 on CPUs with native bf16,
    fp32 ("no") elsewhere."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def attention_kernel(choice: str, document_masking: bool, model_cfg: ModelConfig, device_type: str,
                     compiled: bool) -> str:
    """'flex' or 'sdpa' for a run's document masks (choice: run.attention_kernel). auto: FlexAttention wherever
    it can train, since it skips the empty tiles of a document mask; explicit flex where it cannot is refused."""
    if choice == "flex" and not document_masking:
        raise ConfigError("run.attention_kernel flex computes document masks only; set objective.document_masking "
                          "true or run.attention_kernel auto")
    if choice == "sdpa" or not document_masking:
        return "sdpa"
    reason = unsupported(model_cfg, device_type, compiled)
    if choice == "flex" and reason:
        raise ConfigError(f"run.attention_kernel flex: {reason}; or set run.attention_kernel auto (SDPA here)")
    return "sdpa" if reason else "flex"
