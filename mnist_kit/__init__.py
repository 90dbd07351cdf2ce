"""mnist-kit: end-to-end MNIST training on the command line, built on PaddlePaddle."""

__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, no network).

    The CLI prints its message without a traceback and exits with ``exit_code``.
    """

    exit_code = 1


class ConfigError(UserError):
    """An invalid config or override (click's usage-error code)."""

    exit_code = 2


def wrapped_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is Paddle's wrapping of a KeyboardInterrupt (Ctrl-C) that arrived while Paddle's C++
    autograd was running Python code (an OSError whose message names the KeyboardInterrupt)."""
    return isinstance(e, OSError) and "KeyboardInterrupt" in str(e)
