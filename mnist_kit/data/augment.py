"""Augmentation of training batches: random affine, stroke width, elastic distortion, random erasing.

The whole batch is transformed at once in numpy (one batched bilinear warp for the affine and elastic
parts together; no loop over images). Each image's random parameters come from its place in the *global*
batch of a step, drawn from ``default_rng([train.seed, STREAM, transform, epoch, step])``: so a resume at
any step redoes exactly the same transforms, and 2 processes x batch B see exactly what 1 process x 2B
sees. Each transform draws from its own stream, so switching one on leaves the others' draws as they were.

Order: stroke width (on the original pixel grid), then the warp, then erasing. Images are float pixel
values (N, H, W) or (N, H, W, C) in [0, 255]; the warp reads outside the image as its nearest edge pixel
(MNIST's black border; a photo's own edge). Labels are never touched, and nothing flips: a mirrored 2 or 5
is not a digit.

    augment.Augment.from_config(cfg.augment, cfg.data.name).apply(x, seed, epoch, step, first, total)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from mnist_kit import datasets

if TYPE_CHECKING:
    from mnist_kit.config import Augment as AugmentConfig

STREAM = 0x61756736  # "aug6": the augmentation's seeds never collide with the data order's ([seed, epoch])
_AFFINE, _STROKE, _ELASTIC, _ERASE, _FLIP = range(5)
ERASE_ASPECT = (0.3, 3.3)  # erased rectangles' height/width range (Zhong et al., 2017)
ERASE_MIN_AREA = 0.02


@dataclass(frozen=True)
class Augment:
    """The ``augment`` config section's transforms; every magnitude 0 means off, and all 0 is no
    augmentation at all (``augment.apply`` decides whether a data set gets them: ``from_config``)."""

    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]; positive = counter-clockwise as seen
    scale: float = 0.0  # zoom factor uniform in [1 - scale, 1 + scale]
    translate: float = 0.0  # shift in fractions of the side, uniform in [-translate, translate] on each axis
    shear: float = 0.0  # horizontal shear angle in degrees, uniform in [-shear, shear]
    stroke: float = 0.0  # stroke width change in pixels, uniform in [-stroke, stroke] (<0 thins, >0 thickens)
    elastic: float = 0.0  # elastic distortion strength alpha in pixels (Simard et al. 2003 used 34 for MNIST)
    elastic_sigma: float = 4.0  # smoothness of the elastic field (Gaussian sigma in pixels)
    erase: float = 0.0  # probability that an image gets one erased rectangle
    erase_area: float = 0.2  # an erased rectangle's area: uniform in [0.02, erase_area] of the image
    flip: float = 0.0  # probability that an image is mirrored left to right (clothing; never digits)

    @classmethod
    def from_config(cls, section: AugmentConfig, dataset: str = "mnist") -> "Augment":
        """The section's transforms, or none when ``augment.apply`` leaves them off for ``dataset``."""
        if skipped(section, dataset):
            return cls()
        return cls(**{f.name: float(getattr(section, f.name)) for f in fields(cls)})

    @property
    def active(self) -> bool:
        return bool(self.rotate or self.scale or self.translate or self.shear or self.stroke or self.elastic
                    or self.erase or self.flip)

    def describe(self) -> str:
        """The transforms that are on, with their magnitudes: 'rotate 10, stroke 0.5' or 'off'."""
        on = [f"{f.name} {getattr(self, f.name):g}" for f in fields(self)
              if f.name not in ("elastic_sigma", "erase_area") and getattr(self, f.name)]
        if self.elastic:
            on[[s.split()[0] for s in on].index("elastic")] += f" (sigma {self.elastic_sigma:g})"
        if self.erase:
            on[[s.split()[0] for s in on].index("erase")] += f" (area up to {self.erase_area:g})"
        return ", ".join(on) or "off"

    def apply(self, x: np.ndarray, seed: int, epoch: int, step: int, first: int = 0, total: int | None = None
              ) -> np.ndarray:
        """Transform images ``x`` (uint8 or float, (N, H, W) or (N, H, W, C)) that sit at ``first`` ..
        ``first + N - 1`` of global batch ``step`` of ``epoch``, which holds ``total`` images (default N).
        Returns float32 pixel values in [0, 255] of the same shape; ``x`` is not changed."""
        n = len(x)
        total = n if total is None else total
        out = np.array(x, dtype=np.float32)  # a copy: the steps below may work in place
        if not self.active or n == 0:
            return out
        rows = slice(first, first + n)

        def rng(transform):
            return np.random.default_rng([seed, STREAM, transform, epoch, step])

        if self.stroke:
            out = stroke_width(out, rng(_STROKE).uniform(-self.stroke, self.stroke, total)[rows])
        h, w = out.shape[1:3]
        geometric = self.rotate or self.scale or self.translate or self.shear
        if geometric or self.elastic:
            ys, xs = self._affine_coordinates(rng(_AFFINE), total, h, w, rows) if geometric else _identity(n, h, w)
            if self.elastic:
                dy, dx = elastic_field(rng(_ELASTIC), total, h, w, self.elastic, self.elastic_sigma)
                ys, xs = ys + dy[rows], xs + dx[rows]
            out = warp(out, ys, xs)
        if self.erase:
            out = self._erase(out, rng(_ERASE), total, rows)
        if self.flip:
            mirrored = (rng(_FLIP).random(total) < self.flip)[rows]
            out[mirrored] = out[mirrored, :, ::-1]
        return np.clip(out, 0.0, 255.0, out=out)

    def _affine_coordinates(self, rng, total: int, h: int, w: int, rows: slice):
        """Where each output pixel reads in its input: the inverse of rotate . shear . scale about the
        centre, then translate."""
        angle = np.radians(rng.uniform(-self.rotate, self.rotate, total))[rows]
        zoom = rng.uniform(1 - self.scale, 1 + self.scale, total)[rows]
        shear = np.radians(rng.uniform(-self.shear, self.shear, total))[rows]
        ty = (rng.uniform(-self.translate, self.translate, total) * h)[rows]
        tx = (rng.uniform(-self.translate, self.translate, total) * w)[rows]
        return affine_coordinates(angle, zoom, shear, ty, tx, h, w)

    def _erase(self, x: np.ndarray, rng, total: int, rows: slice) -> np.ndarray:
        """One rectangle per chosen image, filled with the image's edge colour (its background)."""
        n, h, w = x.shape[:3]
        chosen = (rng.random(total) < self.erase)[rows]
        area = rng.uniform(ERASE_MIN_AREA, max(self.erase_area, ERASE_MIN_AREA), total)[rows] * h * w
        aspect = np.exp(rng.uniform(*np.log(ERASE_ASPECT), total))[rows]
        eh = np.clip(np.round(np.sqrt(area * aspect)), 1, h).astype(np.int64)
        ew = np.clip(np.round(np.sqrt(area / aspect)), 1, w).astype(np.int64)
        top = (rng.random(total)[rows] * (h - eh + 1)).astype(np.int64)
        left = (rng.random(total)[rows] * (w - ew + 1)).astype(np.int64)
        r, c = np.arange(h), np.arange(w)
        mask = (((r >= top[:, None]) & (r < (top + eh)[:, None]))[:, :, None]
                & ((c >= left[:, None]) & (c < (left + ew)[:, None]))[:, None, :] & chosen[:, None, None])
        edge = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).mean(axis=1)  # (N,) or (N, C)
        if x.ndim == 4:
            mask = mask[..., None]
            fill = edge[:, None, None, :]
        else:
            fill = edge[:, None, None]
        return np.where(mask, fill, x).astype(np.float32)


