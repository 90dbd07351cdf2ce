"""The search space: ``KEY=SPEC`` texts (``--space``, or a config's ``tune: space:`` mapping) turned into
``Param``s, each checked against the config schema before the first trial.

    optimizer.lr=1e-4..1e-1:log     log-uniform          train.batch_size=64,128,256   a choice
    model.dropout=0..0.5            uniform              train.epochs=2..6:int         whole numbers
    model.channels=[8,16],[16,32]   a choice of lists    optimizer.lr=1e-4..1e-1:log   (:int:log also)

A choice's values are read as YAML (``64`` an int, ``true`` a bool, ``[8,16]`` a list). Optuna names each
parameter by its config key; a choice with a list or a mapping among its values is offered to Optuna as their
JSON texts (Optuna's choices are plain values) and turned back into values for the config.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mnist_kit import config
from mnist_kit.errors import ConfigError

RANGE = re.compile(r"^\s*(?P<low>[^.\s][^\s]*?)\s*\.\.\s*(?P<high>[^:\s]+)\s*(?P<flags>(:\s*(int|log)\s*)*)$")
NOT_SEARCHED = ("output.",)  # tune names the trials' folders itself


@dataclass(frozen=True)
class Param:
    key: str  # section.key
    spec: str  # as given: 1e-4..1e-1:log
    choices: tuple = ()  # a choice's values, or () for a range
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False

    def suggest(self, trial) -> Any:
        """This parameter's value for an Optuna trial (a value for the config)."""
        if self.choices:
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in self.choices):
                return trial.suggest_categorical(self.key, list(self.choices))
            texts = [json.dumps(v, sort_keys=True) for v in self.choices]
            return json.loads(trial.suggest_categorical(self.key, texts))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def value_of(self, stored: Any) -> Any:
        """A value as Optuna stored it (a JSON text for a structured choice) as the config takes it."""
        if self.choices and isinstance(stored, str) and not all(
                v is None or isinstance(v, (bool, int, float, str)) for v in self.choices):
            return json.loads(stored)
        return stored


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"--space {config.clip(text, 80)}: {why}")


