"""Reading image files safely, and bringing images to a data set's fixed size and colour.

Shared by image-folder data sets (``prepare`` decodes every file with ``load_image``) and by ``predict``
(a model trained on an image folder reads a new image exactly as its training images were read).
Only Pillow and numpy.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # ~ a 7,000 x 5,700 photo; more is refused as a possible decompression bomb
# A longer side than this is reduced while the image is read (open_image's max_side): the digit, or an image
# folder's picture, is found as well in a fraction of the memory. A 5000x5000 RGBA PNG took 250 MB to frame.
MAX_SIDE = 2048
# The only formats Pillow may decode here (its name -> the file suffixes of it). Pillow recognises a format by
# content, whatever the file's name: without this list a file that is EPS inside runs Ghostscript (``gs``, no
# timeout) wherever it is installed, and other rarely used decoders see what a stranger sent to `serve`.
FORMATS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "BMP": (".bmp",), "GIF": (".gif",),
           "TIFF": (".tif", ".tiff"), "WEBP": (".webp",), "PPM": (".pgm", ".ppm", ".pbm")}
IMAGE_SUFFIXES = {suffix for suffixes in FORMATS.values() for suffix in suffixes}
READ = "PNG, JPEG, BMP, GIF, TIFF, WebP, PGM/PPM/PBM"  # FORMATS, as the README and errors name them
COLORS = {"grayscale": 1, "rgb": 3}  # colour mode -> channels


class ImageError(Exception):
    """A file that cannot be used as an image; the message says why."""


class TooLarge(ImageError):
    """An image with more pixels than may be decoded."""


def open_image(source: Path | bytes, max_pixels: int = MAX_PIXELS, admit=None,
               max_side: int | None = None) -> Image.Image:
    """Decode an image file, or the bytes of one (what a client sent to ``mnist-kit serve``), in one of
    ``FORMATS`` only, refusing more than ``max_pixels`` before decoding them. ``admit(pixels)``, if given, is
    called after the header is read and before any pixel is decoded (a server's budget: it may raise).
    ``max_side``: a larger image is brought below it while it is read (``_shrink``: a JPEG by its decoder, at
    1/2 to 1/8 of its size; other formats right after decoding, before any copy in another mode).
    Raises ImageError for anything wrong with the image, whatever the decoder raised."""
    path = _opened(source)
    # Pillow's own limit (Image.MAX_IMAGE_PIXELS, a global: serve decodes in several threads) stays as it is;
    # the size is checked here from the header, before any pixel is decoded
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=list(FORMATS))
            if img.width * img.height > max_pixels:
                raise TooLarge(f"{img.width}x{img.height} pixels is too large to decode safely "
                               f"(limit {max_pixels:,} pixels)")
            if admit is not None:
                admit(img.width * img.height)
            if max_side is not None and max(img.size) > max_side and img.format == "JPEG":
                scale = max_side / max(img.size)  # draft keeps at least this size: _shrink does the rest
                img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"too large to decode safely (limit {max_pixels:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image in a format mnist-kit reads ({READ})") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged data
        raise ImageError(f"damaged or truncated image ({e})") from None
    except Exception as e:  # noqa: BLE001 - a hostile file may break a decoder in other ways
        raise ImageError(f"cannot decode this image ({type(e).__name__}: {e})") from None
    return _upright_and_small(img, max_side)


def _opened(source: Path | bytes) -> io.BytesIO | Path:
    """What Pillow is to open: the bytes, or the file checked to be a regular, non-empty one."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError("the image is empty (0 bytes)")
        return io.BytesIO(source)
    file = Path(source)
    if not file.is_file():
        raise ImageError("not a regular file (a FIFO, socket or device)" if file.exists() else "no such file")
    if file.stat().st_size == 0:
        raise ImageError("the file is empty")
    return file


def _upright_and_small(img: Image.Image, max_side: int | None) -> Image.Image:
    """The decoded image turned as its EXIF orientation says, then reduced below ``max_side``."""
    try:  # in place: without it Pillow returns a copy of every image that has no orientation to apply
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block: use the pixels as stored
        pass
    if max_side is None or max(img.size) <= max_side:
        return img
    try:
        return _shrink(img, max_side)
    except Exception as e:  # noqa: BLE001 - a mode Pillow cannot reduce
        raise ImageError(f"cannot reduce this image ({img.mode}, {type(e).__name__}: {e})") from None


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` reduced by the smallest whole factor that brings its longer side to ``max_side`` or below: each
    pixel the mean of a box of them (with transparency premultiplied, so that transparent pixels lend no
    colour), in a mode that keeps what every later step reads from it. Done a strip of rows at a time, so that
    no second copy of the full image is made (a 5000x5000 RGBA image is 100 MB)."""
    factor = -(-max(img.size) // max_side)
    mode = {"P": "RGBA" if "transparency" in img.info else "RGB", "1": "L"}.get(img.mode, img.mode)
    if mode.startswith("I;16"):
        mode = "I"  # the same values in 32 bits: gray_levels scales both from 65535
    work = {"RGBA": "RGBa", "LA": "La"}.get(mode, mode)
    out = Image.new(mode, (-(-img.width // factor), -(-img.height // factor)))
    rows = factor * max(1, (1 << 20) // (img.width * factor))  # strips of about a megapixel, whole boxes
    for top in range(0, img.height, rows):
        strip = img.crop((0, top, img.width, min(top + rows, img.height))).convert(work).reduce(factor)
        out.paste(strip.convert(mode) if work != mode else strip, (0, top // factor))
    return out


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def gray_levels(img: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float image as float64 gray levels in [0, 255]: 16-bit (and 32-bit values that
    fit) scaled from 65535, larger integers from their maximum, float images stretched from min to max."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:  # no gray level to give them: refused, where they made "no digit found" and numpy warnings
            raise ImageError(f"{bad:,} of its pixels are not numbers (NaN or infinity); "
                             "save the image with finite values")
        lo, hi = arr.min(), arr.max()
        return (arr - lo) / (hi - lo or 1.0) * 255.0
    top = 65535.0 if img.mode.startswith("I;16") or arr.max() <= 65535 else arr.max()
    return np.clip(arr / top * 255.0, 0, 255)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Transparent parts laid on white; 16-bit and float images scaled to 8 bits."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in HIGH_DEPTH_MODES:
        return Image.fromarray(np.round(gray_levels(img)).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img


def _border_color(img: Image.Image) -> int | tuple:
    """The median colour of the outermost pixels (what padding is filled with)."""
    a = np.asarray(img)
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    med = np.median(edge, axis=0)
    return int(med) if np.ndim(med) == 0 else tuple(int(v) for v in med)


def fit(img: Image.Image, size: tuple[int, int], color: str = "grayscale", resize: str = "stretch") -> np.ndarray:
    """A decoded image -> uint8 (H, W) for grayscale or (H, W, 3) for rgb, at ``size`` = (height, width):
    stretched to it, or scaled to fit and padded with its border colour (``resize="pad"``)."""
    img = _flatten_alpha(img).convert("L" if color == "grayscale" else "RGB")
    h, w = int(size[0]), int(size[1])
    if resize == "stretch" or img.size == (w, h):
        out = img.resize((w, h), Image.Resampling.LANCZOS) if img.size != (w, h) else img
    else:
        scale = min(w / img.width, h / img.height)
        nw, nh = max(1, min(w, round(img.width * scale))), max(1, min(h, round(img.height * scale)))
        out = Image.new(img.mode, (w, h), _border_color(img))
        out.paste(img.resize((nw, nh), Image.Resampling.LANCZOS), ((w - nw) // 2, (h - nh) // 2))
    return np.asarray(out, dtype=np.uint8).copy()


def load_image(source: Path | bytes, size: tuple[int, int], color: str = "grayscale", resize: str = "stretch",
               max_pixels: int = MAX_PIXELS, admit=None) -> np.ndarray:
    """``open_image`` + ``fit``: an image with a side over ``MAX_SIDE`` (and over twice ``size``) is reduced
    while it is read, the same for prepare and for predict. Raises ImageError."""
    return fit(open_image(source, max_pixels, admit, max(MAX_SIDE, 2 * max(size))), size, color, resize)