# augment.apply: auto uses the transforms where the catalogue says (DataSet.augment_by_default). Measured
# (docs/performance.md): on digits the affine recipe closes the gap between photos and the test set; on
# Fashion-MNIST, whose objects are all trimmed and fitted to 28x28 alike, the same transforms cost 1-3 points of
# test accuracy after 5 epochs.


def skipped(section: AugmentConfig, dataset: str) -> str | None:
    """Why configured transforms are not used for ``dataset`` (None when they are, or none is set)."""
    configured = Augment(**{f.name: float(getattr(section, f.name)) for f in fields(Augment)})
    if not configured.active or section.apply == "always":
        return None
    if section.apply == "never":
        return "augment.apply is never"
    if not datasets.get(dataset).augment_by_default:
        auto = [name for name, d in datasets.CATALOG.items() if d.augment_by_default]
        return (f"augment.apply: auto uses them on {', '.join(auto)} only, not {dataset}; "
                f"-o augment.apply=always uses them ({configured.describe()})")
    return None


# ---------------------------------------------------------------- the pieces, vectorised over the batch

def _identity(n: int, h: int, w: int):
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.broadcast_to(ys, (n, h, w)), np.broadcast_to(xs, (n, h, w))


def affine_coordinates(angle, zoom, shear, ty, tx, h: int, w: int):
    """Per image (arrays of N): the input coordinates (ys, xs), each (N, H, W) float32, that the output
    pixels read when the image is rotated by ``angle`` (radians, counter-clockwise as seen), sheared by
    ``shear`` (radians, horizontal), zoomed by ``zoom`` about its centre, then moved by (``ty``, ``tx``)
    pixels."""
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    # forward map on (x, y) about the centre, y pointing down: A = R(angle) @ Shear(shear) @ zoom
    cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(shear)
    a11, a12 = cos * zoom, (cos * tan + sin) * zoom
    a21, a22 = -sin * zoom, (-sin * tan + cos) * zoom
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det  # A^-1
    # input = A^-1 (output - centre - t) + centre, split into a part per column, one per row and a constant
    # per image, so that only the final sum is full size
    col = (np.arange(w, dtype=np.float32) - np.float32(cx))[None, None, :]
    row = (np.arange(h, dtype=np.float32) - np.float32(cy))[None, :, None]
    per = lambda v: np.asarray(v, np.float32)[:, None, None]  # noqa: E731
    xs = per(i11) * col + (per(i12) * row + per(cx - i11 * tx - i12 * ty))
    ys = per(i21) * col + (per(i22) * row + per(cy - i21 * tx - i22 * ty))
    return ys, xs


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """Smoothing along one axis as a matrix (rows sum to 1; the edges renormalised)."""
    i = np.arange(size)
    g = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


