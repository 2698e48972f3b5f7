"""The few lines a run prints about its config before it starts: per section, only the values that differ from the
defaults it was launched with (a recipe's page of defaults, or `pretrain train`'s), and where the whole resolved
config is saved. The full tree (~110 lines, mostly nulls) is one flag away: `--print-config`.

    changed_values(cfg, baseline) -> {section: {dotted key: value}}      summary_lines(cfg, baseline, saved_at) -> [str]
"""
from __future__ import annotations

import dataclasses

_SHOWN = 60  # a value longer than this (a list of files, a long path) is shortened in the summary


def _flat(value, prefix: str = "") -> dict:
    """{'options': {'a': 1}} -> {'options.a': 1}: nested mappings (objective options) compare key by key; an empty
    one adds no key."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def changed_values(cfg, baseline) -> dict[str, dict]:
    """Per section, the dotted keys whose value in `cfg` differs from `baseline` (both TrainConfig), in the
    sections' field order; sections with no change are left out. A key only one side has counts as changed."""
    ours, theirs = dataclasses.asdict(cfg), dataclasses.asdict(baseline)
    changes = {}
    for section, values in ours.items():
        mine, base = _flat(values), _flat(theirs.get(section, {}))
        diff = {k: v for k, v in mine.items() if k not in base or base[k] != v}
        diff.update({k: None for k in base if k not in mine})  # an objective option the user removed
        if diff:
            changes[section] = diff
    return changes


def _shown(value) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def summary_lines(cfg, baseline, saved_at: str, origin: str = "the recipe's defaults") -> list[str]:
    """`config: <origin>, except` and one indented line per changed section, or one line when nothing changed;
    the last line says where the full config is saved and how to see it without training."""
    changes = changed_values(cfg, baseline)
    if not changes:
        lines = [f"config: {origin}, unchanged"]
    else:
        lines = [f"config: {origin}, except"]
        lines += [f"  {section}: " + ", ".join(f"{key} {_shown(value)}" for key, value in values.items())
                  for section, values in changes.items()]
    lines.append(f"full config: {saved_at} (--print-config prints it without training)")
    return lines
