"""The training losses, by name (``models/registry.py``: ``loss.name``); each takes the loss section's keys
and returns ``loss(logits, labels)``, the batch's mean."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_kit.backend.runtime import paddle
from mnist_kit.models import registry

if TYPE_CHECKING:
    from mnist_kit.config import Loss

F = paddle.nn.functional


def cross_entropy(label_smoothing: float = 0.0):
    def loss(logits, labels):
        if not label_smoothing:
            return F.cross_entropy(logits, labels)
        k = logits.shape[-1]
        soft = F.one_hot(labels, k) * (1.0 - label_smoothing) + label_smoothing / k
        return -(soft * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()

    return loss


def mse():
    """Squared error between the softmax output and the one-hot target, summed over classes."""

    def loss(logits, labels):
        probs = F.softmax(logits, axis=-1)
        return ((probs - F.one_hot(labels, logits.shape[-1])) ** 2).sum(axis=-1).mean()

    return loss


def build_loss(loss_cfg: Loss):
    options = {k: v for k, v in loss_cfg.to_dict().items() if k != "name"}
    return registry.resolve(registry.LOSSES, loss_cfg.name)(**options)
