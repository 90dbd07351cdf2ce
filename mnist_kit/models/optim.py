"""Optimizers and learning-rate schedules, by name (``models/registry.py``: ``optimizer.name``,
``schedule.name``).

Schedules are stepped once per batch; lengths given in epochs are turned into steps here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_kit.backend.runtime import paddle
from mnist_kit.models import registry

if TYPE_CHECKING:
    from mnist_kit.config import Optimizer, Schedule

lr_sched = paddle.optimizer.lr
opt = paddle.optimizer


# ---------------------------------------------------------------- optimizers: f(cfg, common, l2)
# common: learning_rate (the schedule), parameters and grad_clip; l2: the weight decay as a regularizer

def sgd(cfg: Optimizer, common: dict, l2):
    return opt.SGD(weight_decay=l2, **common)


def momentum(cfg: Optimizer, common: dict, l2):
    return opt.Momentum(momentum=cfg.momentum, use_nesterov=cfg.nesterov, weight_decay=l2, **common)


def adagrad(cfg: Optimizer, common: dict, l2):
    return opt.Adagrad(epsilon=cfg.epsilon, weight_decay=l2, **common)


def rmsprop(cfg: Optimizer, common: dict, l2):
    return opt.RMSProp(rho=cfg.rho, epsilon=cfg.epsilon, momentum=cfg.momentum, weight_decay=l2, **common)


def adam(cfg: Optimizer, common: dict, l2):
    return opt.Adam(beta1=cfg.beta1, beta2=cfg.beta2, epsilon=cfg.epsilon, weight_decay=l2, **common)


def adamw(cfg: Optimizer, common: dict, l2):
    """Decoupled weight decay: the rate itself, not a regularizer."""
    return opt.AdamW(beta1=cfg.beta1, beta2=cfg.beta2, epsilon=cfg.epsilon, weight_decay=cfg.weight_decay,
                     **common)


def build_optimizer(cfg: Optimizer, schedule, parameters):
    wd = cfg.weight_decay
    common = {"learning_rate": schedule, "parameters": parameters,
              "grad_clip": paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip else None}
    l2 = paddle.regularizer.L2Decay(wd) if wd else None
    return registry.resolve(registry.OPTIMIZERS, cfg.name)(cfg, common, l2)


# ---------------------------------------------------------------- schedules: f(cfg, lr, rest, steps_per_epoch)
# rest: the steps after the warm-up

def _one(_step):
    return 1.0


def constant(cfg: Schedule, lr: float, rest: int, steps_per_epoch: int):
    return lr_sched.LambdaDecay(lr, _one)


def step(cfg: Schedule, lr: float, rest: int, steps_per_epoch: int):
    return lr_sched.StepDecay(lr, step_size=max(int(round(cfg.step_epochs * steps_per_epoch)), 1),
                              gamma=cfg.gamma)


def polynomial(cfg: Schedule, lr: float, rest: int, steps_per_epoch: int):
    return lr_sched.PolynomialDecay(lr, decay_steps=rest, end_lr=cfg.end_lr, power=cfg.power)


def cosine(cfg: Schedule, lr: float, rest: int, steps_per_epoch: int):
    return lr_sched.CosineAnnealingDecay(lr, T_max=rest, eta_min=cfg.end_lr)


def build_schedule(cfg: Schedule, lr: float, steps_per_epoch: int, epochs: int):
    """``schedule.name``, after a linear warm-up from 0 to ``lr`` over ``schedule.warmup_epochs``."""
    total = steps_per_epoch * epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    sched = registry.resolve(registry.SCHEDULES, cfg.name)(cfg, lr, max(total - warmup, 1), steps_per_epoch)
    if warmup:
        sched = lr_sched.LinearWarmup(sched, warmup_steps=warmup, start_lr=0.0, end_lr=lr)
    return sched
