"""Config files: reading YAML (strictly: ``util/readback``), ``-o section.key=value`` overrides, the shipped
configs by name (``locate``), ``load`` (a file or name, overrides, validated), and writing a config as YAML
(``dump``) as a run's config.yaml and ``--print-config`` show it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from mnist_kit.config.checks import validate
from mnist_kit.config.coerce import clip, excerpt, suggest
from mnist_kit.config.schema import SCHEMA, Config
from mnist_kit.errors import ConfigError
from mnist_kit.util import readback

MAX_DEPTH = readback.MAX_YAML_DEPTH  # nesting of a config: sections, keys, lists
MAX_FILE = readback.MAX_YAML  # bytes of a config file


TUNE = "tune"  # a config file's section for mnist-kit tune, beside the config's own


def parse_yaml(text: str):
    """A config's YAML (``readback.StrictLoader``: no aliases, bounded nesting, no key twice); ValueError
    (one line) if it is not valid."""
    return readback.parse_yaml(text)


def refuse_control_characters(text: str) -> None:
    """An ``-o`` text with a newline (or another control character) is refused as written: YAML folds a newline
    into a space, so ``output.root=runs/new<newline>line`` wrote to ``runs/new line``."""
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise ConfigError(f"override {excerpt(text)} holds a control character (a newline, a tab...); no name, path "
                          "or value of a config holds one")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=0.01"`` -> (["optimizer", "lr"], 0.01). Values are YAML scalars or flow lists."""
    refuse_control_characters(text)
    if "=" not in text:
        raise ConfigError(f"override {excerpt(text)} must look like section.key=value, e.g. -o optimizer.lr=0.01")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {excerpt(text)}: the key must be section.key, e.g. optimizer.lr")
    try:
        parsed = parse_yaml(value) if value.strip() else None
    except ValueError as e:
        raise ConfigError(f"override {excerpt(text)}: the value is {e}") from None
    if isinstance(parsed, dict):
        raise ConfigError(f"override {excerpt(text)}: the value must be a scalar or a list")
    return parts, parsed


SHIPPED = Path(__file__).resolve().parent.parent / "configs"  # the configs shipped with mnist-kit (package data)


def shipped() -> dict[str, Path]:
    """The shipped configs by name (``cnn`` -> ``.../mnist_kit/configs/cnn.yaml``)."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.yaml"))}


def shipped_named(name: str) -> Path | None:
    """The shipped config called ``name`` (``cnn`` or ``cnn.yaml``), or None."""
    return shipped().get(name[:-len(".yaml")] if name.endswith(".yaml") else name)


def purpose(path: Path) -> str:
    """A shipped config's one-line purpose: its first line, a comment."""
    with open(path, encoding="utf-8") as f:
        return f.readline().strip().lstrip("#").strip()


def locate(path: str | Path) -> tuple[Path, str | None]:
    """The file that ``--config PATH`` means, and a line that says which one when a name chose it: a file at
    PATH wins; else a bare name (text without a ``/``: ``cnn`` or ``cnn.yaml``) means the shipped config of that
    name. A path (``./cnn``, ``../configs/cnn``) is only ever a path, and a symbolic link to nothing an error."""
    p = Path(path)
    text = str(path)
    is_name = isinstance(path, str) and "/" not in text and os.sep not in text
    name = p.stem if p.suffix in (".yaml", ".yml") else p.name
    ours = shipped_named(text) if is_name else None
    if p.is_symlink() and not p.exists():
        raise ConfigError(f"--config {p} is a symbolic link to nothing (a loop, or its target is gone); fix or "
                          "remove it")
    if p.exists():
        if ours is not None and p.resolve() != ours:
            return p, f"config: {p} (the file in this folder, not the shipped {name}: {ours})"
        return p, None
    if ours is not None:
        return ours, f"config: the shipped {name} ({ours})"
    if not is_name:
        near = [c for c in (Path(text + ".yaml"), Path(text + ".yml")) if c.is_file()]
        raise ConfigError(f"config file not found: {text}" + (f"; did you mean {near[0]}?" if near else "")
                          + " (a bare name such as cnn takes a shipped config: mnist-kit configs lists them)")
    names = shipped()
    raise ConfigError(f"config file not found: {p}; the shipped configs, by name: {', '.join(names)}"
                      f"{suggest(name, names)} (mnist-kit configs lists them)")


def _read(path: str | Path) -> tuple[Path, Any]:
    """The config file ``path`` names (``locate``) and its YAML value."""
    p, _ = locate(path)
    try:
        return p, parse_yaml(readback.read_text(p, MAX_FILE))
    except readback.Unreadable as e:
        raise ConfigError(f"{e}; --config takes a YAML file") from None
    except ValueError as e:
        raise ConfigError(f"{p} is {e}") from None


def load(path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None; a shipped config by its name: ``locate``),
    apply overrides, validate."""
    raw: Any = {}
    source = "config"
    if path is not None:
        p, raw = _read(path)
        source = str(p)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections ({', '.join(SCHEMA)})")
        raw.pop(TUNE, None)  # mnist-kit tune's settings (tune_section), not part of the config a run records
    raw = copy.deepcopy(raw)
    for text in overrides:
        (section, key), value = parse_override(text)
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {excerpt(text)}: {section} in {source} is not a mapping")
        if value is None:  # -o key=null removes the key: its default applies, or nothing if it does not apply
            target.pop(key, None)
        else:
            target[key] = value
        if (section, key) == ("train", "epochs"):  # -o train.epochs=N counts epochs: a config's train.steps goes
            target.pop("steps", None)
    if overrides:
        source += " with overrides " + " ".join(f"-o {clip(o, 80)}" for o in overrides)
    return validate(raw, source)


def tune_section(path: str | Path | None) -> dict:
    """A config file's ``tune:`` section (mnist-kit tune's search space and settings), or {}."""
    if path is None:
        return {}
    p, raw = _read(path)
    section = raw.get(TUNE) if isinstance(raw, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{p}: its tune section must be a mapping (space:, trials:, objective:, ...)")
    return section


class _Dumper(yaml.SafeDumper):
    pass


class _Inline(dict):
    """A mapping written on one line (each entry of model.blocks)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence(
    "tag:yaml.org,2002:seq", v, flow_style=not any(isinstance(x, dict) for x in v)))
_Dumper.add_representer(_Inline, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))


def dump(config: Config | dict) -> str:
    """The config as YAML: sections as blocks, lists inline, each conv block on a line of its own."""
    cfg = config.to_dict() if isinstance(config, Config) else config
    cfg = {s: ({k: [_Inline(b) for b in v] if k == "blocks" and v else v for k, v in sec.items()}
               if isinstance(sec, dict) else sec) for s, sec in cfg.items()}
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


