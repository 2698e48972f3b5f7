"""Where metrics go: `metrics.jsonl` in the run directory (every step), Accelerate trackers (wandb / TensorBoard),
a tqdm progress bar on the main process; and the peak FLOP/s that MFU is measured against."""
from __future__ import annotations

import json
import math
import netrc
import os
import time
from functools import lru_cache
from pathlib import Path

import torch

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
    the best of the products timed over at least `window_s`. On a shared machine the rate swings by a third for
    seconds at a time (best of 8 products of 1024: 67 to 108 GFLOP/s in six runs here); the trainer also raises
    this peak to any higher rate the run itself reaches, so MFU never reads above 100%."""
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


class MetricsLog:
    """Append-only JSON lines; `truncate_after(step)` drops rows a killed run logged after its last checkpoint."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._file = None

    def truncate_after(self, step: int):
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        os.replace(tmp, self.path)

    def write(self, row: dict):
        if not self.enabled:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")
        self._file.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
        self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
        return bool(auth and auth[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def tracker_setup(report_to: str, run_dir: Path, run_name: str, is_main: bool) -> tuple[str | None, dict]:
    """(log_with for Accelerator, init_kwargs for init_trackers). wandb without an API key runs offline."""
    if report_to == "none":
        return None, {}
    if report_to == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
        if os.environ.get("WANDB_MODE") != "offline" and not wandb_has_credentials():
            os.environ["WANDB_MODE"] = "offline"
            if is_main:
                print(f"wandb: no API key found, logging offline; upload later with: "
                      f"wandb sync {run_dir / 'wandb'}/offline-run-*")
        return "wandb", {"wandb": {"dir": str(run_dir), "name": run_name, "mode": os.environ.get("WANDB_MODE")}}
    return report_to, {}


class Progress:
    """tqdm bar on the main process: loss, tokens/s, MFU, ETA (from the budget's progress fraction)."""

    def __init__(self, enabled: bool, initial_fraction: float = 0.0):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=1000, initial=int(1000 * initial_fraction), dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {postfix}", desc="train", mininterval=0.5)
        self.last = 0
        self.start_fraction, self.start_time = initial_fraction, time.perf_counter()

    def update(self, fraction: float, step: int, loss: float, tokens_per_s: float, mfu: float):
        if self.bar is None:
            return
        now = int(1000 * min(fraction, 1.0))
        if now > self.bar.n:
            self.bar.update(now - self.bar.n)
        done = fraction - self.start_fraction
        spent = time.perf_counter() - self.start_time
        eta = spent * (1 - fraction) / done if done > 0 else float("nan")
        self.bar.set_postfix_str(f"step {step} loss {loss:.4f} tok/s {tokens_per_s:,.0f} "
                                 f"mfu {100 * mfu:.1f}% eta {_fmt_time(eta)}", refresh=False)

    def write(self, message: str):
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
