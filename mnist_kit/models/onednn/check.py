"""The blocks checked against Paddle's stock layers: once per process (``self_check``) and at each block's
own shape (``check_shape``), the output layer at its own (``check_dense``); a layer that differs is not used."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from mnist_kit.backend.runtime import paddle
from mnist_kit.models.onednn.binding import Unavailable, _state, library
from mnist_kit.models.onednn.block import Block
from mnist_kit.models.onednn.dense import Dense


def compare(cin: int, cout: int, kernel: int, kind: str, threads: int, n: int, h: int, w: int,
            seed: int = 0) -> float:
    """The largest difference between a block on oneDNN and the same block of Paddle's stock layers, over
    the training output, every gradient, batch norm's running statistics and the evaluation output, each
    relative to its largest magnitude (random input, weights and output gradient of that shape).

    Where the function has a kink -- a pool window whose largest pre-activation is within float rounding
    of 0 (the ReLU) or of the second largest (the max) -- the two paths may rightly send that output's
    gradient different ways; the output gradient is set to 0 there, so that only real differences count."""
    with _training_rng_kept():
        return _compare(cin, cout, kernel, kind, threads, n, h, w, seed)


@contextmanager
def _training_rng_kept():
    """The layers made inside must not move training's random numbers."""
    rng_state = paddle.get_rng_state()
    try:
        yield
    finally:
        paddle.set_rng_state(rng_state)


def _worst_difference(results: list) -> float:
    """The largest difference between the stock results (``results[0]``) and the fast ones, each array's
    relative to its largest magnitude; inf when a shape differs or a value is not finite."""
    worst = 0.0
    for stock, fast in zip(*results):
        if fast.shape != stock.shape:
            return float("inf")
        worst = max(worst, float(np.abs(fast - stock).max()) / max(float(np.abs(stock).max()), 1e-12))
    return worst if np.isfinite(worst) else float("inf")


