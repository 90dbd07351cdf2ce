"""The config's schema: one frozen dataclass per section, each key declared once (``config.fields.option``)
with its type, default, range, choices and help; ``Config``, the whole config. ``SCHEMA`` (section -> key ->
``Field``) is derived from the dataclasses: validation (``config.checks``), coercion (``config.coerce``) and
docs/config.md read it, so that keys, defaults, ranges and help have one source.

Sections with a ``name`` key (model, loss, optimizer, schedule) are tagged unions, as are the data keys of one
kind of data set: a key marked ``only=(...)`` applies to those names alone. A section holds every key (one that
does not apply keeps its default); ``Config.to_dict``, the YAML and checkpoints hold the keys that apply.

Why dataclasses and not pydantic: validation is mnist-kit's own (did-you-mean, every problem of a file in one
message, tagged unions, checks across sections, YAML 1.1's quirks), which pydantic would have to be bent to;
frozen dataclasses give attribute access that mypy checks, and immutability, with no new dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_kit import datasets
from mnist_kit.config.fields import (
    ACTIVATIONS,
    AMP,
    DATASETS,
    FOLDERS,
    IDX,
    INITS,
    LOSSES,
    MODELS,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    SEED_MAX,
    TTA,
    Block,
    Field,
    Section,
    build,
    fields_of,
    option,
)

# augment.apply: auto turns the transforms on for these (the catalogue's augment_by_default)
AUTO_AUGMENTED = datasets.listing(f"{d.title} {d.noun} (data.name {d.name})" for d in datasets.CATALOG.values()
                                  if d.augment_by_default)


@dataclass(frozen=True, repr=False)
class Data(Section):
    KEY = "data"

    name: str = option("mnist", f"dataset to train on: {', '.join(IDX)}, or {FOLDERS[0]} (your own "
                       "images, one sub-folder per class)", choices=DATASETS)
    root: str | None = option(None, "prepared-data directory (the cache prepare writes); null = $MNIST_KIT_DATA or "
                              "~/.cache/mnist-kit", path=True)
    folder: str | None = option(None, "the image folder: one sub-folder of images per class, class names = "
                                "sub-folder names in sorted order", only=FOLDERS, path=True)
    image_size: tuple[int, ...] = option((28, 28), "height and width every image is resized to",
                                         min=1, max=4096, only=FOLDERS)
    color: str = option("grayscale", "grayscale (1 channel) or rgb (3 channels)",
                        choices=("grayscale", "rgb"), only=FOLDERS)
    resize: str = option("stretch", "stretch to image_size, or pad: keep the aspect ratio and fill the rest with the "
                         "colour of the image's border", choices=("stretch", "pad"), only=FOLDERS)
    bad_files: str = option("error", "files that cannot be read as images: error (list them and stop) or skip (leave "
                            "them out and count them)", choices=("error", "skip"), only=FOLDERS)
    val_size: int = option(10000, "images split off the training set for validation; 0 = none: train on every "
                           "training image (the last step before deploying; the best checkpoint is then the last, "
                           "unless train.monitor watches train/loss or train/acc)", min=0, max=10**7, only=IDX)
    val_ratio: float = option(0.15, "share of each class for validation; 0 = none (as data.val_size 0)",
                              min=0.0, max=0.9, only=FOLDERS)
    test_ratio: float = option(0.15, "share of each class held out for test; 0 = no test set",
                               min=0.0, max=0.9, only=FOLDERS)
    balance: str = option("none", "oversample: repeat training images of smaller classes until each class has as "
                          "many as the largest (validation and test untouched)",
                          choices=("none", "oversample"), only=FOLDERS)
    split_seed: int = option(0, "seed of the train/validation(/test) split (independent of train.seed)",
                             min=0, max=SEED_MAX)
    mean: float | str = option("auto", "normalisation mean of pixels in [0,1]; auto = from the training split",
                               min=0.0, max=1.0)
    std: float | str = option("auto", "normalisation std of pixels in [0,1]; auto = from the training split",
                              min=1e-6, max=1.0)

    @property
    def dataset(self) -> datasets.DataSet:
        """The catalogue entry of ``name``."""
        return datasets.get(self.name)

    @property
    def validation(self) -> float:
        """The value of the key that sets the validation split (the data set's ``val_key``): data.val_size
        (images) or data.val_ratio (a share of each class)."""
        return getattr(self, self.dataset.val_key)


@dataclass(frozen=True, repr=False)
class Model(Section):
    KEY = "model"

    name: str = option("cnn", "network architecture", choices=MODELS)
    hidden: tuple[int, ...] = option((256, 128), "hidden layer widths", min=1, max=65536, only=("mlp",))
    activation: str = option("relu", "hidden-layer activation", choices=ACTIVATIONS, only=("mlp",))
    channels: tuple[int, ...] = option((20, 20), "output channels of each conv+ReLU+max-pool block",
                                       min=1, max=1024, only=("cnn",))
    kernel_size: int = option(5, "square conv kernel size (odd; 'same' padding)", min=1, max=31, only=("cnn",))
    batch_norm: bool = option(False, "batch normalisation after each conv", only=("cnn",))
    head: tuple[int, ...] | None = option(None, "widths of hidden linear layers (each followed by ReLU) between the "
                                          "conv blocks and the output layer, e.g. [256]; null = none (the conv "
                                          "features go straight to the output)", min=1, max=65536, only=("cnn",))
    dropout: float = option(0.0, "dropout probability before the last linear layer",
                            min=0.0, max=0.99, only=("mlp", "cnn"))
    tta: str = option("none", "test-time augmentation, part of the network outside training (validation, eval, "
                      "export, predict, serve): the class probabilities of each image averaged with those of its "
                      "copies: flip = mirrored left to right (clothing; refused on digits), shift = moved one "
                      "pixel left and one right, flip+shift = all four; costs as many forward passes; none",
                      choices=TTA, only=("cnn",))
    blocks: tuple[Block, ...] | None = option(None, "the conv blocks one by one, instead of "
                                              "channels/kernel_size/batch_norm: a list of {channels, kernel, "
                                              "stride, padding (same or pixels), activation (relu, sigmoid, tanh, "
                                              "leaky_relu, gelu, none), pool (max, avg, none), pool_size, "
                                              "pool_stride, pool_padding, batch_norm}; only channels is required "
                                              "(kernel and batch_norm default to kernel_size and batch_norm; "
                                              "stride 1, padding same, relu, max-pool 2)", only=("cnn",))
    init: str = option("default", "initial weights of the conv and linear layers: default = Paddle's own; kaiming "
                       "(He normal), xavier (Glorot uniform), normal (std 0.01), uniform (+-0.05), biases 0; torch "
                       "= PyTorch's default: weights and biases uniform in +-1/sqrt(fan_in)", choices=INITS)


@dataclass(frozen=True, repr=False)
class Loss(Section):
    KEY = "loss"

    name: str = option("cross_entropy", "training loss", choices=LOSSES)
    label_smoothing: float = option(0.0, "label smoothing epsilon", min=0.0, max=0.99, only=("cross_entropy",))


@dataclass(frozen=True, repr=False)
class Optimizer(Section):
    KEY = "optimizer"

    name: str = option("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = option(0.001, "base learning rate", min=0.0, max=1e30)
    weight_decay: float = option(0.0, "L2 weight decay (decoupled for adamw)", min=0.0, max=1e3)
    grad_clip: float = option(0.0, "clip gradients to this global L2 norm; 0 = off", min=0.0, max=1e9)
    momentum: float = option(0.9, "momentum factor", min=0.0, max=1.0, only=("momentum", "rmsprop"))
    nesterov: bool = option(False, "Nesterov momentum", only=("momentum",))
    beta1: float = option(0.9, "first-moment decay", min=0.0, max=1.0, only=("adam", "adamw"))
    beta2: float = option(0.999, "second-moment decay", min=0.0, max=1.0, only=("adam", "adamw"))
    rho: float = option(0.95, "squared-gradient decay", min=0.0, max=1.0, only=("rmsprop",))
    epsilon: float = option(1e-8, "numerical stability term",
                            min=0.0, max=1.0, only=("adagrad", "rmsprop", "adam", "adamw"))


@dataclass(frozen=True, repr=False)
class Schedule(Section):
    KEY = "schedule"

    name: str = option("constant", "learning-rate schedule (stepped every batch)", choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "linear warm-up from 0 to lr over this many epochs", min=0.0, max=1e6)
    step_epochs: float = option(1.0, "multiply lr by gamma every this many epochs", min=1e-9, max=1e6, only=("step",))
    gamma: float = option(0.1, "decay factor", min=0.0, max=1e3, only=("step",))
    end_lr: float = option(0.0, "final learning rate", min=0.0, max=1e3, only=("polynomial", "cosine"))
    power: float = option(1.0, "polynomial power", min=0.0, max=1e3, only=("polynomial",))


@dataclass(frozen=True, repr=False)
class Train(Section):
    KEY = "train"

    epochs: int = option(5, "epochs to train", min=1, max=100000)
    steps: int = option(0, "run length in optimizer steps instead of train.epochs: the nearest whole number of "
                        "epochs (at least 1), which run.json records (train.epochs stays as given); one recipe then "
                        "trains as many updates on 7,000 images as on 50,000; 0 = train.epochs decides (-o "
                        "train.epochs=N sets it to 0)",
                        min=0, max=10**9)
    batch_size: int = option(64, "training batch size (per process)", min=1, max=65536)
    eval_batch_size: int = option(256, "batch size for validation and evaluation", min=1, max=65536)
    seed: int = option(0, "seed of weights, data order and dropout; same seed + config = same run on CPU",
                       min=0, max=SEED_MAX)
    device: str = option("auto", "cpu, gpu, gpu:N or auto")
    amp: str = option("off", "mixed precision on a GPU: fp16 (float16, with a dynamic loss scale), bf16 (bfloat16) "
                      "or off; Paddle's CPU build runs neither", choices=AMP)
    log_every: int = option(50, "steps between progress lines and logged training scalars", min=1, max=10**9)
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay (e.g. 0.99), updated "
                        "after every step (the first steps use less: min(ema, (1 + n) / (10 + n))); validation, "
                        "the best checkpoint, eval, export and train.init_from then use the average; 0 = off",
                        min=0.0, max=0.9999)
    on_nonfinite: str = option("stop", "a NaN/inf loss: stop the run, or skip that batch's update",
                               choices=("stop", "skip"))
    fast_conv: str = option("auto", "the CNN's conv blocks on oneDNN (CPU, several times faster): auto = when it "
                            "passes its self-check; on = fail if it cannot; off = Paddle's stock layers",
                            choices=("auto", "on", "off"))
    threads: int = option(0, "CPU threads of the oneDNN conv blocks in each process; 0 = the cores divided among "
                          "this machine's processes (never more)", min=0, max=1024)
    monitor: str = option("val/acc", "the epoch metric that chooses the best checkpoint (best.pdckpt) and that "
                          "patience watches", choices=MONITORS)
    patience: int = option(0, "early stopping: end the run after this many epochs in a row without a better "
                           "train.monitor; 0 = off", min=0, max=100000)
    init_from: str | None = option(None, "start from these weights (fine-tuning, or a new schedule): a run (its best "
                                   "checkpoint), a .pdckpt file or an export folder; every parameter's shape must "
                                   "match; the optimizer starts fresh; null = new weights", path=True)


@dataclass(frozen=True, repr=False)
class Augment(Section):
    KEY = "augment"

    apply: str = option("auto", f"when the transforms below are used: auto = on {AUTO_AUGMENTED} only (on "
                        "Fashion-MNIST, whose objects are all framed alike, they cost test accuracy); always; never",
                        choices=("auto", "always", "never"))
    rotate: float = option(0.0, "random rotation, degrees: uniform in [-rotate, rotate]; 0 = off", min=0.0, max=180.0)
    scale: float = option(0.0, "random zoom: uniform in [1 - scale, 1 + scale]; 0 = off", min=0.0, max=0.9)
    translate: float = option(0.0, "random shift, fraction of the side, each axis: uniform in [-translate, "
                              "translate]; 0 = off", min=0.0, max=0.5)
    shear: float = option(0.0, "random horizontal shear, degrees: uniform in [-shear, shear]; 0 = off",
                          min=0.0, max=60.0)
    stroke: float = option(0.0, "random stroke width change, pixels: uniform in [-stroke, stroke] (thin or thicken "
                           "bright strokes); 0 = off", min=0.0, max=3.0)
    elastic: float = option(0.0, "elastic distortion strength alpha, pixels (Simard et al. 2003: 34 with sigma 4); 0 "
                            "= off", min=0.0, max=200.0)
    elastic_sigma: float = option(4.0, "smoothness of the elastic distortion (Gaussian sigma, pixels)",
                                  min=0.5, max=50.0)
    erase: float = option(0.0, "probability of erasing one random rectangle of an image (filled with its edge "
                          "colour); 0 = off", min=0.0, max=1.0)
    erase_area: float = option(0.2, "largest erased area, fraction of the image (the smallest is 0.02)",
                               min=0.02, max=1.0)
    flip: float = option(0.0, "probability of mirroring an image left to right (for clothing: a mirrored shirt is a "
                         "shirt, a mirrored 2 is not a digit); 0 = off", min=0.0, max=1.0)


@dataclass(frozen=True, repr=False)
class Checkpoint(Section):
    KEY = "checkpoint"

    keep_last: int = option(3, "keep the newest K epoch checkpoints (plus best.pdckpt); 0 = keep all", min=0, max=10**6)
    every_steps: int = option(0, "also checkpoint every N steps inside an epoch; 0 = at epoch ends only",
                              min=0, max=10**9)


@dataclass(frozen=True, repr=False)
class Log(Section):
    KEY = "log"

    images: bool = option(True, "input grid at the start; misclassified grid and confusion matrix at each validation")
    histogram_every: int = option(200, "steps between histograms of every parameter and gradient; 0 = off",
                                  min=0, max=10**9)
    curves: bool = option(True, "PR and ROC curve of each class at each validation")
    embeddings: int = option(500, "validation images whose penultimate features are logged at the last epoch; 0 = off",
                             min=0, max=100000)
    graph: bool = option(True, "the model graph (for the board's graph pages)")
    hparams: bool = option(True, "hyper-parameters with the final metrics (the board's comparison view)")
    config_text: bool = option(True, "the resolved config as text")


@dataclass(frozen=True, repr=False)
class Output(Section):
    KEY = "output"

    root: str = option("checkpoints", "directory that holds one directory per run", path=True)
    name: str | None = option(None, "run name; null = CONFIG-YYYYmmdd-HHMMSS (CONFIG = the config file name)")
    visualdl: bool = option(True, "write VisualDL logs to the vdl folder of the run (the log section says what)")



SECTIONS: dict[str, type] = {cls.KEY: cls for cls in (Data, Model, Loss, Optimizer, Schedule, Train, Augment,
                                                       Checkpoint, Log, Output)}
SCHEMA: dict[str, dict[str, Field]] = {key: fields_of(cls) for key, cls in SECTIONS.items()}


@dataclass(frozen=True)
class Config:
    """A whole, validated config: ``cfg.optimizer.lr``. Made by ``config.load``/``config.validate`` (or
    ``mnist_kit.load_config``); frozen: ``config.updated(cfg, {"train.epochs": 3})`` returns a new one,
    validated again."""

    data: Data = Data()
    model: Model = Model()
    loss: Loss = Loss()
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    train: Train = Train()
    augment: Augment = Augment()
    checkpoint: Checkpoint = Checkpoint()
    log: Log = Log()
    output: Output = Output()

    @classmethod
    def from_dict(cls, values: dict[str, dict[str, Any]]) -> Config:
        """The config from ``config.validate``'s complete dict (use ``config.validate`` for anything else)."""
        return cls(**{key: build(SECTIONS[key], values[key]) for key in SECTIONS})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The config as YAML and checkpoints hold it: every section, the keys that apply to it."""
        return {key: getattr(self, key).to_dict() for key in SECTIONS}

    @property
    def dataset(self) -> datasets.DataSet:
        """The catalogue entry of ``data.name``."""
        return self.data.dataset

    @property
    def has_validation(self) -> bool:
        """Whether the config splits images off for validation (data.val_size or data.val_ratio above 0)."""
        return self.data.validation > 0
