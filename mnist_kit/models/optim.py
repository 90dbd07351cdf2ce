"""Losses, optimizers and learning-rate schedules, chosen by name.

Schedules are stepped once per batch; lengths given in epochs are turned into steps here.
"""

from __future__ import annotations

from mnist_kit.backend.runtime import paddle

F = paddle.nn.functional
lr_sched = paddle.optimizer.lr


def _cross_entropy(label_smoothing: float = 0.0):
    def loss(logits, labels):
        if not label_smoothing:
            return F.cross_entropy(logits, labels)
        k = logits.shape[-1]
        soft = F.one_hot(labels, k) * (1.0 - label_smoothing) + label_smoothing / k
        return -(soft * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()

    return loss


def _mse():
    """Squared error between the softmax output and the one-hot target, summed over classes."""

    def loss(logits, labels):
        probs = F.softmax(logits, axis=-1)
        return ((probs - F.one_hot(labels, logits.shape[-1])) ** 2).sum(axis=-1).mean()

    return loss


LOSSES = {"cross_entropy": _cross_entropy, "mse": _mse}


def build_loss(loss_cfg: dict):
    return LOSSES[loss_cfg["name"]](**{k: v for k, v in loss_cfg.items() if k != "name"})


def _one(_step):
    return 1.0


def build_schedule(cfg: dict, lr: float, steps_per_epoch: int, epochs: int):
    total = steps_per_epoch * epochs
    warmup = int(round(cfg["warmup_epochs"] * steps_per_epoch))
    rest = max(total - warmup, 1)
    name = cfg["name"]
    if name == "constant":
        sched = lr_sched.LambdaDecay(lr, _one)
    elif name == "step":
        sched = lr_sched.StepDecay(lr, step_size=max(int(round(cfg["step_epochs"] * steps_per_epoch)), 1),
                                   gamma=cfg["gamma"])
    elif name == "polynomial":
        sched = lr_sched.PolynomialDecay(lr, decay_steps=rest, end_lr=cfg["end_lr"], power=cfg["power"])
    elif name == "cosine":
        sched = lr_sched.CosineAnnealingDecay(lr, T_max=rest, eta_min=cfg["end_lr"])
    else:  # pragma: no cover - config validation keeps names in SCHEDULES
        raise KeyError(name)
    if warmup:
        sched = lr_sched.LinearWarmup(sched, warmup_steps=warmup, start_lr=0.0, end_lr=lr)
    return sched


def build_optimizer(cfg: dict, schedule, parameters):
    name, wd = cfg["name"], cfg["weight_decay"]
    common = {"learning_rate": schedule, "parameters": parameters,
              "grad_clip": paddle.nn.ClipGradByGlobalNorm(cfg["grad_clip"]) if cfg["grad_clip"] else None}
    l2 = paddle.regularizer.L2Decay(wd) if wd else None
    opt = paddle.optimizer
    if name == "sgd":
        return opt.SGD(weight_decay=l2, **common)
    if name == "momentum":
        return opt.Momentum(momentum=cfg["momentum"], use_nesterov=cfg["nesterov"], weight_decay=l2, **common)
    if name == "adagrad":
        return opt.Adagrad(epsilon=cfg["epsilon"], weight_decay=l2, **common)
    if name == "rmsprop":
        return opt.RMSProp(rho=cfg["rho"], epsilon=cfg["epsilon"], momentum=cfg["momentum"], weight_decay=l2, **common)
    if name == "adam":
        return opt.Adam(beta1=cfg["beta1"], beta2=cfg["beta2"], epsilon=cfg["epsilon"], weight_decay=l2, **common)
    if name == "adamw":
        return opt.AdamW(beta1=cfg["beta1"], beta2=cfg["beta2"], epsilon=cfg["epsilon"], weight_decay=wd, **common)
    raise KeyError(name)  # pragma: no cover


OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "polynomial", "cosine")
