"""One exception type for user mistakes, so the CLI can print one clear line instead of a traceback."""


class UserError(ValueError):
    """A problem the user can fix: the message names the problem and the fix, in one line."""
