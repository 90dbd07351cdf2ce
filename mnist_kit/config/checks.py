"""Validation: a config as YAML gave it (a mapping of sections, possibly partial) checked key by key against
``SCHEMA`` (unknown keys with did-you-mean, keys that do not apply to a section's name, kinds and ranges through
``config.coerce``), then across sections (the CNN's geometry, mirroring on digits, early stopping without
validation, image folders' splits), and returned complete as a ``Config``. Every problem of a config is
reported at once, one line each.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mnist_kit import datasets
from mnist_kit.config.coerce import coerce, excerpt, suggest
from mnist_kit.config.fields import NAME, Field, plain
from mnist_kit.config.schema import SCHEMA, Config
from mnist_kit.errors import ConfigError
from mnist_kit.models import blocks


def defaults() -> Config:
    """The complete default config: configs/cnn.yaml's data and network with the classic recipe (Adam 1e-3,
    batch 64, a constant rate, no label smoothing) and no augmentation, so that a config leaves out only
    what it means to take from the tutorial (``tests/test_config.py`` names every difference)."""
    return validate({})


def updated(cfg: Config, changes: dict[str, Any]) -> Config:
    """A new config: ``cfg`` with ``{"section.key": value}`` set (a value as YAML would give it; None: the
    default), validated.
    Another ``name`` of a section keeps only the keys that apply to it; ``train.epochs`` counts epochs (as
    ``-o train.epochs=N``: train.steps goes)."""
    raw = cfg.to_dict()
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        target = raw.setdefault(section, {})
        if value is None:  # as -o key=null: the default applies (or nothing, where the key does not apply)
            target.pop(key, None)
        else:
            target[key] = plain(value)
        if key == "name" and section in SCHEMA:  # another model (optimizer...): keep the keys that apply to it
            raw[section] = {k: v for k, v in target.items()
                            if k not in SCHEMA[section] or not SCHEMA[section][k].only
                            or value in SCHEMA[section][k].only or f"{section}.{k}" in changes}
        if dotted == "train.epochs":
            target.pop("steps", None)
    return validate(raw, "config with " + ", ".join(f"{k}={excerpt(v)}" for k, v in changes.items()))


def validate(raw: Any, source: str = "config") -> Config:
    """Check ``raw`` (as loaded from YAML, possibly partial: a mapping of sections) and return the complete,
    typed config. Raises ConfigError listing every problem found."""
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
    return Config.from_dict(out)


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
            name = sec["name"] = coerce(f"{section}.name", fields["name"], given.get("name", fields["name"].default))
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
            sec[key] = coerce(f"{section}.{key}", field, given.get(key, copy.deepcopy(field.default)))
        except ValueError as e:
            errors.append(str(e))
    return sec


def valid_device(device: str) -> bool:
    return device in ("cpu", "gpu", "auto") or (device.startswith("gpu:") and device[4:].isdigit())


def epochs_of_steps(steps: int, steps_per_epoch: int) -> int:
    """``train.steps`` as whole epochs: the nearest number, halves up (round() would go to the even one), at
    least 1."""
    return max(1, int(steps / steps_per_epoch + 0.5))


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
                      f"Use model.tta shift, or mirror {datasets.mirrorable()}")
    if a["flip"] and ds.mirrored and a["apply"] != "never":
        errors.append(f"augment.flip is {a['flip']:g} on {ds.noun} (data.name {ds.name}): {ds.mirrored}. "
                      f"Mirror {datasets.mirrorable()}, or set augment.flip 0")
    t = cfg["train"]
    if not d[ds.val_key] > 0 and t["patience"] and t["monitor"].startswith("val/"):
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


