"""Launch script of tests/test_multinode.py: runs `pretrain ARGS` (pretrain.cli) in this process and, in a process
of global rank > 0, appends to LOG one line per attempt to write under RUN_DIR (Python audit events: a file opened
for writing, a directory made, a rename, a removal) -- only global rank 0 may write the run directory.

    torchrun ... tests/rank_write_guard.py LOG RUN_DIR train --run.output_dir RUN_DIR ...
"""
import os
import runpy
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir": 0, "os.rename": 0, "os.remove": 0, "os.rmdir": 0, "shutil.rmtree": 0, "os.symlink": 1,
               "os.link": 1, "os.truncate": 0, "os.chmod": 0, "os.utime": 0, "shutil.copyfile": 1,
               "shutil.move": 1}


def guard(log: str, run_dir: str):
    run_dir = os.path.realpath(run_dir)

    def under_run_dir(path) -> bool:
        if isinstance(path, int):  # a file descriptor: its opening was seen already
            return False
        path = os.path.realpath(os.fsdecode(path))
        return path == run_dir or path.startswith(run_dir + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            targets = [path] if writes else []
        elif event in PATH_EVENTS:
            targets = list(args[:2]) if event in ("os.rename", "shutil.move") else [args[PATH_EVENTS[event]]]
        else:
            return
        for target in targets:
            if under_run_dir(target):
                with open(log, "a") as f:  # outside the run directory
                    f.write(f"rank {os.environ.get('RANK')}: {event} {os.fsdecode(target)}\n")

    sys.addaudithook(hook)


if __name__ == "__main__":
    log_path, watched, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if os.environ.get("RANK", "0") != "0":
        guard(log_path, watched)
    sys.argv = ["pretrain", *args]
    runpy.run_module("pretrain.cli", run_name="__main__", alter_sys=True)
