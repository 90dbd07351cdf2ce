"""``tune`` and ``study``: search a recipe with Optuna (``mnist-kit tune``), and read a study back
(``mnist-kit tune --show``). The search itself is ``mnist_kit.search``; here the arguments are checked and
merged with the config's ``tune:`` section (an argument given wins over the section)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_kit import config as _config
from mnist_kit.api.commands import ConfigLike, _config_name, load_config
from mnist_kit.api.results import Run, not_a
from mnist_kit.errors import ConfigError, UsageError, UserError

DEFAULT_TRIALS = 20
SECTION_KEYS = ("space", "trials", "timeout", "objective", "prune", "pruner")


@dataclass(frozen=True)
class Study:
    """A study and its trials (as ``mnist-kit tune --show --json`` prints them): ``best`` is the best trial's
    run, ``best_config`` the YAML file of its config (``train(best_config)`` trains it again)."""

    name: str
    storage: str  # its URL, without a password
    folder: Path | None  # where its trials' runs are (on this machine)
    objective: str
    trials: list[dict[str, Any]] = field(repr=False)
    best_trial: dict[str, Any] | None = None
    best_config: Path | None = None

    @property
    def best(self) -> Run | None:
        run = self.best_trial.get("run") if self.best_trial else None
        return Run(run) if run else None

    @property
    def best_value(self) -> float | None:
        return self.best_trial["value"] if self.best_trial else None

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best_trial["params"]) if self.best_trial else {}

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.name, "storage": self.storage, "folder": str(self.folder) if self.folder else None,
                "objective": self.objective, "best": self.best_trial,
                "best_config": str(self.best_config) if self.best_config else None, "trials": self.trials}


def _space_texts(space: Mapping[str, Any] | Sequence[str] | str, section: dict, source: str) -> list[str]:
    from mnist_kit.search import space as spaces

    if isinstance(space, str):
        raise not_a("space", space, 'a list of "KEY=SPEC" texts or a mapping {key: spec}')
    given = spaces.from_section(space, "space") if isinstance(space, Mapping) else list(space)
    merged = {t.partition("=")[0].strip(): t for t in
              (spaces.from_section(section["space"], f"{source}: tune") if "space" in section else [])}
    merged.update({t.partition("=")[0].strip(): t for t in given})  # --space wins, key by key
    if not merged:
        raise ConfigError("nothing to search: give --space KEY=SPEC (e.g. --space optimizer.lr=1e-4..1e-1:log) or "
                          "a tune: space: section in the config")
    return list(merged.values())


def _section(config: ConfigLike) -> tuple[dict, str]:
    if not isinstance(config, (str, Path)):
        return {}, "config"
    path = _config.locate(config)[0]
    section = _config.tune_section(path)
    unknown = [k for k in section if k not in SECTION_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key tune.{_config.excerpt(unknown[0])}"
                          f"{_config.suggest(str(unknown[0]), SECTION_KEYS)}; tune takes {', '.join(SECTION_KEYS)}")
    return section, str(path)


def _check_number(name: str, value: Any, low: float, whole: bool = True) -> None:
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value >= low or not math.isfinite(value):
        raise UsageError(f"{name} must be {'a whole number' if whole else 'a number'} of at least {low:g}, "
                         f"got {_config.excerpt(value)}")


def tune(config: ConfigLike = None, space: Mapping[str, Any] | Sequence[str] = (), overrides: Sequence[str] = (), *,
         trials: int | None = None, timeout: float | None = None, jobs: int = 1, storage: str | None = None,
         study: str | None = None, objective: str | None = None, prune: bool | None = None,
         pruner: str | None = None, seed: int | None = None, sampler_seed: int | None = None, say=None) -> Study:
    """Search ``space`` (``["optimizer.lr=1e-4..1e-1:log", "train.batch_size=64,128"]`` or a mapping; merged
    with the config's ``tune: space:``) with Optuna: ``trials`` trials in all (counted in the study, shared by
    every process and machine that works on it), each an ordinary run under ``ROOT/STUDY/``. Running it again
    continues the study. ``storage``: an SQLite file or a database URL (default: ROOT/tune.db)."""
    from mnist_kit import data
    from mnist_kit.search import space as spaces
    from mnist_kit.search import storage as stores
    from mnist_kit.search import tuner
    from mnist_kit.search.trial import Objective, Plan
    from mnist_kit.util.console import info

    section, source = _section(config)
    texts = _space_texts(space, section, source)
    base = load_config(config, [*overrides, *([f"train.seed={seed}"] if seed is not None else [])])
    config_name = _config_name(config, base)
    trials = section.get("trials", DEFAULT_TRIALS) if trials is None else trials
    timeout = section.get("timeout") if timeout is None else timeout
    _check_number("trials", trials, 1)
    _check_number("jobs", jobs, 1)
    if timeout is not None:
        _check_number("timeout", timeout, 1, whole=False)
    if sampler_seed is not None:
        _check_number("sampler_seed", sampler_seed, 0)
    pruner = section.get("pruner", "median") if pruner is None else pruner
    if pruner not in tuner.PRUNERS:
        raise UsageError(f"pruner {_config.excerpt(pruner)}: choose {' or '.join(tuner.PRUNERS)}")
    prune = section.get("prune", True) if prune is None else prune
    if not isinstance(prune, bool):
        raise UsageError(f"prune must be true or false, got {_config.excerpt(prune)}")
    goal = Objective.parse(section.get("objective", "val_acc") if objective is None else objective)
    params = spaces.check([spaces.parse(t) for t in texts], base)
    if not base.has_validation:
        raise ConfigError("tune compares trials on the validation split, and this config has none: set "
                          "data.val_size (data.val_ratio for an image folder) above 0")
    name = study if study is not None else f"tune-{config_name}"
    if not _config.NAME.match(str(name)):
        raise UsageError(f"study name {_config.excerpt(name)} must be a plain folder name of at most 200 letters, "
                         "digits and . _ - + = , : @ that starts with a letter or digit")
    stores.optuna()  # installed, or one line saying how to install it
    stores.check_url(stores.url_for(storage, Path(base.output.root)))
    if not (data.prepared_dir(base.data) / "prepared.json").is_file():
        data.load_dataset(base.data)  # the error that says what to prepare, before any trial starts
    root = Path(base.output.root).expanduser().resolve()
    settings = tuner.Settings(stores.url_for(storage, root), name, trials, timeout, jobs, prune, pruner, sampler_seed)
    plan = Plan(root / name, base, config_name, params, goal)
    return _study(tuner.tune(plan, settings, say or info))


def _study(out: dict) -> Study:
    return Study(out["study"], out["storage"], Path(out["folder"]) if out.get("folder") else None, out["objective"],
                 out["trials"], out["best"], Path(out["best_config"]) if out.get("best_config") else None)


def study(name: str | None = None, storage: str | None = None, root: str | Path | None = None) -> Study:
    """A study read back from its storage (``mnist-kit tune --show``): ``name``, or the only study there."""
    from mnist_kit.search import storage as stores
    from mnist_kit.search import study as studies
    from mnist_kit.search import tuner

    where = Path(root) if root is not None else Path(_config.SCHEMA["output"]["root"].default)
    url = stores.url_for(storage, where)
    if storage is None and not (where / stores.DB_FILE).is_file():
        raise UserError(f"no studies under {where} (no {stores.DB_FILE}); start one with mnist-kit tune")
    mod = stores.optuna()
    if name is None:
        try:
            names = mod.get_all_study_names(stores.open_storage(url, heartbeat=False))
        except stores.db_errors() as e:
            raise stores.storage_error(e, url) from None
        if len(names) != 1:
            raise UsageError(f"{stores.shown(url)} holds {len(names)} studies"
                             + (f" ({', '.join(names[:20])})" if names else "") + "; name one with --study NAME")
        name = names[0]
    settings = tuner.Settings(url, name, 1)
    found = tuner.open_study(settings)
    meta = found.user_attrs.get(studies.META)  # from the storage: anything may be there
    objective = meta.get("objective") if isinstance(meta, dict) else None
    objective = objective if isinstance(objective, str) and len(objective) <= 40 else "val_acc"
    rows = [r.to_dict() for r in studies.rows(found)]
    best = studies.best(found)
    best_row = next((r for r in rows if best is not None and r["trial"] == best.number), None)
    folder = where / name
    chosen = folder / f"best-trial-{best.number:04d}.yaml" if best is not None else None
    return Study(name, stores.shown(url), folder if folder.is_dir() else None, objective, rows, best_row,
                 chosen if chosen is not None and chosen.is_file() else None)
