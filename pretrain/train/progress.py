"""The progress bar of the main process: loss, tokens/s, MFU and the ETA from the budget's progress."""
from __future__ import annotations

import math
import time

from tqdm.auto import tqdm


class Progress:
    """tqdm bar on the main process: loss, tokens/s, MFU, ETA (from the budget's progress fraction)."""

    def __init__(self, enabled: bool, initial_fraction: float = 0.0):
        self.bar = None
        if enabled:
            # our text in {desc}: tqdm writes {postfix} as ", " + postfix
            self.bar = tqdm(total=1000, initial=int(1000 * initial_fraction), dynamic_ncols=True,
                            bar_format="train: {percentage:3.0f}%|{bar}| {desc}", mininterval=0.5)
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
        self.bar.set_description_str(f"step {step} loss {loss:.4f} tok/s {tokens_per_s:,.0f} "
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
