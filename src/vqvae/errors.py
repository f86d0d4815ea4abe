"""Errors a user can cause (bad input, bad options, bad files).

The CLI turns any ``VQVAEError`` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class VQVAEError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class ConfigError(VQVAEError, ValueError):
    """An unknown key, a wrong type or an invalid value in a configuration."""


class DataError(VQVAEError, ValueError):
    """A data file or folder that is missing, malformed or inconsistent. Names the file."""


class CheckpointError(VQVAEError, ValueError):
    """A model folder that is missing, malformed or of another architecture."""


class WriteError(VQVAEError):
    """A file could not be written: a full disk, a quota, a read-only or unwritable folder.
    Names the file the write was for (not a temporary file beside it); ``errno`` says why."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
