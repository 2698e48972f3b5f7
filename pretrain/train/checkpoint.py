"""Checkpoints written atomically: `save_state` into `checkpoints/.tmp-step_N`, then `trainer_state.json`, fsync,
rename to `step_N`; keep the last K. A half-written checkpoint is never picked: only `step_N` directories holding a
`trainer_state.json` count. Weights load only from safetensors or `torch.load(weights_only=True)`.

accelerate's save_state writes model.safetensors (the model) and model_1.safetensors (the objective's own
parameters, when it has any), the optimizer and the RNG state. Under plain data parallelism only the main process
calls it, so only global rank 0 writes the run directory (on several nodes it is shared); the other processes'
RNG states are not needed to resume: the trainer reseeds every step from (seed, step, rank)."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from pathlib import Path

from accelerate.utils import DistributedType

from ..atomic import publish, write_json_atomic
from ..errors import UserError

STATE_FILE = "trainer_state.json"
SHARDED_MODEL = "pytorch_model_fsdp_0"  # accelerate's FSDP checkpoint of the model: torch.distributed.checkpoint shards
STEP_DIR = re.compile(r"^step_(\d+)$")


def fault_point(point: str, step: int, rank: int):
    """A test hook (tests/test_reliability.py, benchmarks/chaos.py): with PRETRAIN_FAULT=POINT:ACTION set, do ACTION
    at POINT -- "sleep=S" (a window to kill the process in), "exit=CODE" (the process dies), "enospc" / "eio" (an
    OSError, as from a full or failing disk). PRETRAIN_FAULT_STEP / PRETRAIN_FAULT_RANK restrict it to one step /
    rank. Points: "save" (inside a checkpoint save, files written, not yet renamed), "step" (after an optimizer
    step). Unset -- always, outside tests -- it costs one dictionary lookup."""
    spec = os.environ.get("PRETRAIN_FAULT")
    if not spec:
        return
    where, _, action = spec.partition(":")
    if where != point or os.environ.get("PRETRAIN_FAULT_STEP", str(step)) != str(step) or \
            os.environ.get("PRETRAIN_FAULT_RANK", str(rank)) != str(rank):
        return
    action, _, arg = action.partition("=")
    if action == "sleep":
        time.sleep(float(arg))
    elif action == "exit":
        os._exit(int(arg or 1))
    elif action in ("enospc", "eio"):
        code = errno.ENOSPC if action == "enospc" else errno.EIO
        raise OSError(code, os.strerror(code))


def replicated(accelerator) -> bool:
    """One process, or plain data parallelism (DDP): every process holds the same weights and optimizer state, so
    the main process's save_state is the whole checkpoint (FSDP and DeepSpeed shard it: every process saves)."""
    kind = accelerator.distributed_type
    return kind == DistributedType.NO or kind.value.startswith("MULTI_")


class CheckpointManager:
    def __init__(self, directory: Path, keep_last: int = 2):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def complete(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for entry in self.dir.iterdir():
            m = STEP_DIR.match(entry.name)
            if m and entry.is_dir() and (entry / STATE_FILE).is_file():
                found.append((int(m.group(1)), entry))
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1][1] if found else None

    def save(self, accelerator, step: int, state: dict) -> Path:
        """Every process calls this; the main process writes (and, when the state is sharded, every process its
        shard) and finalizes."""
        final = self.dir / f"step_{step}"
        tmp = self.dir / f".tmp-step_{step}"
        if accelerator.is_main_process:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        try:
            if accelerator.is_main_process or not replicated(accelerator):
                accelerator.save_state(str(tmp), safe_serialization=True)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                write_json_atomic(tmp / STATE_FILE, state)
                fault_point("save", step, accelerator.process_index)
                publish(tmp, final)  # replaces step_N when a resumed run re-saves the step it stopped at
                self.prune()
        except (OSError, RuntimeError) as e:  # disk full, permissions; torch.save reports them as RuntimeError
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:200]
            raise UserError(f"could not write checkpoint step {step} in {self.dir}: {reason}; "
                            f"free disk space or fix permissions, then resume with --resume "
                            f"(the previous checkpoint is intact)") from None
        accelerator.wait_for_everyone()
        return final

    def prune(self):
        found = self.complete()
        for _, path in found[: max(0, len(found) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)
        for entry in self.dir.glob(".*"):  # leftovers of a killed save
            shutil.rmtree(entry, ignore_errors=True)

    @staticmethod
    def read_state(path: Path) -> dict:
        try:
            return json.loads((Path(path) / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"checkpoint {path} is unreadable ({e}); delete it to resume from an older one") from None

    @staticmethod
    def load(accelerator, path: Path):
        sharded, fsdp = (Path(path) / SHARDED_MODEL).is_dir(), accelerator.distributed_type == DistributedType.FSDP
        if sharded != fsdp:
            saved, now = ("FSDP", "without it") if sharded else ("without FSDP", "under FSDP")
            raise UserError(f"checkpoint {path} was saved {saved} and this run is launched {now}; resume with "
                            f"the launch config it was saved with (recipes/accelerate/*.yaml; any number of "
                            f"processes), or start a new run from it with --model.init_from {path}")
        try:
            accelerator.load_state(str(path), load_kwargs={"weights_only": True})
        except Exception as e:  # corrupted / truncated / pickled-with-code files all end here
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {msg[:200]}); "
                            f"delete that directory to resume from an older checkpoint") from None
