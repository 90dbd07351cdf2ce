"""The experiment config: a typed, frozen ``Config`` (one dataclass per section: ``cfg.optimizer.lr``), read
from YAML with ``-o section.key=value`` overrides and validated strictly, and the policy of what may change
on resume. By concern:

- ``fields``: how a key is declared (``option``, ``Field``, ``Section``, ``Block``) and the choices offered;
- ``schema``: the sections and ``Config``; ``SCHEMA`` (section -> key -> ``Field``) derived from them;
- ``coerce``: a YAML value made the kind its key says, in range, among the choices;
- ``checks``: ``validate`` (every key, then across sections), ``defaults``;
- ``resume``: ``check_resume``, ``SAFE_ON_RESUME``, ``check_same_network``, ``stored``, ``config_hash``;
- ``files``: YAML, overrides, the shipped configs by name (``locate``), ``load``, ``dump``.

May import: ``errors``, ``datasets``, ``models`` (only ``registry`` and ``blocks``, plain Python), ``util``
(``readback``). Nothing here imports paddle.
"""

from mnist_kit.config.checks import defaults, epochs_of_steps, updated, valid_device, validate
from mnist_kit.config.coerce import clip, excerpt, number, suggest
from mnist_kit.config.fields import (
    BLOCK_FIELDS,
    DATASETS,
    LOSSES,
    MAX_LIST,
    MODELS,
    NAME,
    OPTIMIZERS,
    SCHEDULES,
    SEED_MAX,
    Block,
    Field,
)
from mnist_kit.config.files import (
    MAX_DEPTH,
    MAX_FILE,
    SHIPPED,
    dump,
    load,
    locate,
    parse_override,
    parse_yaml,
    purpose,
    refuse_control_characters,
    shipped,
    shipped_named,
    tune_section,
)
from mnist_kit.config.resume import (
    NETWORK_KEYS,
    SAFE_ON_RESUME,
    check_resume,
    check_same_network,
    config_hash,
    differences,
    stored,
)
from mnist_kit.config.schema import (
    SCHEMA,
    SECTIONS,
    Augment,
    Checkpoint,
    Config,
    Data,
    Log,
    Loss,
    Model,
    Optimizer,
    Output,
    Schedule,
    Train,
)
from mnist_kit.errors import ConfigError  # noqa: F401  (config.ConfigError, as before the package)

__all__ = [
    "BLOCK_FIELDS", "DATASETS", "LOSSES", "MAX_DEPTH", "MAX_FILE", "MAX_LIST", "MODELS", "NAME", "NETWORK_KEYS",
    "OPTIMIZERS", "SAFE_ON_RESUME", "SCHEDULES", "SCHEMA", "SECTIONS", "SEED_MAX", "SHIPPED", "Augment", "Block",
    "Checkpoint", "Config", "Data", "Field", "Log", "Loss", "Model", "Optimizer", "Output", "Schedule", "Train",
    "check_resume", "check_same_network", "clip", "config_hash", "defaults", "differences", "dump",
    "epochs_of_steps", "excerpt", "load", "locate", "number", "parse_override", "parse_yaml", "purpose",
    "refuse_control_characters", "shipped", "shipped_named", "stored", "suggest", "tune_section", "updated",
    "valid_device", "validate"]
