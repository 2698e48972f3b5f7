"""The model card's lines for a run scored by `pretrain score` (RUN/score/results.json): one per source of minimal
pairs, with the scoring method, so an exported model carries its zero-shot scores."""
from __future__ import annotations

import json
from pathlib import Path

from ..train.run_dir import RunDir


def zero_shot_lines(run_dir) -> list[str]:
    path = Path(run_dir) / RunDir.SCORE / RunDir.FINETUNE_RESULTS
    try:
        report = json.loads(path.read_text())
        sources = report["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [f"zero-shot minimal pairs `{name}` (`pretrain score`, {report.get('method', '?')}): accuracy "
            f"{r['accuracy']:.3f} ± {r['stderr']:.3f} of {r['n']} pairs" for name, r in sources.items()
            if isinstance(r, dict) and r.get("n")]
