"""The ``mnist-kit`` command: a thin layer over ``mnist_kit.api``. Each command parses its options, calls the
API function of the same name and prints what it returns; nothing imports this package.

    group.py     the group and how a command ends (one ``Error:`` line, exit codes, Ctrl-C)
    options.py   options shared by several commands (--config, -o, --print-config, --root, --run, ...)
    training.py  prepare, train, resume, sweep
    using.py     eval, export, predict, serve
    looking.py   configs, runs, board
    searching.py tune

User errors (``mnist_kit.UserError``) end in one line on stderr and a non-zero exit code, without a
traceback; config errors exit with 2. Heavy modules (paddle) are imported only by the API functions that need
them. May import: anything.
"""

from mnist_kit.cli import looking, searching, training, using  # noqa: F401  (they add their commands to the group)
from mnist_kit.cli.group import cli, main

__all__ = ["cli", "main"]
