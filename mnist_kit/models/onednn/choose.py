"""Choosing the layers that train the conv blocks (``train.fast_conv``, ``train.threads``): ``enable`` puts
the blocks that pass their checks on oneDNN; ``Choice`` says what was chosen and why."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mnist_kit.models.onednn.binding import Unavailable, library
from mnist_kit.models.onednn.block import Block
from mnist_kit.models.onednn.check import check_dense, check_shape, self_check
from mnist_kit.models.onednn.dense import Dense
from mnist_kit.models.onednn.protocol import FastConvNet


def threads_for(requested: int, processes: int) -> tuple[int, str | None]:
    """Threads per process for the blocks: ``requested`` (0 = the usable cores divided among this
    machine's ``processes``), never more than that share; and a note when a request was lowered."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, processes))
    if requested and requested > share:
        return share, (f"train.threads={requested} lowered to {share}: {cores} usable cores shared by {processes} "
                       f"process(es) on this machine")
    return requested or share, None


@dataclass
class Choice:
    """Which layers train the conv blocks, and why."""

    path: str  # "onednn" (at least one block) or "stock"
    threads: int = 1
    reason: str = ""  # why a block or all of them run on the stock layers
    library: str = ""
    blocks: tuple = ()  # per block: "onednn" or "stock"
    output: str = "stock"  # the output layer: "onednn" or "stock"

    def describe(self) -> str:
        if self.path == "stock":
            return f"Paddle's stock layers ({self.reason})"
        layers = "conv blocks and output layer" if self.output == "onednn" else "conv blocks"
        text = f"{layers} on {self.library}, {self.threads} thread{'s' if self.threads > 1 else ''}"
        if "stock" in self.blocks:
            text += f"; block(s) {', '.join(str(i + 1) for i, b in enumerate(self.blocks) if b == 'stock')} on " \
                    f"the stock layers ({self.reason})"
        return text

    def record(self) -> dict:
        return {"path": self.path, "threads": self.threads, "library": self.library, "blocks": list(self.blocks),
                "output": self.output, "reason": self.reason}


def enable(model, mode: str, device: str, threads: int, input_shape) -> Choice:
    """Put ``model``'s conv blocks on oneDNN as ``mode`` (``train.fast_conv``: auto, on, off) allows, each
    block checked against the stock layers at its own shape first; return what was chosen. ``on`` raises
    UserError with the reason when it cannot be done."""
    from mnist_kit.errors import UserError

    def stock(reason: str) -> Choice:
        if mode == "on":
            raise UserError(f"train.fast_conv is on, but {reason}; set train.fast_conv=auto or off")
        return Choice("stock", reason=reason)

    if mode == "off":
        return Choice("stock", reason="train.fast_conv is off")
    if not isinstance(model, FastConvNet):
        return stock(f"the {type(model).__name__.lower()} model has no conv blocks")
    if device != "cpu":
        return stock(f"the oneDNN blocks are for the CPU, and training runs on {device}")
    try:
        self_check(threads)
    except Unavailable as e:
        return stock(f"oneDNN cannot be used: {e}")
    blocks, notes = [], []
    shapes = model.conv_blocks(input_shape)
    for i, (conv, norm, other, (h, w)) in enumerate(shapes):
        kind = "bn" if norm is not None else "relu"
        cout, cin, kernel = conv.weight.shape[:3]
        problem: str | None
        if other:  # the oneDNN block is a 'same' conv, ReLU and a 2x2 max-pool
            problem = other
        elif kind == "relu" and conv.bias is None:
            problem = "a conv without bias or batch norm"
        else:
            problem = check_shape(cin, cout, kernel, kind, threads, h, w)
        if problem:
            notes.append(f"block {i + 1}: {problem}")
        blocks.append(None if problem else Block(cin, cout, kernel, kind, threads, norm))
    if all(b is None for b in blocks):
        return stock("; ".join(notes))
    if notes and mode == "on":
        raise UserError(f"train.fast_conv is on, but {'; '.join(notes)}; set train.fast_conv=auto or off")
    chain(blocks)
    conv, _, _, (h, w) = shapes[-1]
    output = _output_layer(model, blocks[-1], threads, (conv.weight.shape[0], h // 2, w // 2), notes)
    model.use_fast_blocks(blocks, output)
    return Choice("onednn", threads, "; ".join(notes), library().name,
                  tuple("stock" if b is None else "onednn" for b in blocks), "stock" if output is None else "onednn")


def _output_layer(model: FastConvNet, last: Block | None, threads: int, last_shape: tuple,
                  notes: list) -> Dense | None:
    """The model's output layer on oneDNN, when it passes its check. It reads the last block's output channels
    last when that block runs on oneDNN and nothing comes between (``last_shape``: its channels, rows and
    columns)."""
    layer = model.output_layer()
    if layer is None or layer.linear.bias is None:
        return None
    k, o = layer.linear.weight.shape
    # dropout draws its mask in memory order: with one between, the stock (channels, rows, columns) order keeps
    # the stock layers' masks
    hwc = last_shape if last is not None and layer.direct else None
    if hwc is not None and hwc[0] * hwc[1] * hwc[2] != k:
        hwc = None
    problem = check_dense(k, o, threads, hwc)
    if problem:
        notes.append(f"output layer: {problem}")
        return None
    if hwc is not None and last is not None:
        last.nhwc_out = True
    return Dense(k, o, threads, hwc)


def chain(blocks: list) -> None:
    """Let each pair of consecutive oneDNN blocks pass their tensor channels last: only they read it, and
    it saves two reorders each way per pair (measured 0.4 ms of a 10 ms step of the default CNN)."""
    for a, b in zip(blocks, blocks[1:]):
        if a is not None and b is not None:
            a.nhwc_out = b.nhwc_in = True
