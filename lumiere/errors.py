"""The errors the library raises for things a caller can fix (bad arguments, input files, checkpoints).

Front ends (the CLI, the app) catch :class:`LumiereError` and show its one-line message; anything
else is a bug and keeps its traceback. Each class also derives from the built-in exception it
refines, so ``except ValueError`` / ``except FileNotFoundError`` code keeps working.
"""
from __future__ import annotations


class LumiereError(Exception):
    """Base class: the message says what to change."""


class InputError(LumiereError, ValueError):
    """An argument or input (image, video, mask, option value) is invalid."""


class InputTypeError(InputError, TypeError):
    """An argument has the wrong type (e.g. a prompt that is not a string)."""


class MissingFileError(LumiereError, FileNotFoundError):
    """A file or directory the caller named does not exist (the message names it)."""


class CheckpointError(LumiereError, ValueError):
    """A checkpoint file is missing or unreadable (the message names the file)."""
