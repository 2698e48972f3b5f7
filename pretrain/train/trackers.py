"""Accelerate trackers: wandb (offline when there is no API key) or TensorBoard, and the config they log."""
from __future__ import annotations

import dataclasses
import netrc
import os
from pathlib import Path

from .run_dir import RunDir


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
                      f"wandb sync {run_dir / RunDir.WANDB}/offline-run-*")
        return "wandb", {"wandb": {"dir": str(run_dir), "name": run_name, "mode": os.environ.get("WANDB_MODE")}}
    return report_to, {}


def flat_config(cfg) -> dict:
    """The config tree as section.key -> scalar, for the tracker's run config."""
    flat = {}
    for section, values in dataclasses.asdict(cfg).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
