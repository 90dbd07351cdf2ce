"""The names a config may choose, each with what builds it: the one list of networks, losses, optimizers,
schedules, activations and initialisations. ``config.SCHEMA`` takes its choices from here, and the builders
(``networks.build_model``, ``losses.build_loss``, ``optim.build_optimizer``, ``optim.build_schedule``) look
names up here, so a name is added in one place (docs/extending.md).

A builder is written ``"module:attribute"`` and imported only when something is built: the config reads
these names without importing paddle.
"""

from __future__ import annotations

import importlib

MODELS = {  # model.name -> the network's class: (input_shape, num_classes, **the model section's keys)
    "linear": "mnist_kit.models.networks:Linear",
    "mlp": "mnist_kit.models.networks:MLP",
    "cnn": "mnist_kit.models.networks:CNN",
}
LOSSES = {  # loss.name -> f(**the loss section's keys) -> loss(logits, labels)
    "cross_entropy": "mnist_kit.models.losses:cross_entropy",
    "mse": "mnist_kit.models.losses:mse",
}
OPTIMIZERS = {  # optimizer.name -> f(cfg, common keyword arguments, L2 regularizer or None) -> optimizer
    "sgd": "mnist_kit.models.optim:sgd",
    "momentum": "mnist_kit.models.optim:momentum",
    "adagrad": "mnist_kit.models.optim:adagrad",
    "rmsprop": "mnist_kit.models.optim:rmsprop",
    "adam": "mnist_kit.models.optim:adam",
    "adamw": "mnist_kit.models.optim:adamw",
}
SCHEDULES = {  # schedule.name -> f(cfg, lr, steps after the warm-up, steps per epoch) -> LRScheduler
    "constant": "mnist_kit.models.optim:constant",
    "step": "mnist_kit.models.optim:step",
    "polynomial": "mnist_kit.models.optim:polynomial",
    "cosine": "mnist_kit.models.optim:cosine",
}
ACTIVATIONS = {  # model.activation (the mlp's hidden layers) -> the layer class
    "relu": "paddle.nn:ReLU",
    "sigmoid": "paddle.nn:Sigmoid",
    "tanh": "paddle.nn:Tanh",
}
BLOCK_ACTIVATIONS = {  # model.blocks[].activation (the cnn's blocks) -> the layer class; "none" is none
    **ACTIVATIONS,
    "leaky_relu": "paddle.nn:LeakyReLU",
    "gelu": "paddle.nn:GELU",
}
POOLS = {"max": "paddle.nn:MaxPool2D", "avg": "paddle.nn:AvgPool2D"}  # model.blocks[].pool; "none" is none
# model.init: default (Paddle's own), or drawn anew as networks.initialize says
INITS = ("default", "kaiming", "xavier", "normal", "uniform", "torch")


def resolve(table: dict[str, str], name: str):
    """The builder registered under ``name`` in ``table`` (imported now)."""
    module, _, attribute = table[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
