"""The networks, chosen by name: ``linear``, ``mlp``, ``cnn``.

Each returns logits and exposes ``features(x)``, the penultimate representation (for embeddings).
Input shape and number of classes come from the data, so nothing is sized by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_kit.backend.runtime import paddle
from mnist_kit.errors import UserError
from mnist_kit.models import registry
from mnist_kit.models.blocks import block_output, cnn_blocks
from mnist_kit.models.onednn.protocol import ConvBlock, OutputLayer

if TYPE_CHECKING:
    from mnist_kit.config import Model

nn = paddle.nn
F = paddle.nn.functional


def _in_pir_mode() -> bool:
    """Whether a static program being built is a PIR program (Paddle 3's default; Paddle 2.6 has none)."""
    in_pir = getattr(paddle.framework, "in_pir_mode", None)
    return bool(in_pir and in_pir())


def log_mean_exp(logp, legacy: bool | None = None):
    """``log(mean(exp(logp)))`` over axis 0 (the views of test-time augmentation): the log of the mean
    probability. ``legacy`` (default: whether a legacy static program is being built, as the board's graph
    child does with FLAGS_enable_pir_api=0): Paddle 3.3's logsumexp, exp, log and sum take only PIR values
    there, while log_softmax works, and ``logp - log_softmax(logp)`` over the views is the same log-sum-exp in
    every view."""
    k = float(np.log(logp.shape[0]))
    if legacy is None:
        legacy = not (paddle.in_dynamic_mode() or _in_pir_mode())
    if legacy:
        return logp[0] - F.log_softmax(logp, axis=0)[0] - k
    return paddle.logsumexp(logp, axis=0) - k


class _AddChannelBias(paddle.autograd.PyLayer):
    """``x + b[None, :, None, None]``, the conv bias, computed fast.

    Paddle's CPU broadcast add and its gradient cost more than the convolution they follow (about 37% of
    a training step of the default CNN). The same sum is done here by the inference form of batch norm
    (mean 0, variance 1, scale 1, epsilon 0: within one float rounding of ``x + b``), and the gradients are
    the exact ones: ``dx = dy``, ``db`` = the sum of ``dy`` over batch and space.
    """

    @staticmethod
    def forward(ctx, x, b, zeros, ones):
        return F.batch_norm(x, zeros, ones, weight=ones, bias=b, training=False, epsilon=0.0)

    @staticmethod
    def backward(ctx, dy):
        n, c = dy.shape[0], dy.shape[1]
        return dy, dy.reshape([n, c, -1]).sum(axis=2).sum(axis=0)


class Conv2D(paddle.nn.Conv2D):
    """``nn.Conv2D`` (same parameters, same function) that adds its bias through ``_AddChannelBias`` when
    run eagerly. A traced or exported model (static mode) is the stock layer."""

    _bias_consts: tuple | None = None  # zeros and ones of the bias's size, made once

    def forward(self, x):
        if self.bias is None or not paddle.in_dynamic_mode():
            return super().forward(x)
        if self._bias_consts is None or self._bias_consts[0].shape[0] != self.bias.shape[0]:
            c = self.bias.shape[0]
            self._bias_consts = (paddle.zeros([c]), paddle.ones([c]))
        y = F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation, self._groups,
                     self._data_format)
        return _AddChannelBias.apply(y, self.bias, *self._bias_consts)


