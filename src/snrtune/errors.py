"""The one exception type a user sees as a one-line error."""


class SnrtuneError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2."""
