"""Experiment configuration: the schema, YAML loading, ``-o key=value`` overrides and strict validation.

A config is a plain nested dict ``{section: {key: value}}``. Every key that exists is declared in
``SCHEMA`` with its type, default and help text; docs/config.md's reference is generated from it.
Sections with a ``name`` key (model, loss, optimizer, schedule) are tagged unions: a key marked
``only=(...)`` applies to those names alone, and setting it for another name is an error.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_kit import ConfigError, UserError, datasets
from mnist_kit.models import blocks, registry
from mnist_kit.util import readback


@dataclass(frozen=True)
class Field:
    kind: str  # int | float | bool | str | path | ints | float_or_auto
    default: Any
    help: str
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    only: tuple = ()  # names of the section's `name` this key applies to; empty = all


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

SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "name": Field("str", "mnist", "dataset to train on: mnist, fashion-mnist, or image_folder (your own images, "
                      "one sub-folder per class)", choices=DATASETS),
        "root": Field("path", None, "prepared-data directory (the cache prepare writes); null = $MNIST_KIT_DATA or "
                      "~/.cache/mnist-kit"),
        "folder": Field("path", None, "the image folder: one sub-folder of images per class, class names = "
                        "sub-folder names in sorted order", only=FOLDERS),
        "image_size": Field("ints", [28, 28], "height and width every image is resized to", only=FOLDERS,
                            min=1, max=4096),
        "color": Field("str", "grayscale", "grayscale (1 channel) or rgb (3 channels)", choices=("grayscale", "rgb"),
                       only=FOLDERS),
        "resize": Field("str", "stretch", "stretch to image_size, or pad: keep the aspect ratio and fill the rest "
                        "with the colour of the image's border", choices=("stretch", "pad"), only=FOLDERS),
        "bad_files": Field("str", "error", "files that cannot be read as images: error (list them and stop) or "
                           "skip (leave them out and count them)", choices=("error", "skip"), only=FOLDERS),
        "val_size": Field("int", 10000, "images split off the training set for validation; 0 = none: train on "
                          "every training image (the last step before deploying; the best checkpoint is then the "
                          "last, unless train.monitor watches train/loss or train/acc)", min=0, max=10**7,
                          only=IDX),
        "val_ratio": Field("float", 0.15, "share of each class for validation; 0 = none (as data.val_size 0)",
                           min=0.0, max=0.9, only=FOLDERS),
        "test_ratio": Field("float", 0.15, "share of each class held out for test; 0 = no test set", min=0.0,
                            max=0.9, only=FOLDERS),
        "balance": Field("str", "none", "oversample: repeat training images of smaller classes until each class "
                         "has as many as the largest (validation and test untouched)", choices=("none", "oversample"),
                         only=FOLDERS),
        "split_seed": Field("int", 0, "seed of the train/validation(/test) split (independent of train.seed)", min=0,
                            max=SEED_MAX),
        "mean": Field("float_or_auto", "auto", "normalisation mean of pixels in [0,1]; auto = from the training split",
                      min=0.0, max=1.0),
        "std": Field("float_or_auto", "auto", "normalisation std of pixels in [0,1]; auto = from the training split",
                     min=1e-6, max=1.0),
    },
    "model": {
        "name": Field("str", "cnn", "network architecture", choices=MODELS),
        "hidden": Field("ints", [256, 128], "hidden layer widths", only=("mlp",), min=1, max=65536),
        "activation": Field("str", "relu", "hidden-layer activation", choices=ACTIVATIONS, only=("mlp",)),
        "channels": Field("ints", [20, 20], "output channels of each conv+ReLU+max-pool block", only=("cnn",), min=1,
                          max=1024),
        "kernel_size": Field("int", 5, "square conv kernel size (odd; 'same' padding)", only=("cnn",), min=1, max=31),
        "batch_norm": Field("bool", False, "batch normalisation after each conv", only=("cnn",)),
        "head": Field("ints", None, "widths of hidden linear layers (each followed by ReLU) between the conv blocks "
                      "and the output layer, e.g. [256]; null = none (the conv features go straight to the output)",
                      only=("cnn",), min=1, max=65536),
        "dropout": Field("float", 0.0, "dropout probability before the last linear layer", only=("mlp", "cnn"),
                         min=0.0, max=0.99),
        "tta": Field("str", "none", "test-time augmentation, part of the network outside training (validation, "
                     "eval, export, predict, serve): the class probabilities of each image averaged with those "
                     "of its copies: flip = mirrored left to right (clothing; refused on digits), shift = moved "
                     "one pixel left and one right, flip+shift = all four; costs as many forward passes; none",
                     choices=TTA, only=("cnn",)),
        "blocks": Field("blocks", None, "the conv blocks one by one, instead of channels/kernel_size/batch_norm: "
                        "a list of {channels, kernel, stride, padding (same or pixels), activation (relu, sigmoid, "
                        "tanh, leaky_relu, gelu, none), pool (max, avg, none), pool_size, pool_stride, "
                        "pool_padding, batch_norm}; only channels is required (kernel and batch_norm default to "
                        "kernel_size and batch_norm; stride 1, padding same, relu, max-pool 2)", only=("cnn",)),
        "init": Field("str", "default", "initial weights of the conv and linear layers: default = Paddle's own; "
                      "kaiming (He normal), xavier (Glorot uniform), normal (std 0.01), uniform (+-0.05), biases 0; "
                      "torch = PyTorch's default: weights and biases uniform in +-1/sqrt(fan_in)", choices=INITS),
    },
    "loss": {
        "name": Field("str", "cross_entropy", "training loss", choices=LOSSES),
        "label_smoothing": Field("float", 0.0, "label smoothing epsilon", only=("cross_entropy",), min=0.0, max=0.99),
    },
    "optimizer": {
        "name": Field("str", "adam", "optimizer", choices=OPTIMIZERS),
        "lr": Field("float", 0.001, "base learning rate", min=0.0, max=1e30),
        "weight_decay": Field("float", 0.0, "L2 weight decay (decoupled for adamw)", min=0.0, max=1e3),
        "grad_clip": Field("float", 0.0, "clip gradients to this global L2 norm; 0 = off", min=0.0, max=1e9),
        "momentum": Field("float", 0.9, "momentum factor", only=("momentum", "rmsprop"), min=0.0, max=1.0),
        "nesterov": Field("bool", False, "Nesterov momentum", only=("momentum",)),
        "beta1": Field("float", 0.9, "first-moment decay", only=("adam", "adamw"), min=0.0, max=1.0),
        "beta2": Field("float", 0.999, "second-moment decay", only=("adam", "adamw"), min=0.0, max=1.0),
        "rho": Field("float", 0.95, "squared-gradient decay", only=("rmsprop",), min=0.0, max=1.0),
        "epsilon": Field("float", 1e-8, "numerical stability term", only=("adagrad", "rmsprop", "adam", "adamw"),
                         min=0.0,
                         max=1.0),
    },
    "schedule": {
        "name": Field("str", "constant", "learning-rate schedule (stepped every batch)", choices=SCHEDULES),
        "warmup_epochs": Field("float", 0.0, "linear warm-up from 0 to lr over this many epochs", min=0.0, max=1e6),
        "step_epochs": Field("float", 1.0, "multiply lr by gamma every this many epochs", only=("step",), min=1e-9,
                             max=1e6),
        "gamma": Field("float", 0.1, "decay factor", only=("step",), min=0.0, max=1e3),
        "end_lr": Field("float", 0.0, "final learning rate", only=("polynomial", "cosine"), min=0.0, max=1e3),
        "power": Field("float", 1.0, "polynomial power", only=("polynomial",), min=0.0, max=1e3),
    },
    "train": {
        "epochs": Field("int", 5, "epochs to train", min=1, max=100000),
        "steps": Field("int", 0, "run length in optimizer steps instead of train.epochs: the nearest whole number of "
                       "epochs (at least 1), written into train.epochs; one recipe then trains as many updates on "
                       "7,000 images as on 50,000; 0 = train.epochs decides (-o train.epochs=N sets it to 0)",
                       min=0, max=10**9),
        "batch_size": Field("int", 64, "training batch size (per process)", min=1, max=65536),
        "eval_batch_size": Field("int", 256, "batch size for validation and evaluation", min=1, max=65536),
        "seed": Field("int", 0, "seed of weights, data order and dropout; same seed + config = same run on CPU", min=0,
                      max=SEED_MAX),
        "device": Field("str", "auto", "cpu, gpu, gpu:N or auto"),
        "amp": Field("str", "off", "mixed precision on a GPU: fp16 (float16, with a dynamic loss scale), bf16 "
                     "(bfloat16) or off; Paddle's CPU build runs neither", choices=AMP),
        "log_every": Field("int", 50, "steps between progress lines and logged training scalars", min=1, max=10**9),
        "ema": Field("float", 0.0, "keep an exponential moving average of the weights with this decay (e.g. 0.99), "
                     "updated after every step (the first steps use less: min(ema, (1 + n) / (10 + n))); "
                     "validation, the best checkpoint, eval, export and train.init_from then use the average; "
                     "0 = off", min=0.0, max=0.9999),
        "on_nonfinite": Field("str", "stop", "a NaN/inf loss: stop the run, or skip that batch's update",
                              choices=("stop", "skip")),
        "fast_conv": Field("str", "auto", "the CNN's conv blocks on oneDNN (CPU, several times faster): auto = when "
                           "it passes its self-check; on = fail if it cannot; off = Paddle's stock layers",
                           choices=("auto", "on", "off")),
        "threads": Field("int", 0, "CPU threads of the oneDNN conv blocks in each process; 0 = the cores divided "
                         "among this machine's processes (never more)", min=0, max=1024),
        "monitor": Field("str", "val/acc", "the epoch metric that chooses the best checkpoint (best.pdckpt) and "
                         "that patience watches", choices=MONITORS),
        "patience": Field("int", 0, "early stopping: end the run after this many epochs in a row without a better "
                          "train.monitor; 0 = off", min=0, max=100000),
        "init_from": Field("path", None, "start from these weights (fine-tuning, or a new schedule): a run (its "
                           "best checkpoint), a .pdckpt file or an export folder; every parameter's shape must "
                           "match; the optimizer starts fresh; null = new weights"),
    },
    "augment": {
        "apply": Field("str", "auto", "when the transforms below are used: auto = on MNIST digits (data.name mnist) "
                       "only (on Fashion-MNIST, whose objects are all framed alike, they cost test accuracy); "
                       "always; never", choices=("auto", "always", "never")),
        "rotate": Field("float", 0.0, "random rotation, degrees: uniform in [-rotate, rotate]; 0 = off", min=0.0,
                        max=180.0),
        "scale": Field("float", 0.0, "random zoom: uniform in [1 - scale, 1 + scale]; 0 = off", min=0.0, max=0.9),
        "translate": Field("float", 0.0, "random shift, fraction of the side, each axis: uniform in [-translate, "
                           "translate]; 0 = off", min=0.0, max=0.5),
        "shear": Field("float", 0.0, "random horizontal shear, degrees: uniform in [-shear, shear]; 0 = off", min=0.0,
                       max=60.0),
        "stroke": Field("float", 0.0, "random stroke width change, pixels: uniform in [-stroke, stroke] (thin or "
                        "thicken bright strokes); 0 = off", min=0.0, max=3.0),
        "elastic": Field("float", 0.0, "elastic distortion strength alpha, pixels (Simard et al. 2003: 34 with "
                         "sigma 4); 0 = off", min=0.0, max=200.0),
        "elastic_sigma": Field("float", 4.0, "smoothness of the elastic distortion (Gaussian sigma, pixels)",
                               min=0.5, max=50.0),
        "erase": Field("float", 0.0, "probability of erasing one random rectangle of an image (filled with its "
                       "edge colour); 0 = off", min=0.0, max=1.0),
        "erase_area": Field("float", 0.2, "largest erased area, fraction of the image (the smallest is 0.02)",
                            min=0.02, max=1.0),
        "flip": Field("float", 0.0, "probability of mirroring an image left to right (for clothing: a mirrored "
                      "shirt is a shirt, a mirrored 2 is not a digit); 0 = off", min=0.0, max=1.0),
    },
    "checkpoint": {
        "keep_last": Field("int", 3, "keep the newest K epoch checkpoints (plus best.pdckpt); 0 = keep all",
                           min=0, max=10**6),
        "every_steps": Field("int", 0, "also checkpoint every N steps inside an epoch; 0 = at epoch ends only",
                             min=0, max=10**9),
    },
    "log": {
        "images": Field("bool", True, "input grid at the start; misclassified grid and confusion matrix at each "
                        "validation"),
        "histogram_every": Field("int", 200, "steps between histograms of every parameter and gradient; 0 = off",
                                 min=0, max=10**9),
        "curves": Field("bool", True, "PR and ROC curve of each class at each validation"),
        "embeddings": Field("int", 500, "validation images whose penultimate features are logged at the last epoch; "
                            "0 = off", min=0, max=100000),
        "graph": Field("bool", True, "the model graph (for the board's graph pages)"),
        "hparams": Field("bool", True, "hyper-parameters with the final metrics (the board's comparison view)"),
        "config_text": Field("bool", True, "the resolved config as text"),
    },
    "output": {
        "root": Field("path", "checkpoints", "directory that holds one directory per run"),
        "name": Field("str", None, "run name; null = CONFIG-YYYYmmdd-HHMMSS (CONFIG = the config file name)"),
        "visualdl": Field("bool", True, "write VisualDL logs to the vdl folder of the run (the log section says what)"),
    },
}


def defaults() -> dict:
    """The complete default config: configs/cnn.yaml's data and network with the classic recipe (Adam 1e-3,
    batch 64, a constant rate, no label smoothing) and no augmentation, so that a config leaves out only
    what it means to take from the tutorial (``tests/test_config.py`` names every difference)."""
    return validate({})


def suggest(word: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _kind_name(field: Field) -> str:
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "path": "a path",
        "ints": "a list of integers, e.g. [32, 64]",
        "float_or_auto": "a number or 'auto'",
        "blocks": "a list of blocks, e.g. [{channels: 32, stride: 2, pool: none}]",
    }[field.kind]


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages quote what was given, never all of a huge value."""
    if isinstance(value, (list, tuple)) and len(value) > limit:
        value = value[:limit]  # repr of the whole would be as large as the value
    return clip(repr(value), limit)


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _as_int(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad
    return value


def _as_float(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if field.kind == "float_or_auto" and value == "auto":
        return "auto"
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            raise bad from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    return float(value)


def _as_str(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if isinstance(value, bool) and "off" in field.choices:  # YAML 1.1 reads on/off (and yes/no) as booleans
        value = "on" if value else "off"
    if not isinstance(value, str) or not value:
        raise bad
    if any(ord(c) < 32 or c == "\x7f" for c in value):  # a NUL, a newline: no name or path holds them
        raise ValueError(f"{path} must not hold control characters (a newline, a NUL...), got {excerpt(value)}")
    if len(value) > 4096:
        raise ValueError(f"{path} has {len(value):,} characters; at most 4,096")
    return value


def _as_ints(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise bad
    if len(value) > MAX_LIST:
        raise ValueError(f"{path} has {len(value)} values; at most {MAX_LIST}")
    return list(value)


def _as_bool(path: str, field: Field, value: Any, bad: ValueError) -> Any:
    if not isinstance(value, bool):
        raise bad
    return value


# Field.kind -> f(path, field, value, the error for a value of the wrong type) -> the value as that kind
_KINDS = {"int": _as_int, "float": _as_float, "float_or_auto": _as_float, "str": _as_str, "path": _as_str,
          "ints": _as_ints, "bool": _as_bool, "blocks": lambda path, field, value, bad: _blocks(path, value)}


def _coerce(path: str, field: Field, value: Any) -> Any:
    """Return ``value`` as the field's type, or raise ValueError with a message."""
    if value is None:
        if field.default is None:
            return None
        raise ValueError(f"{path} must be {_kind_name(field)}, not null")
    wrong_type = ValueError(f"{path} must be {_kind_name(field)}, got {excerpt(value)}")
    out = _KINDS[field.kind](path, field, value, wrong_type)
    if field.kind == "bool" or (field.kind == "float_or_auto" and out == "auto"):
        return out
    if field.choices and out not in field.choices:
        raise ValueError(f"{path} is {excerpt(out)}; allowed: {', '.join(field.choices)}"
                         f"{suggest(str(out)[:100], field.choices)}")
    for v in out if isinstance(out, list) else [out]:
        if isinstance(v, (int, float)):
            if field.min is not None and v < field.min:
                raise ValueError(f"{path} must be >= {_number(field.min)}, got {excerpt(v)}")
            if field.max is not None and v > field.max:
                raise ValueError(f"{path} must be <= {_number(field.max)}, got {excerpt(v)}")
    return out


# The keys of one entry of model.blocks, with their defaults from models/blocks.py; kernel and batch_norm
# default (None) to the model's own keys.
_D = blocks.DEFAULTS
BLOCK_FIELDS = {
    "channels": Field("int", _D["channels"], "output channels", min=1, max=4096),
    "kernel": Field("int", _D["kernel"], "square kernel size", min=1, max=31),
    "stride": Field("int", _D["stride"], "conv stride", min=1, max=16),
    "padding": Field("str", _D["padding"], "'same' (kernel // 2, odd kernels) or pixels"),
    "activation": Field("str", _D["activation"], "activation", choices=BLOCK_ACTIVATIONS),
    "pool": Field("str", _D["pool"], "pooling after the block", choices=POOLS),
    "pool_size": Field("int", _D["pool_size"], "pooling window", min=1, max=16),
    "pool_stride": Field("int", _D["pool_stride"], "pooling stride (default: pool_size)", min=1, max=16),
    "pool_padding": Field("int", _D["pool_padding"], "pooling padding", min=0, max=8),
    "batch_norm": Field("bool", _D["batch_norm"], "batch norm after the conv"),
}


def _blocks(path: str, value: Any) -> list[dict]:
    """model.blocks: every entry a mapping of BLOCK_FIELDS, complete with defaults; ValueError otherwise."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{path} must be a non-empty list of blocks, e.g. [{{channels: 32}}, {{channels: 64, "
                         f"pool: avg}}], got {excerpt(value)}")
    if len(value) > MAX_LIST:
        raise ValueError(f"{path} has {len(value)} blocks; at most {MAX_LIST}")
    out = []
    for i, block in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be a mapping such as {{channels: 32, kernel: 3}}, got {excerpt(block)}")
        for key in block:
            if key not in BLOCK_FIELDS:
                raise ValueError(f"{where} has an unknown key {excerpt(key)}{suggest(str(key)[:100], BLOCK_FIELDS)}; "
                                 f"keys: {', '.join(BLOCK_FIELDS)}")
        if "channels" not in block:
            raise ValueError(f"{where} needs channels (the conv's output channels)")
        done: dict[str, Any] = {}
        for key, f in BLOCK_FIELDS.items():
            v = block.get(key, f.default)
            if key == "padding" and isinstance(v, int) and not isinstance(v, bool):
                if not 0 <= v <= 16:
                    raise ValueError(f"{where}.padding must be 'same' or 0 to 16 pixels, got {v}")
                done[key] = v
                continue
            done[key] = None if v is None else _coerce(f"{where}.{key}", f, v)
            if key == "padding" and done[key] != "same":
                raise ValueError(f"{where}.padding must be 'same' or a number of pixels, got {excerpt(v)}")
        out.append(done)
    return out


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def validate(raw: Any, source: str = "config") -> dict:
    """Check ``raw`` (as loaded from YAML, possibly partial) and return the complete config.

    Raises ConfigError listing every problem found.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections ({', '.join(SCHEMA)})")
    errors: list[str] = []
    for section in raw:
        if section not in SCHEMA:
            errors.append(f"unknown section {excerpt(section)}{suggest(str(section)[:100], SCHEMA)}; sections: "
                          f"{', '.join(SCHEMA)}")
    out = {section: _section(section, fields, raw.get(section) or {}, errors) for section, fields in SCHEMA.items()}
    if not errors:
        errors.extend(_cross_checks(out))
    for key in ("folder", "root"):  # the same folder from any directory: recorded as an absolute path
        if not errors and out["data"].get(key):
            out["data"][key] = str(Path(out["data"][key]).expanduser().resolve())
    if errors:
        raise ConfigError(f"invalid {source}:\n" + "\n".join(f"  - {e}" for e in errors), problems=errors)
    return out


def _section(section: str, fields: dict[str, Field], given: Any, errors: list[str]) -> dict:
    """One section complete with defaults; its problems appended to ``errors``. A key marked ``only`` is kept
    for the names it applies to, and an error when given for another."""
    if not isinstance(given, dict):
        errors.append(f"{section} must be a mapping of keys, got {excerpt(given)}")
        given = {}
    for key in given:
        if key not in fields:
            hint = suggest(str(key)[:100], fields, section + ".")
            errors.append(f"unknown key {excerpt(f'{section}.{key}')}{hint}; keys of {section}: {', '.join(fields)}")
    sec: dict = {}
    name = None
    if "name" in fields:
        try:
            name = sec["name"] = _coerce(f"{section}.name", fields["name"], given.get("name", fields["name"].default))
        except ValueError as e:
            errors.append(str(e))
    for key, field in fields.items():
        if key == "name" or (field.only and name is None):
            continue
        if field.only and name not in field.only:
            if key in given:
                errors.append(f"{section}.{key} does not apply to {section} '{name}' (it applies to: "
                              f"{', '.join(field.only)}); remove it, or add -o {section}.{key}=null")
            continue
        try:
            sec[key] = _coerce(f"{section}.{key}", field, given.get(key, copy.deepcopy(field.default)))
        except ValueError as e:
            errors.append(str(e))
    return sec


def valid_device(device: str) -> bool:
    return device in ("cpu", "gpu", "auto") or (device.startswith("gpu:") and device[4:].isdigit())


def epochs_of_steps(steps: int, steps_per_epoch: int) -> int:
    """``train.steps`` as whole epochs: the nearest number, halves up (round() would go to the even one), at
    least 1."""
    return max(1, int(steps / steps_per_epoch + 0.5))


def has_validation(cfg: dict) -> bool:
    """Whether the config splits images off for validation (data.val_size or data.val_ratio above 0)."""
    d = cfg["data"]
    return d[datasets.get(d["name"]).val_key] > 0


def _cnn_checks(m: dict, image_size: list | None) -> list[str]:
    """The CNN's blocks against each other and against the input (28x28, or an image folder's image_size):
    odd kernels for 'same' padding, pooling, and nothing shrunk to nothing. Fills model.channels from
    model.blocks, so that the written config reads true."""
    errors: list[str] = []
    if m["blocks"] is None and m["kernel_size"] % 2 == 0:
        errors.append("model.kernel_size must be odd (the conv uses 'same' padding)")
    if m["blocks"] is not None:
        listed = [b["channels"] for b in m["blocks"]]
        if m["channels"] not in (SCHEMA["model"]["channels"].default, listed):
            errors.append("model.blocks and model.channels both describe the conv blocks: give one of them")
        m["channels"] = listed  # as the blocks say, so that the written config reads true
    h, w = image_size or (28, 28)
    for i, b in enumerate(blocks.cnn_blocks(m)):
        where = f"model.blocks[{i}]" if m["blocks"] is not None else f"block {i + 1} of model.channels"
        if b["padding_given"] == "same" and b["kernel"] % 2 == 0:
            errors.append(f"{where}: padding 'same' needs an odd kernel, got {b['kernel']}")
            break
        if b["pool"] != "none" and 2 * b["pool_padding"] > b["pool_size"]:
            errors.append(f"{where}: pool_padding {b['pool_padding']} is more than half the pool_size "
                          f"{b['pool_size']}")
            break
        h2, w2 = blocks.block_output(h, w, b)
        if h2 < 1 or w2 < 1:
            errors.append(f"{where} makes the {h}x{w} input it gets {max(h2, 0)}x{max(w2, 0)}: use fewer "
                          "blocks, less stride or pooling" + (" or a larger data.image_size"
                                                              if image_size else ""))
            break
        h, w = h2, w2
    return errors


def _cross_checks(cfg: dict) -> list[str]:
    errors = []
    name = cfg["output"]["name"]
    if name is not None and not NAME.match(name):
        errors.append(f"output.name (--name) is {excerpt(name)}: a run name is a plain folder name of at most 200 "
                      "letters, digits and . _ - + = , : @ that starts with a letter or digit")
    device = cfg["train"]["device"]
    if not valid_device(device):
        errors.append(f"train.device is {device!r}; allowed: cpu, gpu, gpu:N (N = 0, 1, ...), auto")
    d, m = cfg["data"], cfg["model"]
    ds = datasets.get(d["name"])
    folder = ds.kind == "folder"
    if m["name"] == "cnn":
        errors += _cnn_checks(m, d["image_size"] if folder and len(d["image_size"]) == 2 else None)
    a = cfg["augment"]
    if m["name"] == "cnn" and "flip" in m["tta"] and ds.mirrored:
        errors.append(f"model.tta is {m['tta']} on {ds.noun} (data.name {ds.name}): {ds.mirrored}. "
                      "Use model.tta shift, or mirror clothing (fashion-mnist) or image folders")
    if a["flip"] and ds.mirrored and a["apply"] != "never":
        errors.append(f"augment.flip is {a['flip']:g} on {ds.noun} (data.name {ds.name}): {ds.mirrored}. "
                      "Mirror clothing (fashion-mnist) or image folders, or set augment.flip 0")
    t = cfg["train"]
    if not has_validation(cfg) and t["patience"] and t["monitor"].startswith("val/"):
        which = f"data.{ds.val_key}"
        errors.append(f"{which} 0 leaves no validation split for train.monitor {t['monitor']} to watch: set "
                      "train.monitor to train/loss or train/acc, or train.patience to 0")
    if folder:
        if not d["folder"]:
            errors.append("data.folder is required with data.name: image_folder (the folder that holds one "
                          "sub-folder of images per class)")
        if len(d["image_size"]) != 2:
            errors.append(f"data.image_size must be [height, width], got {d['image_size']}")
        if d["val_ratio"] + d["test_ratio"] >= 0.95:
            errors.append(f"data.val_ratio + data.test_ratio is {d['val_ratio'] + d['test_ratio']:g}; leave at "
                          "least 5% of each class for training")
    return errors


# What may differ between a run's saved config and the config it is resumed with. Everything else
# changes the model, the data or the optimisation, and is refused.
SAFE_ON_RESUME = ("train.epochs", "train.log_every", "train.eval_batch_size", "train.device", "train.on_nonfinite",
                  "train.fast_conv", "train.threads", "train.patience", "train.init_from",
                  "checkpoint.keep_last", "checkpoint.every_steps", "output.visualdl",
                  *(f"log.{k}" for k in SCHEMA["log"]))


def differences(old: dict, new: dict) -> dict:
    """``{"section.key": (old, new)}`` for every value that differs."""
    out = {}
    for section in SCHEMA:
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b), key=lambda k: list(SCHEMA[section]).index(k)):
            if a.get(key, "(unset)") != b.get(key, "(unset)"):
                out[f"{section}.{key}"] = (a.get(key, "(unset)"), b.get(key, "(unset)"))
    return out


def stored(saved: Any, where: Path) -> dict:
    """The config stored in the checkpoint ``where``, validated; UserError if this version cannot use it."""
    try:
        return validate(saved, f"config stored in {Path(where).name}")
    except ConfigError as e:
        raise UserError(f"{where} holds a config this version cannot use: {e}") from None


NETWORK_KEYS = ("data.name", "data.image_size", "data.color", "data.resize")  # with model.*: what shapes the network


def check_same_network(saved: dict, cfg: dict, where: str) -> None:
    """UserError if ``cfg`` describes another network or input than ``saved``, the config stored in the
    checkpoint ``where`` (a ``config.yaml`` edited, or another run's checkpoints copied in)."""
    diff = {k: v for k, v in differences(saved, cfg).items() if k.startswith("model.") or k in NETWORK_KEYS}
    if diff:
        listing = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in config.yaml" for k, (a, b) in diff.items())
        raise UserError(f"{where} was trained with another model or data than config.yaml describes ({listing}); "
                        "restore config.yaml, or use the checkpoints of the run it describes")


def check_resume(saved: dict, cfg: dict, done_epochs: int) -> dict:
    """The differences between the config a run was trained with and the one it is resumed with, if they
    keep it the same training; else UserError naming them."""
    changes = differences(saved, cfg)
    unsafe = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
    if unsafe:
        listing = "\n".join(f"  - {k}: {a!r} -> {b!r}" for k, (a, b) in unsafe.items())
        raise UserError(f"resuming with these changes would not continue the same training:\n{listing}\n"
                        f"Start a new run with `mnist-kit train` instead. Safe to change on resume: "
                        f"{', '.join(SAFE_ON_RESUME)}")
    if "train.epochs" in changes:
        new = cfg["train"]["epochs"]
        if new < done_epochs:
            raise UserError(f"train.epochs={new}, but the run has already finished {done_epochs} epochs")
        if cfg["schedule"]["name"] in ("polynomial", "cosine"):
            raise UserError(f"cannot change train.epochs on resume with the {cfg['schedule']['name']} schedule: "
                            "its decay is spread over the original number of epochs. Start a new run instead")
    return changes


MAX_DEPTH = readback.MAX_YAML_DEPTH  # nesting of a config: sections, keys, lists
MAX_FILE = readback.MAX_YAML  # bytes of a config file


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


SHIPPED = Path(__file__).resolve().parent / "configs"  # the configs shipped with mnist-kit (package data)


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


def load(path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """Read a YAML config (or the defaults when ``path`` is None; a shipped config by its name: ``locate``),
    apply overrides, validate."""
    raw: Any = {}
    source = "config"
    if path is not None:
        p, _ = locate(path)
        source = str(p)
        try:
            raw = parse_yaml(readback.read_text(p, MAX_FILE))
        except readback.Unreadable as e:
            raise ConfigError(f"{e}; --config takes a YAML file") from None
        except ValueError as e:
            raise ConfigError(f"{p} is {e}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections ({', '.join(SCHEMA)})")
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


class _Dumper(yaml.SafeDumper):
    pass


class _Inline(dict):
    """A mapping written on one line (each entry of model.blocks)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence(
    "tag:yaml.org,2002:seq", v, flow_style=not any(isinstance(x, dict) for x in v)))
_Dumper.add_representer(_Inline, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))


def dump(cfg: dict) -> str:
    """The config as YAML: sections as blocks, lists inline, each conv block on a line of its own."""
    cfg = {s: ({k: [_Inline(b) for b in v] if k == "blocks" and v else v for k, v in sec.items()}
               if isinstance(sec, dict) else sec) for s, sec in cfg.items()}
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
