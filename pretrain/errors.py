"""User mistakes: models.errors.UserError (defined at the bottom, so every layer raises the same type) and its
configuration subclass, for which the CLI exits with status 2."""
from models.errors import UserError


class ConfigError(UserError):
    """A usage mistake in the configuration or the command line: the CLI exits with status 2."""


__all__ = ["UserError", "ConfigError"]
