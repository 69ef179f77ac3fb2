"""Errors that end a run with one line instead of a traceback (the CLI prints them, exit 1)."""


class RunError(RuntimeError):
    """A run cannot go on; the message says why in one line, naming the file, key or tensor."""
