"""Turn a person's photo or scan of a digit into an MNIST-style 28x28 input, the way MNIST itself was made.

1. open any common format and mode (JPEG, PNG with transparency, grayscale, palette, 16-bit, CMYK),
   honouring EXIF orientation, refusing images too large to decode safely;
2. flatten to one channel; where there is transparency, the ink may live only in the alpha channel,
   so the image is laid on a background that contrasts with its opaque pixels;
3. decide the polarity from the border (the paper) and bring the ink to MNIST's white on black, with the
   paper's own level (tinted paper, shadows) subtracted and the contrast stretched;
4. find the digit (after a median filter against speckles) and crop it with a margin;
5. scale it, keeping its aspect ratio, to fit a 20x20 box (anti-aliased, as NIST's digits were);
6. place it in 28x28 so that its centre of mass is at the centre.
(Fashion-MNIST was made differently: trimmed, longest edge scaled to 28, centred; style "fill".)

Only Pillow and numpy: prediction imports no training code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mnist_kit.util.images import HIGH_DEPTH_MODES, MAX_PIXELS, ImageError, gray_levels, open_image  # noqa: F401


def to_gray(img: Image.Image) -> np.ndarray:
    """One channel, float64 in [0, 255], transparency resolved."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3] / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        opaque = alpha > 0.5
        if opaque.all() or not opaque.any():
            return lum if opaque.all() else alpha * 255.0
        # lay the image on a background that contrasts with its opaque (ink or paper) pixels
        background = 0.0 if lum[opaque].mean() > 127.5 else 255.0
        return lum * alpha + background * (1.0 - alpha)
    if img.mode in HIGH_DEPTH_MODES:
        return gray_levels(img)
    if img.mode not in ("L", "1"):
        img = img.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, RGB
    return np.asarray(img.convert("L"), dtype=np.float64)


def white_on_black(gray: np.ndarray) -> np.ndarray:
    """Ink bright on a dark background, the paper's level removed, in [0, 1]."""
    h, w = gray.shape
    b = max(1, min(h, w) // 20)
    border = np.concatenate([gray[:b].ravel(), gray[-b:].ravel(), gray[:, :b].ravel(), gray[:, -b:].ravel()])
    paper = float(np.median(border))
    if paper > 127.5:  # dark ink on light paper: invert
        gray, paper = 255.0 - gray, 255.0 - paper
    ink = np.clip(gray - paper, 0, None)
    top = np.percentile(ink, 99.9)
    if top <= 0:
        raise ImageError("no digit found: the image is uniform")
    # uneven light (a shadow across the page): the paper's own level, smooth across the picture, from
    # the darkest part of each of 4x4 blocks; never more than half the ink's contrast, so a block that is
    # nearly all ink keeps its ink
    shade = np.clip(_paper_level(gray) - paper, 0, 0.5 * top)
    ink = np.clip(ink - shade, 0, None)
    top = np.percentile(ink, 99.9)
    if top <= 0:
        raise ImageError("no digit found: the image is uniform")
    return np.clip(ink / top, 0, 1)


def _paper_level(gray: np.ndarray, blocks: int = 4) -> np.ndarray:
    """The background level at every pixel (ink bright): the 20th percentile of each of blocks x blocks
    tiles, interpolated bilinearly between the tiles' centres."""
    h, w = gray.shape
    if min(h, w) < 4 * blocks:
        return np.full(gray.shape, float(np.percentile(gray, 20)))
    th, tw = h // blocks, w // blocks
    tiles = gray[:th * blocks, :tw * blocks].reshape(blocks, th, blocks, tw)
    level = np.percentile(tiles, 20, axis=(1, 3)).astype(np.float32)
    return np.asarray(Image.fromarray(level, "F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)


def _bbox(ink: np.ndarray, faint: bool = False) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the digit, robust to isolated specks; ``faint`` keeps the
    faint parts of an object (clothing has large dim areas, digits do not)."""
    smooth = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(3)),
                        dtype=np.float64) / 255.0
    level = 0.1 if faint else max(0.25, 0.5 * _otsu(smooth))
    ys, xs = np.nonzero(smooth > level)
    if len(ys) == 0:
        ys, xs = np.nonzero(ink > 0.5)
    if len(ys) == 0:
        raise ImageError("no digit found")
    top, bottom = np.percentile(ys, [0.2, 99.8])
    left, right = np.percentile(xs, [0.2, 99.8])
    return int(top), int(np.ceil(bottom)) + 1, int(left), int(np.ceil(right)) + 1


def _otsu(x: np.ndarray) -> float:
    hist, edges = np.histogram(x, bins=64, range=(0, 1))
    w = np.cumsum(hist)
    m = np.cumsum(hist * edges[:-1])
    total, mean_all = w[-1], m[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_all * w - total * m) ** 2 / (w * (total - w))
    return float(edges[np.nanargmax(between[:-1])]) if np.isfinite(between[:-1]).any() else 0.5


# How each data set's images were made, and so how a user's image is brought to the same form:
# "digit" (MNIST): fit the digit to a 20x20 box, centre of mass at the centre of 28x28;
# "fill" (Fashion-MNIST): trim, longest edge to 28, object centred.
STYLES = ("digit", "fill")


def mnist_style(ink: np.ndarray, style: str = "digit") -> np.ndarray:
    """A white-on-black ink map (any size, [0,1]) -> uint8 28x28 in the given style (see STYLES)."""
    top, bottom, left, right = _bbox(ink, faint=style == "fill")
    h, w = bottom - top, right - left
    box = 20.0 if style == "digit" else 28.0
    margin = int(round(0.05 * max(h, w))) if style == "digit" else 0
    crop = ink[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin]
    # zero what is not part of the digit's surroundings (faint paper texture)
    crop = np.where(crop > 0.08, crop, 0.0)
    ch, cw = crop.shape
    scale = box / max(ch, cw)
    nh, nw = max(1, int(round(ch * scale))), max(1, int(round(cw * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS),
                       dtype=np.float64)
    small = np.clip(small, 0, 255)
    out = np.zeros((28, 28))
    total = small.sum()
    if total <= 0:
        raise ImageError("no digit found")
    if style == "digit":
        cy = (small.sum(axis=1) * np.arange(nh)).sum() / total
        cx = (small.sum(axis=0) * np.arange(nw)).sum() / total
        oy, ox = int(round(13.5 - cy)), int(round(13.5 - cx))
    else:
        oy, ox = (28 - nh) // 2, (28 - nw) // 2
    oy, ox = min(max(oy, 0), 28 - nh), min(max(ox, 0), 28 - nw)
    out[oy:oy + nh, ox:ox + nw] = small
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


MAX_SIDE = 1024  # a photo's longer side is reduced to this while it is read: the digit is found as well


def preprocess(source: Path | bytes, style: str = "digit", max_pixels: int = MAX_PIXELS, admit=None) -> np.ndarray:
    """A file (or its bytes) -> uint8 (28, 28), white on black, framed like the training data. Raises ImageError.
    ``admit``: see ``images.open_image``; a photo with a side over ``MAX_SIDE`` is reduced while it is read."""
    return mnist_style(white_on_black(to_gray(open_image(source, max_pixels, admit, MAX_SIDE))), style)


def preprocess_array(gray: np.ndarray, style: str = "digit") -> np.ndarray:
    """The same from a grayscale array (any polarity)."""
    return mnist_style(white_on_black(np.asarray(gray, dtype=np.float64)), style)
