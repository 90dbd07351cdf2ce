"""Augmentation of training batches: each transform does what it says, deterministically, batch-split
independent, and off means exactly today's batches."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from helpers import FAST, run_cli
from mnist_kit import config
from mnist_kit.data import augment
from mnist_kit.data.augment import Augment
from mnist_kit.data.batches import Batches, Normalization
from mnist_kit.logbook.writer import read_records

ALL_ON = Augment(rotate=15, scale=0.15, translate=0.1, shear=10, stroke=1.0, elastic=30, elastic_sigma=4,
                 erase=0.5, erase_area=0.2)


def _digits(n=8, size=28, seed=0):
    """White font digits on black, MNIST-sized (uint8, (n, size, size))."""
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=int(size * 0.7))
    out = []
    for i in range(n):
        img = Image.new("L", (size, size), 0)
        ImageDraw.Draw(img).text((size * 0.3 + rng.integers(-2, 3), size * 0.1), str(i % 10), fill=255, font=font)
        out.append(np.asarray(img))
    return np.stack(out)


def _point(size=29, y=14, x=20):
    img = np.zeros((1, size, size), np.float32)
    img[0, y, x] = 255.0
    return img


def _where(img):
    """Centre of mass (y, x) of one image."""
    total = img.sum()
    ys, xs = np.indices(img.shape)
    return float((ys * img).sum() / total), float((xs * img).sum() / total)


def _one(angle=0.0, zoom=1.0, shear=0.0, ty=0.0, tx=0.0):
    return [np.array([v], np.float64) for v in (angle, zoom, shear, ty, tx)]


def test_off_is_todays_batches_bit_for_bit():
    x, y = _digits(50), np.arange(50) % 10
    norm = Normalization(0.13, 0.3)
    a = list(Batches(x, y, 16, norm, shuffle=True, seed=3).epoch(2))
    b = list(Batches(x, y, 16, norm, shuffle=True, seed=3).epoch(2, augment=Augment()))
    assert not Augment().active and Augment().describe() == "off"
    assert len(a) == len(b) and all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))


def test_deterministic_per_seed_epoch_and_step():
    x = _digits(16)
    first = ALL_ON.apply(x, seed=1, epoch=0, step=0)
    assert np.array_equal(first, ALL_ON.apply(x, seed=1, epoch=0, step=0))
    for other in ({"seed": 2, "epoch": 0, "step": 0}, {"seed": 1, "epoch": 1, "step": 0},
                  {"seed": 1, "epoch": 0, "step": 1}):
        assert not np.array_equal(first, ALL_ON.apply(x, **other))


def test_an_image_gets_the_same_transform_whichever_process_holds_it():
    """2 processes x B see what 1 process x 2B sees: parameters come from the place in the global batch."""
    x = _digits(20)
    whole = ALL_ON.apply(x, seed=0, epoch=3, step=7)
    first, second = (ALL_ON.apply(x[s], 0, 3, 7, first=s.start, total=20) for s in (slice(0, 10), slice(10, 20)))
    assert np.array_equal(np.concatenate([first, second]), whole)


def test_batches_split_over_processes_see_the_same_augmented_images():
    x, y = _digits(40), np.arange(40) % 10
    norm = Normalization(0.1, 0.3)
    one = list(Batches(x, y, 10, norm, shuffle=True, seed=5).epoch(1, augment=ALL_ON))
    two = [list(Batches(x, y, 5, norm, shuffle=True, seed=5, rank=r, world=2).epoch(1, augment=ALL_ON))
           for r in (0, 1)]
    for step, (xb, yb) in enumerate(one):
        assert np.array_equal(np.concatenate([two[0][step][0], two[1][step][0]]), xb)
        assert np.array_equal(np.concatenate([two[0][step][1], two[1][step][1]]), yb)


@pytest.mark.parametrize("shape", [(6, 28, 28), (5, 20, 33, 3)])
def test_shape_dtype_range_and_labels_are_kept(shape):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    out = ALL_ON.apply(x, 0, 0, 0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    y = np.arange(len(x))
    batches = list(Batches(x, y, 4, Normalization(0.5, 0.25)).epoch(augment=ALL_ON))
    assert np.array_equal(np.concatenate([b[1] for b in batches]), y)
    assert batches[0][0].shape == ((4, 1, 28, 28) if len(shape) == 3 else (4, 3, 20, 33))


def test_a_known_rotation_moves_a_known_point_where_expected():
    """+90 degrees is counter-clockwise as seen: a point right of the centre goes above it."""
    img = _point()  # centre (14, 14); the point at (14, 20)
    ys, xs = augment.affine_coordinates(*_one(angle=math.pi / 2), 29, 29)
    moved = augment.warp(img, ys, xs)[0]
    assert _where(moved) == pytest.approx((8.0, 14.0), abs=1e-4)
    ys, xs = augment.affine_coordinates(*_one(angle=math.radians(30)), 29, 29)
    y, x = _where(augment.warp(img, ys, xs)[0])
    assert (y, x) == pytest.approx((14 - 6 * math.sin(math.radians(30)), 14 + 6 * math.cos(math.radians(30))), abs=0.15)


def test_rotation_matches_pillow():
    digit = _digits(1, size=56)
    ys, xs = augment.affine_coordinates(*_one(angle=math.radians(20)), 56, 56)
    ours = augment.warp(digit.astype(np.float32), ys, xs)[0]
    pil = np.asarray(Image.fromarray(digit[0]).rotate(20, resample=Image.Resampling.BILINEAR), np.float64)
    assert np.corrcoef(ours.ravel(), pil.ravel())[0, 1] > 0.98


def test_zoom_shift_and_shear_move_points_as_said():
    img = _point()
    ys, xs = augment.affine_coordinates(*_one(zoom=2.0), 29, 29)
    assert _where(augment.warp(img, ys, xs)[0]) == pytest.approx((14.0, 26.0), abs=1e-4)  # 6 px -> 12 px from centre
    ys, xs = augment.affine_coordinates(*_one(ty=-3.0, tx=2.0), 29, 29)
    assert _where(augment.warp(img, ys, xs)[0]) == pytest.approx((11.0, 22.0), abs=1e-4)
    below = _point(y=20, x=14)  # 6 px below the centre: a 45-degree shear moves it 6 px right (x' = x + y)
    ys, xs = augment.affine_coordinates(*_one(shear=math.radians(45)), 29, 29)
    assert _where(augment.warp(below, ys, xs)[0]) == pytest.approx((20.0, 20.0), abs=1e-3)


def test_identity_warp_is_exact():
    x = _digits(3).astype(np.float32)
    ys, xs = augment._identity(3, 28, 28)
    assert np.array_equal(augment.warp(x, ys, xs), x)


def test_thicken_adds_ink_and_thin_removes_it():
    x = _digits(10).astype(np.float32)
    area = lambda a: int((a > 127).sum())  # noqa: E731
    thick = augment.stroke_width(x, np.full(10, 1.0))
    thin = augment.stroke_width(x, np.full(10, -1.0))
    half = augment.stroke_width(x, np.full(10, 0.5))
    assert area(thin) < area(x) < area(half) < area(thick)
    assert np.array_equal(augment.stroke_width(x, np.zeros(10)), x)
    assert np.all(thick >= x) and np.all(thin <= x)


def test_elastic_displacements_have_the_documented_size():
    rng = np.random.default_rng(0)
    dy, dx = augment.elastic_field(rng, 200, 28, 28, alpha=34.0, sigma=4.0)
    typical = 34.0 / (2 * 4.0 * math.sqrt(3 * math.pi))
    inner = np.s_[:, 8:20, 8:20]  # away from the edges, where the smoothing is renormalised
    assert float(dy[inner].std()) == pytest.approx(typical, rel=0.25)
    assert float(dx[inner].std()) == pytest.approx(typical, rel=0.25)
    assert abs(float(dy.mean())) < 0.1
    x = _digits(4)
    out = Augment(elastic=34).apply(x, 0, 0, 0)
    assert not np.array_equal(out, x.astype(np.float32))
    assert abs(out.sum() / x.sum() - 1) < 0.15  # ink moved, not created


def test_erase_puts_one_rectangle_of_background_per_chosen_image():
    x = np.full((50, 28, 28), 200, np.uint8)
    x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1] = 0, 0, 0, 0  # the edge colour is black
    out = Augment(erase=1.0, erase_area=0.2).apply(x, 0, 0, 0)
    for img in out:
        inner = img[1:-1, 1:-1] == 0  # the erased pixels inside the border
        rows, cols = np.flatnonzero(inner.any(axis=1)), np.flatnonzero(inner.any(axis=0))
        assert inner.sum() > 0 and inner.sum() == len(rows) * len(cols)  # one filled rectangle
        assert inner[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    erased = (out == 0).sum(axis=(1, 2)) - 4 * 27  # minus the black border
    assert erased.max() <= 0.2 * 28 * 28 * 1.25  # (sides rounded to whole pixels)
    none = Augment(erase=0.0001).apply(x, 0, 0, 0)
    assert np.array_equal(none, x.astype(np.float32))


def test_flip_mirrors_the_chosen_images_and_leaves_the_other_draws_alone():
    x = _digits(40).astype(np.float32)
    assert np.array_equal(Augment(flip=1.0).apply(x, 0, 0, 0), x[:, :, ::-1])
    half = Augment(flip=0.5).apply(x, 0, 0, 0)
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(half, x)]
    assert all(m or np.array_equal(a, b) for m, a, b in zip(mirrored, half, x)) and 8 <= sum(mirrored) <= 32
    rgb = np.repeat(x[..., None], 3, axis=3)  # (N, H, W, C): the width is axis 2 there too
    assert np.array_equal(Augment(flip=1.0).apply(rgb, 0, 0, 0), rgb[:, :, ::-1])
    # its own stream: switching it on mirrors what the other transforms made, and changes nothing else
    rotated, both = Augment(rotate=20).apply(x, 1, 2, 3), Augment(rotate=20, flip=1.0).apply(x, 1, 2, 3)
    assert np.array_equal(both, rotated[:, :, ::-1])


def test_flip_is_refused_on_digits(prepared):
    result = run_cli("train", *FAST, "-o", "augment.flip=0.5", "-o", "augment.apply=always")
    assert result.exit_code == 2 and "augment.flip is 0.5 on digits (data.name mnist)" in result.output
    assert "Traceback" not in result.output


def test_describe_names_what_is_on():
    assert Augment(rotate=10, elastic=34).describe() == "rotate 10, elastic 34 (sigma 4)"
    assert Augment(erase=0.5).describe() == "erase 0.5 (area up to 0.2)"
    assert Augment(flip=0.5).describe() == "flip 0.5"


def test_augment_keys_are_checked(prepared):
    result = run_cli("train", *FAST, "-o", "augment.rotate=500")
    assert result.exit_code == 2 and "augment.rotate must be <= 180, got 500" in result.output
    result = run_cli("train", *FAST, "-o", "augment.rotation=5")
    assert result.exit_code == 2 and "did you mean 'augment.rotate'" in result.output
    assert not Path("checkpoints").exists() or not list(Path("checkpoints").iterdir())


def test_training_with_augmentation_logs_what_the_model_sees(prepared):
    result = run_cli("train", *FAST, "-o", "train.epochs=1", "-o", "augment.rotate=10", "-o", "augment.stroke=0.5",
                     "--name", "aug")
    assert result.exit_code == 0, result.output
    assert "augmentation of the training batches: rotate 10, stroke 0.5" in result.output
    tags = {v.tag for f in Path("checkpoints/aug/vdl").glob("vdlrecords*") for r in read_records(f) for v in r.values}
    assert {"input/train_samples", "input/train_samples_augmented"} <= tags
    cfg = json.loads(json.dumps(config.load(Path("checkpoints/aug/config.yaml")).to_dict()))
    assert cfg["augment"]["rotate"] == 10 and cfg["augment"]["stroke"] == 0.5


def test_augmentation_changes_training_and_off_does_not(prepared):
    args = [*FAST, "-o", "train.epochs=1", "-o", "output.visualdl=false"]
    for name, extra in (("plain", []), ("zero", ["-o", "augment.rotate=0"]), ("aug", ["-o", "augment.rotate=20"])):
        assert run_cli("train", *args, *extra, "--name", name).exit_code == 0
    rows = {n: json.loads(Path(f"checkpoints/{n}/metrics.jsonl").read_text().splitlines()[0])
            for n in ("plain", "zero", "aug")}
    assert rows["plain"]["train_loss"] == rows["zero"]["train_loss"]
    assert rows["plain"]["train_loss"] != rows["aug"]["train_loss"]