def _compare(cin, cout, kernel, kind, threads, n, h, w, seed) -> float:
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n, cin, h, w)).astype("float32")
    w0 = (rng.standard_normal((cout, cin, kernel, kernel)) / kernel / np.sqrt(cin)).astype("float32")
    extra = rng.standard_normal((3, cout)).astype("float32")
    results, g = [], None
    for fast in (False, True):
        conv = paddle.nn.Conv2D(cin, cout, kernel, padding=kernel // 2, bias_attr=False if kind == "bn" else None)
        conv.weight.set_value(w0)
        norm = paddle.nn.BatchNorm2D(cout) if kind == "bn" else None
        params = [conv.weight]
        if conv.bias is not None:
            conv.bias.set_value(extra[0])
            params.append(conv.bias)
        if norm is not None:
            norm.weight.set_value(1 + 0.1 * extra[1])
            norm.bias.set_value(extra[2])
            params += [norm.weight, norm.bias]
        block = Block(cin, cout, kernel, kind, threads, norm)
        x = paddle.to_tensor(x0, stop_gradient=False)
        y = block(x, conv) if fast else block.reference(x, conv)
        if g is None:
            g = rng.standard_normal(y.shape).astype("float32") * _away_from_kinks(block, conv, x0)
        (y * paddle.to_tensor(g)).sum().backward()
        out = [y.numpy(), x.grad.numpy()] + [q.grad.numpy() for q in params]
        if norm is not None:
            out += [norm._mean.numpy(), norm._variance.numpy()]
            norm.eval()
        with paddle.no_grad():
            out.append((block(x, conv) if fast else block.reference(x, conv)).numpy())
        results.append(out)
    return _worst_difference(results)


def _away_from_kinks(block: Block, conv, x0: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """1 for each pooled output whose window's largest pre-activation is clear of 0 and of the second
    largest by ``margin`` (relative to the largest magnitude), else 0."""
    with paddle.no_grad():
        z = paddle.nn.functional.conv2d(paddle.to_tensor(x0), conv.weight, conv.bias,
                                        padding=block.kernel // 2).numpy().astype("float64")
    if block.kind == "bn":
        z = (z - z.mean((0, 2, 3), keepdims=True)) / np.sqrt(z.var((0, 2, 3), keepdims=True) + block.norm._epsilon)
        z = z * block.norm.weight.numpy()[:, None, None] + block.norm.bias.numpy()[:, None, None]
    n, c, h, w = z.shape
    windows = z[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    top = np.sort(windows.reshape(n, c, h // 2, w // 2, 4), axis=-1)
    eps = margin * max(float(np.abs(z).max()), 1e-12)
    return ((np.abs(top[..., -1]) > eps) & (top[..., -1] - top[..., -2] > eps)).astype("float32")


TOLERANCE = 1e-4  # relative; measured differences are ~1e-6 (float rounding of another summation order)


def self_check(threads: int) -> None:
    """Once per process and thread count: a tiny forward and backward of both block kinds, compared with
    the stock layers. Raises Unavailable when the library is missing, of another version, or wrong."""
    key = ("checked", threads)
    if key not in _state:
        try:
            library()
            for kind, cin in (("relu", 1), ("bn", 3)):
                diff = compare(cin, 4, 3, kind, threads, 2, 7, 9)
                if not diff <= TOLERANCE:
                    raise Unavailable(f"its self-check differs from Paddle's layers by {diff:.2g} (relative)")
            _state[key] = None
        except Unavailable as e:
            _state[key] = e
    if _state[key] is not None:
        raise _state[key]


def check_shape(cin: int, cout: int, kernel: int, kind: str, threads: int, h: int, w: int) -> str | None:
    """Why this block shape cannot run on oneDNN (checked on a batch of 2 at its real size), or None."""
    return _why_not(("shape", cin, cout, kernel, kind, threads, h, w), "the stock layers",
                    lambda: compare(cin, cout, kernel, kind, threads, 2, h, w))


def _why_not(key: tuple, stock: str, difference) -> str | None:
    """Once per process and ``key``: why the layer cannot run on oneDNN (``difference()`` over TOLERANCE,
    or the library's complaint), or None."""
    if key not in _state:
        try:
            diff = difference()
            _state[key] = None if diff <= TOLERANCE else f"differs from {stock} by {diff:.2g} (relative)"
        except Unavailable as e:
            _state[key] = str(e)
    return _state[key]


def compare_dense(k: int, o: int, threads: int, n: int, hwc: tuple[int, int, int] | None = None,
                  seed: int = 0) -> float:
    """The largest difference between ``Dense`` and the stock ``Linear`` (output in training and evaluation, and
    every gradient), each relative to its largest magnitude, on random data of that shape."""
    with _training_rng_kept():
        rng = np.random.default_rng(seed)
        x0 = rng.standard_normal((n, k)).astype("float32")
        w0, b0 = (rng.standard_normal((k, o)) / np.sqrt(k)).astype("float32"), rng.standard_normal(o).astype("float32")
        g = rng.standard_normal((n, o)).astype("float32")
        results = []
        for fast in (False, True):
            linear = paddle.nn.Linear(k, o)
            linear.weight.set_value(w0)
            linear.bias.set_value(b0)
            dense = Dense(k, o, threads, hwc)
            x = paddle.to_tensor(x0, stop_gradient=False)
            y = dense(x, linear) if fast else dense.reference(x, linear)
            (y * paddle.to_tensor(g)).sum().backward()
            with paddle.no_grad():
                y_eval = dense(x, linear) if fast else dense.reference(x, linear)
            results.append([y.numpy(), x.grad.numpy(), linear.weight.grad.numpy(), linear.bias.grad.numpy(),
                            y_eval.numpy()])
    return _worst_difference(results)


def check_dense(k: int, o: int, threads: int, hwc: tuple[int, int, int] | None) -> str | None:
    """Why this output layer cannot run on oneDNN (checked on a batch of 2 at its real size), or None."""
    return _why_not(("dense", k, o, threads, hwc), "the stock layer", lambda: compare_dense(k, o, threads, 2, hwc))