class Linear(paddle.nn.Layer):
    """Softmax regression on the raw pixels."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(int(np.prod(input_shape)), num_classes)

    def features(self, x):
        return self.flatten(x)

    def forward(self, x):
        return self.fc(self.features(x))


class MLP(paddle.nn.Layer):
    def __init__(self, input_shape, num_classes, hidden=(256, 128), activation="relu", dropout=0.0):
        super().__init__()
        layers, width = [nn.Flatten()], int(np.prod(input_shape))
        for h in hidden:
            layers += [nn.Linear(width, h), registry.resolve(registry.ACTIVATIONS, activation)()]
            width = h
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.dropout(self.features(x)))


class CNN(paddle.nn.Layer):
    """Conv blocks, then hidden linear layers with ReLU (``model.head``, none by default), dropout and the
    output layer; outside training, optionally averaged over copies of each image (``model.tta``). Each
    block: a conv [+ batch norm], an activation and a pooling (``blocks.cnn_blocks``: from ``model.blocks``,
    or from the short keys: a 'same' conv, ReLU and a 2x2 max-pool per entry of ``channels``).

    The default, two blocks of 20 channels with 5x5 kernels, is the classic Paddle/LeNet tutorial net.
    A max-pool runs before a monotonic activation (ReLU, sigmoid, tanh, leaky ReLU): ``act(maxpool(x)) ==
    maxpool(act(x))`` and the gradients are the same too, but the activation then runs on a quarter of the
    values (measured: 44.5 vs 45.7 ms per training step of the default CNN); an average pool, or GELU, runs
    after the activation. Either way the parameter names, and so checkpoints, are those of the textbook
    order. The standard block (stride 1, 'same', ReLU, 2x2 max-pool) may run on oneDNN (``models/onednn``).
    """

    MONOTONIC = ("relu", "sigmoid", "tanh", "leaky_relu", "none")

    def __init__(self, input_shape, num_classes, channels=(20, 20), kernel_size=5, batch_norm=False, dropout=0.0,
                 blocks=None, head=None, tta="none"):
        super().__init__()
        self.specs = cnn_blocks({"channels": list(channels), "kernel_size": kernel_size,
                                 "batch_norm": batch_norm, "blocks": blocks})
        in_ch, height, width = input_shape
        layers: list[Any] = []
        self._blocks: list[tuple[Any, Any, list]] = []  # (conv, batch norm or None, [what follows, in order])
        for b in self.specs:
            # with batch norm next, a conv bias is cancelled by the mean subtraction: leave it out
            conv = Conv2D(in_ch, b["channels"], b["kernel"], stride=b["stride"], padding=b["padding"],
                          bias_attr=False if b["batch_norm"] else None)
            norm = nn.BatchNorm2D(b["channels"]) if b["batch_norm"] else None
            act = registry.resolve(registry.BLOCK_ACTIVATIONS, b["activation"])() if b["activation"] != "none" else None
            pool = registry.resolve(registry.POOLS, b["pool"])(
                b["pool_size"], b["pool_stride"], b["pool_padding"]) if b["pool"] != "none" else None
            after = [pool, act] if b["pool"] == "max" and b["activation"] in self.MONOTONIC else [act, pool]
            after = [layer for layer in after if layer is not None]
            layers += [conv, *([norm] if norm is not None else []), *after]
            self._blocks.append((conv, norm, after))
            in_ch, (height, width) = b["channels"], block_output(height, width, b)
        if height < 1 or width < 1:
            raise ValueError(f"the conv blocks shrink a {input_shape[1]}x{input_shape[2]} input to nothing")
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        width, hidden = in_ch * height * width, []
        for h in head or ():
            hidden += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.head = nn.Sequential(*hidden) if hidden else None  # model.head: hidden linear layers
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)
        self.tta = tta
        self._fast: list[Any] | None = None  # per block: a oneDNN block (onednn.Block) or None (the stock layers)
        self._output: Any = None  # the output layer on oneDNN (onednn.Dense), or None

    # models/onednn's FastConvNet protocol: conv_blocks, output_layer, use_fast_blocks

    def conv_blocks(self, input_shape) -> list[ConvBlock]:
        """Per block: its conv, its batch norm or None, why it is not the standard block oneDNN runs or None,
        (height, width) of its input."""
        out, (_, h, w) = [], input_shape
        for b, (conv, norm, _) in zip(self.specs, self._blocks):
            odd = []
            if b["stride"] != 1:
                odd.append(f"stride {b['stride']}")
            if b["kernel"] % 2 == 0 or b["padding"] != b["kernel"] // 2:
                odd.append(f"padding {b['padding']} (not 'same')")
            if b["activation"] != "relu":
                odd.append(f"{b['activation']} activation")
            if (b["pool"], b["pool_size"], b["pool_stride"], b["pool_padding"]) != ("max", 2, 2, 0):
                odd.append("pool none" if b["pool"] == "none" else
                           f"{b['pool']} pool {b['pool_size']}/{b['pool_stride']}/{b['pool_padding']}")
            out.append(ConvBlock(conv, norm, ", ".join(odd) or None, (h, w)))
            h, w = block_output(h, w, b)
        return out

    def output_layer(self) -> OutputLayer:
        """``fc``; it reads the conv blocks' output directly unless hidden layers (``model.head``) or dropout
        (which draws its mask in memory order) come between."""
        return OutputLayer(self.fc, self.head is None and not self.dropout.p)

    def use_fast_blocks(self, blocks, output=None) -> None:
        """Run block i on ``blocks[i]`` (an ``onednn.Block``, or None for the stock layers) and the output
        layer on ``output`` (an ``onednn.Dense``, or None) in eager mode; ``None`` for all stock. Tracing and
        export always use the stock layers."""
        self._fast = list(blocks) if blocks is not None and any(b is not None for b in blocks) else None
        self._output = output if self._fast is not None else None

    def features(self, x):
        x = self.conv_features(x)
        return self.head(x) if self.head is not None else x

    def conv_features(self, x):
        """The conv blocks' output, flattened (channels, rows, columns)."""
        if self._fast is None or not paddle.in_dynamic_mode():
            return self.body(x)
        x = self._run_blocks(x)
        return (x.transpose([0, 3, 1, 2]) if self._fast[-1] is not None and self._fast[-1].nhwc_out else x).flatten(1)

    def _run_blocks(self, x):
        """The last block's output: channels last when it runs on oneDNN and feeds the oneDNN output layer."""
        assert self._fast is not None  # (called only with oneDNN blocks in use)
        for fast, (conv, norm, after) in zip(self._fast, self._blocks):
            if fast is None:
                x = conv(x)
                x = norm(x) if norm is not None else x
                for layer in after:
                    x = layer(x)
            else:
                x = fast(x, conv)
        return x

    def forward(self, x):
        if self.training or self.tta == "none":
            return self._logits(x)
        return self._averaged(x)

    def _logits(self, x):
        if self._output is None or not paddle.in_dynamic_mode():
            return self.fc(self.dropout(self.features(x)))
        features = self._run_blocks(x).flatten(1) if self._output.hwc is not None else self.features(x)
        return self._output(self.dropout(features), self.fc)

    def _averaged(self, x):
        """``model.tta``: log of the mean class probabilities of ``x`` and its copies (mirrored; moved one
        pixel left and right, the edge column repeated), all in one batch; softmax of it gives the mean."""
        views = [x]
        if "flip" in self.tta:
            views.append(paddle.flip(x, axis=[3]))
        if "shift" in self.tta:
            width = x.shape[3]
            padded = F.pad(x, [1, 1, 0, 0], mode="replicate", data_format="NCHW")
            views += [padded[:, :, :, :width], padded[:, :, :, 2:]]  # moved right, moved left
        k = len(views)
        logits = self._logits(paddle.concat(views, axis=0))
        logp = F.log_softmax(logits, axis=-1).reshape([k, -1, logits.shape[-1]])
        return log_mean_exp(logp)


