#!/usr/bin/env python
"""Regenerate the config reference table in README.md from mnist_kit/config.py (tests check they agree)."""

import re
from pathlib import Path

from mnist_kit import config

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
new, n = re.subn(r"(<!-- config-reference.*?-->\n).*?(\n<!-- /config-reference -->)",
                 lambda m: m.group(1) + config.reference_markdown() + m.group(2), text, flags=re.S)
assert n == 1, "config-reference markers not found in README.md"
readme.write_text(new)
