"""One exception hierarchy for everything a user can cause.

Every error carries a one-sentence message that says what to do and the process exit
code the CLI uses; third-party exceptions are translated into these at the edge
(see httpx's `_exceptions.py` and click's `exceptions.py` for the model).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class VidstyleError(Exception):
    """Base class: `str(err)` is the one sentence shown to the user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserInputError(VidstyleError):
    """Bad file, bad option, bad preset value: fixable by the user."""

    exit_code = 2


class MediaError(UserInputError):
    """A video, image or audio file that cannot be read as one."""


class SpecError(UserInputError):
    """A JobSpec / preset / override that fails validation."""


class ModelNotFoundError(UserInputError):
    """A checkpoint, LoRA or ControlNet model that does not exist where named."""


class OutputError(VidstyleError):
    """An output path that cannot be written (permissions, disk full)."""

    exit_code = 3


class PreflightError(VidstyleError):
    """A backend cannot render this spec (server down, model missing on it, ...)."""

    exit_code = 4


class BackendError(VidstyleError):
    """A backend call failed while rendering a frame."""

    exit_code = 5


class JobStateError(VidstyleError):
    """A job folder that is missing, locked by another run, or inconsistent."""

    exit_code = 6


class Cancelled(VidstyleError):
    """The user cancelled; the job stays resumable."""

    exit_code = 130


def run_command(command: Callable[[], int]) -> int:
    """Run a CLI command: user errors print one sentence and give their exit code, never a traceback."""
    try:
        return int(command() or 0)
    except Cancelled as err:
        print(f"\ncancelled: {err}", file=sys.stderr)
        return err.exit_code
    except VidstyleError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 130
