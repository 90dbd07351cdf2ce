"""The errors a user can act on. The CLI prints their message as one ``Error:`` line, without a traceback,
and exits with ``exit_code``; from Python they are raised with the same one-line message. Every module
imports them from here (``mnist_kit`` re-exports them)."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, no network).

    The CLI prints its message without a traceback and exits with ``exit_code``.
    """

    exit_code = 1


class UsageError(UserError):
    """An option or argument given a value the command does not take (click's usage-error code, 2)."""

    exit_code = 2


class ConfigError(UserError):
    """An invalid config or override (click's usage-error code). ``problems`` lists what is wrong, one
    item each, for callers that report them their own way (``mnist-kit sweep``)."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]