def elastic_field(rng, total: int, h: int, w: int, alpha: float, sigma: float):
    """Simard et al. (2003): uniform(-1, 1) displacements per pixel, smoothed by a Gaussian of ``sigma``,
    scaled to ``alpha``; one field (dy, dx) per image of the global batch, each (total, H, W)."""
    raw = rng.random((2, total, h, w), dtype=np.float32) * 2 - 1
    gy, gx = _gaussian_matrix(h, sigma), _gaussian_matrix(w, sigma)
    smooth = gy @ raw @ gx.T  # the separable Gaussian, batched; as Simard's definition, the typical
    # displacement is then about alpha / (2 sigma sqrt(3 pi)): 1.4 pixels for alpha 34, sigma 4
    return alpha * smooth[0], alpha * smooth[1]


def warp(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear sampling of every image of ``x`` ((N, H, W) or (N, H, W, C), float32) at its (ys, xs)
    (N, H, W); outside the image reads the nearest edge pixel. One gather over the whole batch."""
    n, h, w = x.shape[:3]
    ys = np.clip(ys, 0, h - 1).astype(np.float32, copy=False)
    xs = np.clip(xs, 0, w - 1).astype(np.float32, copy=False)
    y0 = np.minimum(ys.astype(np.int32), max(h - 2, 0))
    x0 = np.minimum(xs.astype(np.int32), max(w - 2, 0))
    fy, fx = ys - y0.astype(np.float32), xs - x0.astype(np.float32)
    index = y0 * w + x0
    index += (np.arange(n, dtype=np.int32) * (h * w))[:, None, None]
    dy, dx = (w if h > 1 else 0), (1 if w > 1 else 0)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 4:
        pixels = x.reshape(n * h * w, -1)
        take = lambda i: pixels[i]  # noqa: E731
        fy, fx = fy[..., None], fx[..., None]
    else:
        flat = x.reshape(-1)
        take = flat.take
    a, b = take(index), take(index + dx)
    top = a + (b - a) * fx
    c, d = take(index + dy), take(index + (dy + dx))
    bottom = c + (d - c) * fx
    return top + (bottom - top) * fy


def _neighbourhood(x: np.ndarray, op) -> np.ndarray:
    """3x3 grey-level dilation (``np.maximum``) or erosion (``np.minimum``) of every image, edges replicated
    (separable: along rows, then along columns)."""
    p = np.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)
    rows = op(op(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
    p = np.concatenate([rows[:, :1], rows, rows[:, -1:]], axis=1)
    return op(op(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def stroke_width(x: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Thicken bright strokes by ``amount`` pixels (per image; negative thins them): whole pixels by repeated
    3x3 dilation (erosion), the fraction by blending with one more."""
    out = x
    shape = (-1,) + (1,) * (x.ndim - 1)
    for op, sign in ((np.maximum, 1.0), (np.minimum, -1.0)):
        a = np.clip(amount * sign, 0, None)  # this direction's amount per image
        if not a.any():
            continue
        prev = x
        for k in range(int(math.ceil(float(a.max())))):
            nxt = _neighbourhood(prev, op)
            part = np.clip(a - k, 0.0, 1.0).astype(np.float32).reshape(shape)  # how much of step k applies
            out = out + part * (nxt - prev)
            prev = nxt
    return out
