"""How the schema is declared: ``option`` (a key of a section dataclass: default, help, choices, range, the
names it applies to), ``Field`` (a key as validation and the docs see it), ``Section`` (what every section
shares: its dict form), ``Block`` (one entry of model.blocks), and the choices a config offers (from the
catalogue of data sets and the model registry). The sections themselves: ``config/schema.py``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from mnist_kit import datasets
from mnist_kit.models import blocks, registry

DATASETS, IDX, FOLDERS = tuple(datasets.CATALOG), datasets.IDX, datasets.FOLDERS  # mnist_kit/datasets.py
# the names a config may choose: models/registry.py, where each is registered with what builds it
MODELS, LOSSES = tuple(registry.MODELS), tuple(registry.LOSSES)
OPTIMIZERS, SCHEDULES, INITS = tuple(registry.OPTIMIZERS), tuple(registry.SCHEDULES), registry.INITS
MONITORS = ("val/acc", "val/loss", "train/acc", "train/loss")  # higher is better for accuracies
ACTIVATIONS = tuple(registry.ACTIVATIONS)
TTA = ("none", "flip", "shift", "flip+shift")
AMP = ("off", "fp16", "bf16")
BLOCK_ACTIVATIONS = (*registry.BLOCK_ACTIVATIONS, "none")
POOLS = (*registry.POOLS, "none")
SEED_MAX = 2**32 - 1  # numpy's seeds
MAX_LIST = 64  # the longest list value (layers of a network, sides of an image)
NAME = re.compile(r"^\w[\w.+=,:@-]{0,199}$")  # a run name: a plain, visible folder name


@dataclass(frozen=True)
class Field:
    """One key of the schema, as validation and the docs see it (its value as YAML writes it: lists, not
    tuples)."""

    kind: str  # int | float | bool | str | path | ints | float_or_auto | blocks
    default: Any
    help: str
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    only: tuple = ()  # names of the section's `name` (or data sets) this key applies to; empty = all


# the Python type of a field (as written in its annotation) -> the kind of value validation takes
_KIND_OF = {"int": "int", "float": "float", "bool": "bool", "str": "str", "str | None": "str",
            "tuple[int, ...]": "ints", "tuple[int, ...] | None": "ints", "float | str": "float_or_auto",
            "tuple[Block, ...] | None": "blocks"}


def option(default: Any, help: str, *, choices: tuple = (), min: float | None = None, max: float | None = None,
           only: tuple = (), path: bool = False) -> Any:
    """A config key: its default (a tuple for a list), help text, choices, range and the names it applies to.
    ``path``: a file or folder (a string that validation makes absolute where the key says so)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": tuple(choices), "min": min, "max": max, "only": tuple(only), "path": path})


def _yaml_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def fields_of(cls: type) -> dict[str, Field]:
    """A section dataclass's keys as ``Field``s, in declaration order."""
    out = {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        kind = "path" if m["path"] else _KIND_OF[str(f.type)]
        out[f.name] = Field(kind, _yaml_default(f.default), m["help"], m["choices"], m["min"], m["max"], m["only"])
    return out


class Section:
    """What every section dataclass shares: the dict form (the keys that apply) and building from it."""

    KEY: ClassVar[str]  # the section's name in YAML

    def applies(self, key: str) -> bool:
        """Whether ``key`` applies to this section's ``name`` (data: to its data set)."""
        only = self.__dataclass_fields__[key].metadata["only"]  # type: ignore[attr-defined]
        return not only or getattr(self, "name", None) in only

    def __repr__(self) -> str:  # the keys that apply, as the YAML holds them
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.to_dict())})"

    def to_dict(self) -> dict[str, Any]:
        """The section as YAML holds it: the keys that apply, lists as lists, blocks as mappings."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        names.sort(key=lambda n: n != "name")  # a section's name first (output.name too), as it always was
        return {n: plain(getattr(self, n)) for n in names if self.applies(n)}


def plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def _typed(value: Any) -> Any:
    """A validated YAML value as the dataclass holds it: lists as tuples, blocks as ``Block``s."""
    if isinstance(value, list):
        return tuple(Block(**v) if isinstance(v, dict) else v for v in value)
    return value


def build(cls: type, values: dict[str, Any]) -> Any:
    """A section from its validated dict (keys that do not apply keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _typed(v) for k, v in values.items() if k in names})


_D = blocks.DEFAULTS


@dataclass(frozen=True)
class Block:
    """One entry of ``model.blocks``; kernel and batch_norm (None) take the model's own keys, a pool's stride
    (None) its size (``models/blocks.cnn_blocks``)."""

    channels: int = option(_D["channels"], "output channels", min=1, max=4096)
    kernel: int | None = option(_D["kernel"], "square kernel size", min=1, max=31)
    stride: int = option(_D["stride"], "conv stride", min=1, max=16)
    padding: int | str = option(_D["padding"], "'same' (kernel // 2, odd kernels) or pixels")
    activation: str = option(_D["activation"], "activation", choices=BLOCK_ACTIVATIONS)
    pool: str = option(_D["pool"], "pooling after the block", choices=POOLS)
    pool_size: int = option(_D["pool_size"], "pooling window", min=1, max=16)
    pool_stride: int | None = option(_D["pool_stride"], "pooling stride (default: pool_size)", min=1, max=16)
    pool_padding: int = option(_D["pool_padding"], "pooling padding", min=0, max=8)
    batch_norm: bool | None = option(_D["batch_norm"], "batch norm after the conv")


# the kinds of a block's keys (their annotations differ from the section keys': None and pixels are allowed)
BLOCK_FIELDS = {f.name: Field({"int": "int", "int | None": "int", "int | str": "str", "str": "str",
                               "bool | None": "bool"}[str(f.type)], f.default, f.metadata["help"],
                              f.metadata["choices"], f.metadata["min"], f.metadata["max"])
                for f in dataclasses.fields(Block)}

