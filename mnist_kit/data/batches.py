"""In-memory batches and the input normalisation.

The whole split stays in memory as uint8; each epoch's order is a permutation drawn from
``default_rng([seed, epoch])``, so the order of any epoch is known without replaying earlier ones
(which is what makes resuming at an epoch or a step exact). Normalisation happens per batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mnist_kit.config import Data


@dataclass(frozen=True)
class Normalization:
    """``x = (pixel / 255 - mean) / std``; travels with every run, checkpoint and export."""

    mean: float
    std: float

    @classmethod
    def from_config(cls, data_cfg: Data, x_train: np.ndarray) -> "Normalization":
        mean, std = data_cfg.mean, data_cfg.std
        if mean == "auto" or std == "auto":
            # exact, from a histogram of pixel values, in chunks: no float copy of the data set
            counts = np.zeros(256, np.int64)
            flat = x_train.reshape(len(x_train), -1)
            for i in range(0, len(flat), 4096):
                counts += np.bincount(flat[i:i + 4096].ravel(), minlength=256)
            values = np.arange(256) / 255.0
            m = float((counts * values).sum() / counts.sum())
            mean = m if mean == "auto" else mean
            std = float(np.sqrt((counts * (values - m) ** 2).sum() / counts.sum())) if std == "auto" else std
        return cls(round(float(mean), 6), round(float(std), 6))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W) or (N, H, W, 3) -> float32 network input (N, 1, H, W) or (N, 3, H, W)."""
        scale = np.float32(1.0 / (255.0 * self.std))
        shift = np.float32(-self.mean / self.std)
        out = x.astype(np.float32) * scale + shift
        if x.ndim == 4:
            return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        return out.reshape(x.shape[0], 1, *x.shape[1:])

    def to_dict(self) -> dict:
        return asdict(self)


class Batches:
    """Batches of one split. With ``world`` processes, global batch s is ``order[s*B*world:(s+1)*B*world]``
    and process ``rank`` takes its ``rank``-th slice of B images, so W processes with batch B see exactly
    the batches one process with batch W*B sees; the last incomplete global batch of an epoch is dropped
    then, so that every process takes the same number of steps."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, norm: Normalization,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world: int = 1):
        self.x, self.y, self.batch_size, self.norm = x, y, batch_size, norm
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world

    def __len__(self) -> int:
        if self.world > 1:
            return len(self.y) // (self.batch_size * self.world)
        return -(-len(self.y) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.y))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.y))

    def epoch(self, epoch: int = 0, start_step: int = 0, augment=None):
        """Yield (x float32 (B, C, H, W), y int64 (B,)) for the epoch, from batch ``start_step`` on;
        ``augment`` (an ``augment.Augment``) transforms each batch before normalisation, seeded by this
        split's seed, the epoch and the step, and by each image's place in the global batch."""
        order = self.order(epoch)
        b, g = self.batch_size, self.batch_size * self.world
        for step in range(start_step, len(self)):
            idx = order[step * g + self.rank * b:step * g + (self.rank + 1) * b]
            x = self.x[idx]
            if augment is not None and augment.active:
                x = augment.apply(x, self.seed, epoch, step, self.rank * b, min(g, len(order) - step * g))
            yield self.norm.apply(x), self.y[idx]
