"""Preprocessing (deploy/preprocess.py): people's photos and scans brought to the training images' form --
framed as MNIST's digits were made, or as Fashion-MNIST's objects -- and bad or hostile image files refused
by name. In process, without a model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers import EPS, VARIANTS, photo, render_digit
from mnist_kit.deploy import preprocess as pp


def _save_as(fmt: str):
    return lambda p: photo(render_digit(3)).convert("RGB").save(p, format=fmt)

def _png_bytes():
    buf = io.BytesIO()
    photo(render_digit(3)).save(buf, format="PNG")
    return buf.getvalue()


def reference(d: int) -> np.ndarray:
    return pp.preprocess_array(render_digit(d))


def _check_mnist_like(out: np.ndarray, ref: np.ndarray):
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[:2].max() < 40 and out[-2:].max() < 40 and out[:, :2].max() < 40 and out[:, -2:].max() < 40
    assert out.max() >= 200  # white ink on black
    ys, xs = np.nonzero(out > 40)
    assert 18 <= max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 21  # fitted to the 20x20 box
    total = out.sum()
    cy, cx = (out.sum(1) * np.arange(28)).sum() / total, (out.sum(0) * np.arange(28)).sum() / total
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0  # centred by centre of mass
    corr = np.corrcoef(out.ravel().astype(float), ref.ravel().astype(float))[0, 1]
    assert corr >= 0.8, corr


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("digit", [1, 4, 7])
def test_preprocessing_turns_photos_into_centred_white_on_black_digits(tmp_path, variant, digit):
    path = VARIANTS[variant](digit, tmp_path)
    _check_mnist_like(pp.preprocess(path), reference(digit))


def test_exif_orientation_is_honoured(tmp_path):
    upright = photo(render_digit(7))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the camera stored it sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and says so: "rotate 90 degrees clockwise to display" (undoes ROTATE_90)
    path = tmp_path / "exif.jpg"
    stored.save(path, exif=exif.tobytes(), quality=90)
    _check_mnist_like(pp.preprocess(path), reference(7))


@pytest.mark.parametrize("fmt,mode,orientation", [("JPEG", "RGB", 6), ("JPEG", "L", 1), ("PNG", "RGBA", 1),
                                                    ("PNG", "LA", 6), ("PNG", "P", 1), ("PNG", "I;16", 1),
                                                    ("PNG", "1", 1), ("TIFF", "RGB", 8)])
def test_a_large_photo_is_reduced_while_read_and_framed_as_a_small_one(tmp_path, fmt, mode, orientation):
    """Issue 40: a photo with a side over MAX_SIDE is reduced while it is read (a JPEG by its decoder, others a
    strip at a time, transparency premultiplied), in every mode, after its EXIF orientation: it is framed as the
    same photo at a quarter of its size, and its digit upright."""
    upright = photo(render_digit(7, size=800), canvas=(2600, 1950), blur=4.0)  # 5 megapixels: a phone photo
    transpose = {1: None, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright.transpose(transpose) if transpose else upright
    if mode == "I;16":
        stored = Image.fromarray(np.asarray(stored.convert("L"), np.uint16) * 257)
    else:  # a black-and-white scan thresholded, not dithered
        stored = stored.convert(mode, dither=Image.Dither.NONE)
    if mode in ("RGBA", "LA"):  # the paper transparent, the ink opaque, its soft edges partly
        darkness = 235.0 - np.asarray(stored.convert("L"), dtype=np.float64)
        stored.putalpha(Image.fromarray(np.clip(darkness * 2, 0, 255).astype(np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"big.{fmt.lower()}"
    stored.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    assert max(Image.open(path).size) > pp.MAX_SIDE
    big = pp.preprocess(path)
    _check_mnist_like(big, reference(7))
    small = tmp_path / f"small.{fmt.lower()}"
    upright.resize((650, 488), Image.Resampling.BOX).save(small, format="PNG")
    assert np.abs(big.astype(int) - pp.preprocess(small).astype(int)).mean() < 12  # the same framing


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_text("not a picture"), "not an image"),
    (lambda p: p.write_bytes(_png_bytes()[:200]), "damaged or truncated"),
    (lambda p: Image.new("L", (8000, 6000)).save(p, format="PNG"), "too large to decode safely"),
    (lambda p: Image.new("L", (50, 50), 128).save(p, format="PNG"), "no digit found"),
])
def test_bad_images_are_named_errors(tmp_path, make, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(pp.ImageError, match=message):
        pp.preprocess(path)


@pytest.mark.parametrize("name,make", [
    ("eps", lambda p: p.write_bytes(EPS)), ("ico", _save_as("ICO")), ("tga", _save_as("TGA")),
    ("pcx", _save_as("PCX")), ("jpeg2000", _save_as("JPEG2000")), ("sgi", _save_as("SGI")),
])
def test_formats_outside_the_allow_list_are_refused_by_content_whatever_the_name(tmp_path, fake_ghostscript,
                                                                                  name, make):
    _, gs_ran = fake_ghostscript
    for target in (tmp_path / f"x.{name}", tmp_path / "x.png"):  # a name that lies changes nothing
        make(target)
        with pytest.raises(pp.ImageError, match=r"not an image in a format mnist-kit reads \(PNG, JPEG"):
            pp.preprocess(target)
        with pytest.raises(pp.ImageError, match="not an image in a format"):
            pp.preprocess(target.read_bytes())  # bytes, as serve reads them
    assert not gs_ran.exists()


def test_a_float_image_with_nan_or_infinite_pixels_is_refused_without_warnings(tmp_path):
    import warnings

    gray = np.asarray(photo(render_digit(3)).convert("L"), dtype=np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        values = gray.copy()
        values[5, 7] = bad
        path = tmp_path / "float.tif"
        Image.fromarray(values, "F").save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's RuntimeWarnings went to stderr
            with pytest.raises(pp.ImageError, match="1 of its pixels are not numbers"):
                pp.preprocess(path)
    Image.fromarray(gray, "F").save(path)  # the same image with finite values is read
    assert pp.preprocess(path).shape == (28, 28)


def test_fill_style_frames_like_fashion_mnist():
    """Fashion-MNIST was trimmed, scaled to 28 on the longest edge and centred: a dim wide object stays whole."""
    img = np.full((300, 400), 240.0)
    img[100:180, 50:330] = 90.0  # a dark, wide object on light paper
    img[120:160, 150:200] = 160.0  # with a fainter part inside
    out = pp.preprocess_array(img, style="fill")
    ys, xs = np.nonzero(out > 20)
    assert xs.min() == 0 and xs.max() == 27  # the longest edge fills the frame
    assert abs((ys.min() + ys.max()) / 2 - 13.5) <= 1  # centred
    assert out[14, 14] < out[14, 3]  # the fainter part is kept, fainter
