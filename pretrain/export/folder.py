"""The folder an export writes (a Hugging Face model, or with --from-hub a run): refused before anything is written
when it cannot be used, written atomically so a failure leaves nothing behind."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_dir, unwritable_reason
from ..errors import ConfigError, UserError


def usage_error(message: str) -> ConfigError:
    """A usage mistake: the CLI exits 2 for it."""
    return ConfigError(message)


def check_out_dir(out: Path, overwrite: bool, protect: Path | None = None, flag: str = "--out"):
    """Refuse an output that is a file, a non-empty folder without --overwrite, or a folder holding / inside the
    folder being read."""
    if protect is not None:
        o, p = out.resolve(), protect.resolve()
        if o == p or o in p.parents:
            raise usage_error(f"{flag} {out} would replace the run directory {protect} itself; choose another {flag}")
    if out.exists() and not out.is_dir():
        raise usage_error(f"{flag} {out} is a file, not a folder; choose another {flag}")
    if out.is_dir():
        try:
            non_empty = any(out.iterdir())
        except OSError as e:
            raise UserError(f"output directory {out} cannot be read ({e.strerror or e}); choose another "
                            f"{flag}") from None
        if non_empty and not overwrite:
            raise usage_error(f"output directory {out} already exists and is not empty; pass --overwrite to "
                              f"replace it or choose another {flag}")


def write_folder(out: Path, write, flag: str = "--out") -> Path:
    """write(tmp) fills a temporary sibling that then replaces `out` whole."""
    reason = unwritable_reason(out)
    if reason:
        raise UserError(f"output directory {out} is not writable ({reason}); choose another {flag} or fix its "
                        f"permissions")
    try:
        with atomic_dir(out) as tmp:
            write(tmp)
    except OSError as e:
        raise UserError(f"could not write {out} ({e.strerror or type(e).__name__}); free disk space or fix "
                        f"permissions and export again (nothing was left behind)") from None
    return out
