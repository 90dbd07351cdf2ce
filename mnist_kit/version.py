"""mnist-kit's version, the one place it is written (pyproject.toml reads it; run.json, checkpoints and
``mnist-kit --version`` report it)."""

__version__ = "0.1.0"