def _number(text: str, whole: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(whole, f"its {what} {config.clip(text, 20)!r} is not a number; write LOW..HIGH, "
                          "e.g. 1e-4..1e-1:log") from None
    if not math.isfinite(value):
        raise _bad(whole, f"its {what} must be a finite number")
    return value


NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numeric(value: Any) -> Any:
    """``1e-3`` as a number: YAML 1.1 reads an exponent without a dot as text."""
    if isinstance(value, str) and NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if re.fullmatch(r"[-+]?\d+", value.strip()) else number
    return value


def parse(text: str) -> Param:
    """One ``KEY=SPEC`` text as a Param (its key checked against the schema; its values, by ``check``)."""
    config.refuse_control_characters(text)
    head, eq, spec = text.partition("=")
    if not eq or not spec.strip():
        raise _bad(text, "write KEY=SPEC: a choice a,b,c or a range LOW..HIGH (:log, :int), "
                         "e.g. optimizer.lr=1e-4..1e-1:log")
    (section, key), _ = config.parse_override(f"{head.strip()}=")  # section.key
    if section not in config.SCHEMA:
        raise _bad(text, f"unknown section {config.excerpt(section)}{config.suggest(section, config.SCHEMA)}; "
                         f"sections: {', '.join(config.SCHEMA)}")
    if key not in config.SCHEMA[section]:
        raise _bad(text, f"unknown key {config.excerpt(f'{section}.{key}')}"
                         f"{config.suggest(key, config.SCHEMA[section], section + '.')}")
    dotted = f"{section}.{key}"
    if dotted.startswith(NOT_SEARCHED):
        raise _bad(text, f"{dotted} is not searched: tune names each trial's run folder itself")
    field = config.SCHEMA[section][key]
    spec = spec.strip()
    m = RANGE.match(spec)
    if m:
        flags = {f.strip() for f in m["flags"].split(":") if f.strip()}
        low, high = _number(m["low"], text, "low end"), _number(m["high"], text, "high end")
        if field.kind not in ("int", "float", "float_or_auto"):
            raise _bad(text, f"{dotted} is not a number ({field.kind}); give its choices: a,b,c")
        if not low < high:
            raise _bad(text, f"the low end must be below the high end, got {low:g}..{high:g}")
        if "log" in flags and low <= 0:
            raise _bad(text, f"a :log range must start above 0, got {low:g}")
        integer = "int" in flags
        if field.kind == "int" and not integer:
            raise _bad(text, f"{dotted} takes whole numbers; write {m['low']}..{m['high']}:int")
        if integer and not (low.is_integer() and high.is_integer()):
            raise _bad(text, "an :int range has whole-number ends")
        return Param(dotted, spec, low=low, high=high, log="log" in flags, integer=integer)
    if ".." in spec and not spec.lstrip().startswith(("[", "{", '"', "'")):
        raise _bad(text, "cannot read this range; write LOW..HIGH, LOW..HIGH:log or LOW..HIGH:int")
    try:
        values = config.parse_yaml("[" + spec + "]")
    except ValueError as e:
        raise _bad(text, f"cannot read its values ({e}); separate them with commas: a,b,c") from None
    values = [_numeric(v) for v in values]
    if len(values) < 2:
        raise _bad(text, "a choice needs two or more values (a,b), or give a range LOW..HIGH; "
                         "a single value is an -o override")
    texts = [json.dumps(v, sort_keys=True) for v in values]
    if len(set(texts)) < len(texts):
        raise _bad(text, "a value is listed twice; list each value once")
    return Param(dotted, spec, choices=tuple(values))


def from_section(section: Any, source: str) -> list[str]:
    """The ``KEY=SPEC`` texts of a config's ``tune: space:`` mapping (a spec may be a text or a YAML list of
    choices)."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: tune.space must be a mapping of config keys to specs, "
                          "e.g. optimizer.lr: 1e-4..1e-1:log")
    texts = []
    for key, spec in section.items():
        if isinstance(spec, list):
            spec = ",".join(json.dumps(v) for v in spec)
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            raise ConfigError(f"{source}: tune.space.{config.excerpt(key)} is one value; give a choice a,b or "
                              "a range LOW..HIGH")
        if not isinstance(key, str) or not isinstance(spec, str):
            raise ConfigError(f"{source}: tune.space.{config.excerpt(key)} must be a text spec such as "
                              "1e-4..1e-1:log or 64,128")
        texts.append(f"{key}={spec}")
    return texts


def check(params: Iterable[Param], base: config.Config) -> list[Param]:
    """``params`` after checking that every value they can take is a valid config (with ``base``'s other
    keys): each choice, and each range's two ends (and a middle value, which an int key must not get)."""
    params = list(params)
    keys = [p.key for p in params]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"--space {', '.join(twice)} is given twice; give each key once")
    for p in params:
        tries = list(p.choices) if p.choices else [p.low, p.high]
        if p.integer:
            tries = [int(v) for v in tries]
        for value in tries:
            try:
                config.updated(base, {p.key: value})
            except ConfigError as e:
                problem = e.problems[-1] if e.problems else str(e)
                raise ConfigError(f"--space {p.key}={config.clip(p.spec, 60)}: {config.excerpt(value)} is not a "
                                  f"valid value: {problem}") from None
    return params


def overrides(params: Iterable[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """``{section.key: value}`` for ``config.updated`` from a trial's parameters (as Optuna stores them)."""
    return {p.key: p.value_of(values[p.key]) for p in params if p.key in values}


def describe(values: Mapping[str, Any]) -> str:
    """A trial's parameters in one short line: lr=0.00312 batch_size=128."""
    def text(v):
        return f"{v:.3g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return " ".join(f"{k.split('.', 1)[1]}={text(v)}" for k, v in values.items())
