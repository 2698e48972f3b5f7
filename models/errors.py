"""One exception type for user mistakes, defined at the bottom so every layer can raise it: the CLI prints its
message as one clear line instead of a traceback."""


class UserError(ValueError):
    """A problem the user can fix: the message names the problem and the fix, in one line."""
