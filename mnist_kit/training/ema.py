"""``train.ema``: an exponential moving average of the weights, the model that validation, the best checkpoint,
``eval``, ``export`` and ``train.init_from`` use.

After every update, each floating-point entry of the model's state dict (parameters and batch-norm running
statistics alike) moves towards the trained value: ``avg = d * avg + (1 - d) * value``, with
``d = min(train.ema, (1 + n) / (10 + n))`` after ``n`` updates, so that the average of a short run is not
held back by its random start (the warm-up of TensorFlow's ExponentialMovingAverage and timm's ModelEmaV2).
The average lives in numpy float32 beside the model and is saved in every checkpoint (``state["ema"]``):
a resume continues it exactly, and as every process holds the same weights after an update, 2 processes x B
average what 1 process x 2B does. Training itself never sees it.
"""

from __future__ import annotations

import contextlib

import numpy as np


class WeightAverage:
    def __init__(self, model, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.weights = _copy(model)

    def factor(self) -> float:
        """The decay of the next update."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self, model) -> None:
        d = np.float32(self.factor())
        for name, value in model.state_dict().items():
            avg = self.weights[name]
            if np.issubdtype(avg.dtype, np.floating):
                avg *= d
                avg += (np.float32(1.0) - d) * value.numpy()
            else:
                avg[...] = value.numpy()
        self.updates += 1

    def state(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": self.weights}

    def restore(self, state: dict | None, model) -> None:
        """Continue the average saved in a checkpoint; without one (``train.ema`` switched on at a resume),
        start it from the model's weights."""
        if state is None:
            self.updates, self.weights = 0, _copy(model)
        else:
            self.updates, self.weights = int(state["updates"]), {k: np.array(v) for k, v in state["weights"].items()}

    @contextlib.contextmanager
    def applied(self, model):
        """The model holds the averaged weights inside the block, its own (exactly) again after it."""
        own = _copy(model)
        model.set_state_dict(self.weights)
        try:
            yield
        finally:
            model.set_state_dict(own)


def _copy(model) -> dict:
    return {name: np.array(value.numpy(), copy=True) for name, value in model.state_dict().items()}
