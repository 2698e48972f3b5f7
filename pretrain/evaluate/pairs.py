"""Sources of minimal pairs, each a list of Pair(good, bad, group) under a name.

    load_source("blimp/*.jsonl")            # BLiMP's JSONL (sentence_good, sentence_bad; UID gives the group)
    load_source("pairs.csv", "ok", "ko")    # csv / jsonl with two named columns (globs too)

The built-in grammar set (grammar.py) and pairs from a corpus (perturb.py) make the same Pair.

Everything is read and checked before any model runs: a file without the two columns or with no pair is refused in
one line naming it.
"""
from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

GOOD, BAD = "sentence_good", "sentence_bad"  # BLiMP's columns, the default names
GROUP_KEYS = ("UID", "linguistics_term", "field", "phenomenon")  # the first present names a pair's group


@dataclass(frozen=True)
class Pair:
    good: str
    bad: str
    group: str = "all"


def _rows(path: Path) -> list[dict]:
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if path.suffix in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise UserError(f"cannot read pairs file {path} ({type(e).__name__}: {str(e)[:120]}); pass a UTF-8 .csv "
                        f"or .jsonl file") from None
    raise UserError(f"pairs file {path} is neither .csv nor .jsonl; convert it to one of them")


def read_pairs_file(path: Path, good: str = GOOD, bad: str = BAD) -> list[Pair]:
    rows = _rows(path)
    if not rows:
        raise UserError(f"pairs file {path} holds no pairs; pass a file with {good!r} and {bad!r} columns")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or good not in row or bad not in row:
            have = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise UserError(f"pairs file {path} row {number} has no {good!r} and {bad!r} columns (it has {have}); "
                            f"name them with --good-column / --bad-column")
    out = []
    for row in rows:
        group = next((str(row[k]) for k in GROUP_KEYS if row.get(k)), "all")
        out.append(Pair(str(row[good] or "").strip(), str(row[bad] or "").strip(), group))
    return out


def load_source(source: str, good: str = GOOD, bad: str = BAD) -> dict[str, list[Pair]]:
    """name -> pairs of every file a path / glob names (one source per file)."""
    paths = sorted(Path(p) for p in glob.glob(source)) if any(c in source for c in "*?[") else [Path(source)]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise UserError(f"--pairs {source}: no such file; pass 'grammar', 'corpus', a .csv / .jsonl file or a glob "
                        f"matching some")
    return {str(p): read_pairs_file(p, good, bad) for p in paths}
