"""metrics.jsonl: one JSON line per training step and per evaluation, appended as the run goes, cut back to the
last checkpoint on resume, and read back (a line cut by a kill is skipped)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..atomic import write_text_atomic

BOOKKEEPING = ("split", "step", "tokens", "elapsed", "epoch")


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    """The rows of a metrics.jsonl, optionally only those with step <= N."""
    path = Path(path)
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and (up_to_step is None or row.get("step", 0) <= up_to_step):
            rows.append(row)
    return rows


def val_metrics(rows: list[dict], step: int | None = None) -> dict:
    """The metrics of the last validation row (at `step`, when given), without bookkeeping keys."""
    for row in reversed(rows):
        if row.get("split") == "val" and (step is None or row.get("step") == step):
            return {k: v for k, v in row.items() if k not in BOOKKEEPING
                    and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
    return {}


class MetricsLog:
    """Append-only JSON lines; `truncate_after(step)` drops rows a killed run logged after its last checkpoint."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._file = None

    def truncate_after(self, step: int):
        if not self.enabled or not self.path.exists():
            return
        keep = [json.dumps(row) for row in read_metrics(self.path, up_to_step=step)]
        write_text_atomic(self.path, "".join(f"{line}\n" for line in keep))

    def rows(self) -> list[dict]:
        return read_metrics(self.path) if self.enabled else []

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
