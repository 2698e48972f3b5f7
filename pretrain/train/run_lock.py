"""One writer per run directory: the process that writes a run (the main process of a training run) holds an
exclusive lock on RUN/.lock for the life of the run, and a second writer is refused in one line naming the live
process. The lock is the operating system's (flock), so a killed process releases it with its last file
descriptor: a SIGKILLed run never blocks its own --resume. Readers (`pretrain eval`, `export`, `samples`) take no
lock. Where fcntl does not exist (Windows) runs are not locked.

The lock file itself stays (a hidden file --overwrite leaves alone: deleting it while another process waits on it
would let two processes hold two different files); it records who holds it, for the refusal's message.
"""
from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from ..errors import UserError
from .run_dir import RunDir

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None

LOCK_FILE = RunDir.LOCK
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # a filesystem without flock


class RunLock:
    """`RunLock(run_dir).acquire()` takes the lock (making the directory if needed) or raises UserError;
    `record()` writes who holds it;
    `release(discard)` lets it go, and with discard=True also removes the directory it made when nothing else was
    written there (a run refused before it wrote anything leaves nothing behind)."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_FILE
        self._file = None
        self._made_dir = False

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        self._made_dir = not self.dir.exists()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            while True:
                handle = open(self.path, "a+")
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder, pid = _read_holder(self.path)
                    handle.close()
                    self._made_dir = False  # the lock file and its directory are the live run's
                    raise UserError(f"run directory {self.dir} is in use by a live run ({holder}); wait for it to "
                                    f"finish, or stop it (Ctrl-C there or `kill {pid}` saves a checkpoint) and "
                                    f"continue it with --resume, or choose another --run.output_dir") from None
                except OSError as e:
                    if e.errno not in UNSUPPORTED:
                        raise
                    handle.close()
                    print(f"warning: the filesystem of {self.dir} cannot lock files ({e.strerror}); this run does "
                          f"not keep other commands from writing into its directory", file=sys.stderr, flush=True)
                    return self
                if _same_file(handle, self.path):  # not a file another process removed meanwhile
                    break
                handle.close()
        except OSError as e:
            self.release(discard=True)
            raise UserError(f"run directory {self.dir} cannot be locked for writing ({e.strerror or e}); choose "
                            f"another --run.output_dir") from None
        self._file = handle
        return self

    def record(self):
        """Write who holds the lock (pid, host, start, command) for a refused writer's message; called once the run
        has passed every check (its checkpoint loaded), so a refused command changes nothing there."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                     "command": shlex.join(sys.argv)}))
        self._file.flush()

    def release(self, discard: bool = False):
        if discard and self._made_dir and self._file is not None:  # ours: the lock file in the directory we made
            try:
                if [p.name for p in self.dir.iterdir()] == [LOCK_FILE]:
                    self.path.unlink()
                    self.dir.rmdir()
            except OSError:
                pass
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None
        self._made_dir = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _alive(info: dict) -> bool:
    """Whether the recorded holder may still run: another host cannot be asked; here, its pid must exist."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):
        return True
    return True


def _read_holder(path: Path) -> tuple[str, str]:
    """('pid N on HOST since DATE HH:MM: COMMAND', 'N') from the lock file (what is known of it)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info or not _alive(info):  # the holder has not recorded itself yet
        return "another process, still starting", "PID"
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["started"])) if info.get("started") else "?"
    command = " ".join(str(info.get("command", "?")).split())
    command = command if len(command) <= 160 else command[:157] + "..."
    return f"pid {info['pid']} on {info.get('host', '?')} since {started}: {command}", str(info["pid"])
