"""What a network offers ``models/onednn`` to have its conv blocks (and output layer) run on oneDNN: the
``FastConvNet`` protocol, which ``networks.CNN`` implements and docs/extending.md describes. A network without
it (``linear``, ``mlp``) trains on Paddle's stock layers; ``enable`` checks ``isinstance(model, FastConvNet)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable


class ConvBlock(NamedTuple):
    """One conv block as the network holds it."""

    conv: Any  # its paddle.nn.Conv2D (the parameters oneDNN reads and writes the gradients of)
    norm: Any  # its paddle.nn.BatchNorm2D, or None (the conv has a bias)
    unlike: str | None  # why it is not the block oneDNN runs ('same' conv, ReLU, 2x2 max-pool), or None
    size: tuple[int, int]  # (height, width) of its input


class OutputLayer(NamedTuple):
    """The network's last layer, and whether anything comes between the last conv block and it."""

    linear: Any  # the paddle.nn.Linear that makes the class scores
    direct: bool  # True: it reads the last block's output as it is (no hidden layers, no dropout between)


@runtime_checkable
class FastConvNet(Protocol):
    """A network whose conv blocks may run on oneDNN in eager training. Tracing, export and state dicts always
    see its stock layers: the oneDNN blocks only compute with its parameters."""

    def conv_blocks(self, input_shape: tuple[int, int, int]) -> list[ConvBlock]:
        """Its conv blocks in order, for inputs of ``input_shape`` (channels, height, width)."""
        ...

    def output_layer(self) -> OutputLayer | None:
        """Its output layer, or None to keep it on the stock layer."""
        ...

    def use_fast_blocks(self, blocks: list | None, output: Any = None) -> None:
        """Run block i on ``blocks[i]`` (an ``onednn.Block``, or None: the stock layers) and the output layer on
        ``output`` (an ``onednn.Dense``, or None) in eager mode; ``blocks`` None: everything stock."""
        ...
