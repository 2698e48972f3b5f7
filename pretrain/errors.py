"""User mistakes: models.errors.UserError (defined at the bottom, so every layer raises the same type) and its
configuration subclass, for which the CLI exits with status 2."""
from models.errors import UserError


class ConfigError(UserError):
    """A usage mistake in the configuration or the command line: the CLI exits with status 2."""


class Stopped(Exception):
    """The run stopped when asked to (SIGTERM, a first Ctrl-C) after writing a complete checkpoint: it resumes with
    --resume. The CLI exits with EXIT_STATUS (EX_TEMPFAIL: try again later)."""
    EXIT_STATUS = 75

    def __init__(self, signal_name: str, step: int, checkpoint, run_dir):
        super().__init__(f"by {signal_name} after step {step}; complete checkpoint {checkpoint}")
        self.signal_name, self.step, self.checkpoint, self.run_dir = signal_name, step, checkpoint, run_dir


__all__ = ["UserError", "ConfigError", "Stopped"]