def build_model(model_cfg: Model | Mapping[str, Any], input_shape=(1, 28, 28),
                num_classes: int = 10) -> paddle.nn.Layer:
    """The network ``model_cfg`` describes, for images of ``input_shape``: the config's model section, or its
    dict form (as config.yaml, a checkpoint and an export's mnist_kit_model.json hold it; keys left out take the
    network's defaults)."""
    options = dict(model_cfg) if isinstance(model_cfg, Mapping) else model_cfg.to_dict()
    name, init = options.pop("name"), options.pop("init", "default")
    model = registry.resolve(registry.MODELS, name)(tuple(input_shape), num_classes, **options)
    initialize(model, init)
    return model


def initialize(model: paddle.nn.Layer, how: str) -> None:
    """``model.init``: the weights of every conv and linear layer drawn anew (from Paddle's seeded generator),
    their biases zero; ``torch`` draws both as PyTorch does by default (kaiming_uniform with a = sqrt(5):
    uniform in +-1/sqrt(fan_in)); ``default`` keeps Paddle's own initialisation."""
    if how == "default":
        return
    from paddle.nn import initializer

    if how == "torch":
        for layer in model.sublayers():
            if isinstance(layer, (nn.Conv2D, nn.Linear)):  # fan in: a conv's in/groups x kh x kw; a Linear's rows
                shape = layer.weight.shape
                bound = 1.0 / math.sqrt(math.prod(shape[1:]) if isinstance(layer, nn.Conv2D) else shape[0])
                initializer.Uniform(-bound, bound)(layer.weight)
                if layer.bias is not None:
                    initializer.Uniform(-bound, bound)(layer.bias)
        return
    weights = {"kaiming": initializer.KaimingNormal(), "xavier": initializer.XavierUniform(),
               "normal": initializer.Normal(0.0, 0.01), "uniform": initializer.Uniform(-0.05, 0.05)}[how]
    for layer in model.sublayers():
        if isinstance(layer, (nn.Conv2D, nn.Linear)):
            weights(layer.weight)
            if layer.bias is not None:
                initializer.Constant(0.0)(layer.bias)


