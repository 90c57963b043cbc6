"""Error types of ddcore.

Two families matter to users:

* :class:`UserError` — the input was wrong (a recipe key, a file, a missing plugin). The CLI prints its
  one-line message and exits with status 2, without a traceback (``--debug`` shows it).
* everything else — a bug. The CLI exits with status 1 and shows the traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "PluginError", "RecipeError", "UserError"]


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2.

    The message should name *where* (file, recipe key path, plugin) and *what was expected*.
    """

    exit_code = 2


class RecipeError(UserError):
    """A recipe is invalid: unknown key, wrong type, unknown component, bad value."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.detail = message
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(UserError):
    """A plugin could not be loaded, is missing, or registers a name twice."""


class DataError(UserError):
    """A dataset is missing, unreadable or of an unexpected layout."""


class RunDiverged(UserError):
    """A run produced non-finite numbers (loss or synthetic set): one line, exit status 1, nothing good overwritten."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; the message says what was saved. Exit status 128 + the signal number.

    A ``KeyboardInterrupt`` (not a :class:`UserError`), so code running a run as a library (a test session, a
    notebook) stops as it would on the signal, instead of catching it as an ordinary error.
    """

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
