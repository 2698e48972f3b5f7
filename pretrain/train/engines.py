"""What the toolkit adds to the distributed engines Accelerate launches (recipes/accelerate/*.yaml).

Accelerate selects FSDP only on accelerator devices: launched with an FSDP config on a machine without one, it
quietly trains plain data parallel. torch's FSDP2 itself runs over gloo on CPU, and that is how this toolkit tests
its sharded path without a GPU, so such a run is switched to FSDP here instead of silently running something else.
"""
from __future__ import annotations

import importlib.util
import os

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from ..errors import ConfigError


def check_deepspeed(has_accelerator: bool) -> None:
    """Refuse, in one line, a DeepSpeed launch that could not run as asked: Accelerate starts DeepSpeed on
    accelerators only (on CPU it would quietly train plain data parallel), and only when the package is there."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return
    if not has_accelerator:
        raise ConfigError("DeepSpeed runs on GPUs only (Accelerate does not start it on CPU); on this machine launch "
                          "with recipes/accelerate/fsdp.yaml (FSDP2 shards parameters, gradients and optimizer "
                          "state, and runs on CPU) or multi_gpu.yaml")
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("DeepSpeed is not installed: pip install deepspeed, or launch with "
                          "recipes/accelerate/fsdp.yaml (FSDP2, no extra package)")


def launched_with_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def fsdp_on_cpu(accelerator) -> None:
    """A multi-process CPU run launched with an FSDP config becomes FSDP (FSDP2 over gloo) as it would on GPUs."""
    if not launched_with_fsdp() or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # from the environment `accelerate launch` set from the config
    if plugin.fsdp_version != 2:
        raise ConfigError("FSDP on CPU needs fsdp_version: 2 in the accelerate config (FSDP1 runs on GPUs only); "
                          "see recipes/accelerate/fsdp.yaml")
    state = AcceleratorState()
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    # Accelerate keeps the engine in the state shared by every Accelerator of the process
    PartialState._shared_state["distributed_type"] = state.distributed_type = DistributedType.FSDP


def engine_note(accelerator) -> str:
    """" (FSDP)" or " (DeepSpeed)" in the log line that says how a run trains; nothing for plain data parallel."""
    kind = accelerator.distributed_type
    return {DistributedType.FSDP: " (FSDP)", DistributedType.DEEPSPEED: " (DeepSpeed)"}.get(kind, "")