def load_weights(model: paddle.nn.Layer, weights: dict, source: str) -> None:
    """Load ``weights`` (a state dict) into ``model`` strictly: every parameter and buffer present with its
    shape and nothing else, or UserError naming the first mismatch (Paddle would skip it with a warning)."""
    own = model.state_dict()
    for name, value in own.items():
        if name not in weights:
            raise UserError(f"{source} has no {name}: it holds the weights of another model")
        theirs = weights[name]
        if not hasattr(theirs, "shape") or not hasattr(theirs, "dtype"):
            raise UserError(f"{source}: {name} is not an array of weights ({type(theirs).__name__})")
        if list(theirs.shape) != list(value.shape):
            raise UserError(f"{source}: {name} has shape {list(theirs.shape)}, the model's is "
                            f"{list(value.shape)}: it holds the weights of another model")
        if _dtype_name(theirs.dtype) != _dtype_name(value.dtype):  # Paddle asserted here, in a traceback
            raise UserError(f"{source}: {name} holds {_dtype_name(theirs.dtype)} values, the model's are "
                            f"{_dtype_name(value.dtype)}")
    extra = [k for k in weights if k not in own]
    if extra:
        raise UserError(f"{source} has {extra[0]}, which the model does not: it holds the weights of another model")
    try:
        model.set_state_dict(weights)
    except Exception as e:  # noqa: BLE001 - what the checks above did not foresee in a foreign file
        raise UserError(f"{source}: its weights cannot be loaded ({type(e).__name__}: {e})") from None


def _dtype_name(dtype) -> str:
    """float32 for numpy's float32 and Paddle's paddle.float32 alike."""
    return str(dtype).rsplit(".", 1)[-1]


def save_program(model: paddle.nn.Layer, prefix, input_shape=(1, 28, 28)) -> None:
    """Trace ``model`` into a static program for any batch size: ``prefix.json`` (``.pdmodel`` with
    Paddle 2.6) and ``prefix.pdiparams``, what Paddle Inference runs."""
    model.eval()
    spec = [paddle.static.InputSpec([None, *input_shape], "float32", name="image")]
    paddle.jit.save(model, str(prefix), input_spec=spec)


def _flops(layer: paddle.nn.Layer, x, y) -> int:
    """Multiply-adds of one call, counted as ``paddle.flops`` counts them (its table is unusable on Paddle
    3.3: it crashes with ``print_detail`` and counts subclasses, such as this module's Conv2D, as 0)."""
    out = int(np.prod(y.shape))
    if isinstance(layer, nn.Conv2D):
        return out * (x.shape[1] // layer._groups * int(np.prod(layer.weight.shape[2:])) + (layer.bias is not None))
    if isinstance(layer, nn.Linear):
        return out * layer.weight.shape[0]
    if isinstance(layer, nn.BatchNorm2D):
        return 2 * out
    if isinstance(layer, (nn.AvgPool2D, nn.LeakyReLU)):
        return out
    return 0


def layer_table(model: paddle.nn.Layer, input_shape) -> list[dict]:
    """Every leaf layer in the order one image runs through it: name, type, output shape, parameters and
    multiply-adds. Runs the model once in eval mode without gradients (no state changes, no random draws),
    on the stock layers."""
    rows, hooks = [], []
    for name, layer in model.named_sublayers():
        if not layer.sublayers():
            def hook(layer, inputs, output, name=name):
                params = sum(int(np.prod(p.shape)) for p in layer.parameters())
                rows.append({"layer": name, "type": type(layer).__name__, "output": [1, *output.shape[1:]],
                             "params": params, "flops": _flops(layer, inputs[0], output)})
            hooks.append(layer.register_forward_post_hook(hook))
    was_training, fast = model.training, getattr(model, "_fast", None)
    try:
        model.eval()
        if fast is not None:  # the oneDNN layers call no sublayer: count the stock ones, the same network
            fast = model._fast, model._output
            model.use_fast_blocks(None)
        with paddle.no_grad():
            model(paddle.zeros([1, *input_shape], "float32"))
    finally:
        for h in hooks:
            h.remove()
        if fast is not None:
            model.use_fast_blocks(*fast)
        if was_training:
            model.train()
    return rows


def summary(model: paddle.nn.Layer, input_shape=(1, 28, 28)) -> str:
    """The per-layer table (``layer_table``) with totals, as ``paddle.summary`` and ``paddle.flops`` show it."""
    rows = layer_table(model, input_shape)
    width = max([len(r["layer"]) for r in rows] + [5])
    kinds = max([len(r["type"]) for r in rows] + [4])
    lines = [f"{'layer':<{width}}  {'type':<{kinds}}  {'output shape':<18}{'params':>10}{'FLOPs':>13}"]
    lines += [f"{r['layer']:<{width}}  {r['type']:<{kinds}}  {str(r['output']):<18}{r['params']:>10,}{r['flops']:>13,}"
              for r in rows]
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    flops = sum(r["flops"] for r in rows)
    lines.append(f"{type(model).__name__}: {params:,} parameters, {flops:,} FLOPs per image (multiply-adds, "
                 "as paddle.flops counts them)")
    return "\n".join(lines)
