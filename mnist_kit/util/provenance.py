"""When and how a record was made: the timestamps and the command line that run.json, checkpoint manifests,
prepared-data metadata, exports and sweeps write down, each in one format."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def now() -> str:
    """Local time with its UTC offset, ISO 8601: ``2026-11-23T09:36:17+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def stamp() -> str:
    """Local time for folder names: ``20261123-093617``."""
    return time.strftime("%Y%m%d-%H%M%S")


def command() -> list[str]:
    """The command line as the user typed it (the program's name without its folder)."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
