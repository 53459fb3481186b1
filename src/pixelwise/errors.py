"""Errors that reach the user as one clear line instead of a traceback.

Every failure caused by the user's input (a file, a config value, a flag) raises a
`PixelwiseError` subclass. The command line prints `error: <message>` and exits with a
non-zero status; library callers can catch them by type.
"""

from __future__ import annotations

from pathlib import Path


class PixelwiseError(Exception):
    """Base class: a problem the user can fix, described in one message."""

    exit_code = 2


class DataError(PixelwiseError):
    """A data file or folder is unreadable or inconsistent. Names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(PixelwiseError):
    """A config key, value or command-line override is invalid."""


class TaskError(PixelwiseError, ValueError):
    """Logits or targets do not fit the task (shape, range, a softmax applied too early...)."""


class CheckpointError(PixelwiseError):
    """A checkpoint is missing, corrupt, or unsafe to load."""


class WeightsError(PixelwiseError):
    """Pretrained weights are not in the cache, fail their digest, or do not fit the encoder."""
