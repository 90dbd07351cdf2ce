"""The CNN's conv blocks as data: complete from the config (``cnn_blocks``), and the size of what each makes
(``block_output``). Plain Python: ``config`` checks a network's geometry with it before anything is built."""

from __future__ import annotations

# One entry of model.blocks, its defaults; kernel and batch_norm (None) default to the model's own keys, a
# pool's stride (None) to its size. config.BLOCK_FIELDS describes and checks each key.
DEFAULTS = {"channels": None, "kernel": None, "stride": 1, "padding": "same", "activation": "relu", "pool": "max",
            "pool_size": 2, "pool_stride": None, "pool_padding": 0, "batch_norm": None}


def cnn_blocks(model_cfg) -> list[dict]:
    """The CNN's conv blocks, complete: from model.blocks, or from the short keys (channels, kernel_size,
    batch_norm: a 'same' conv, ReLU and a 2x2 max-pool each). ``padding`` in pixels; ``padding_given``: as
    written ('same' or pixels). ``model_cfg``: the config's model section, or its dict form."""
    m = model_cfg if isinstance(model_cfg, dict) else model_cfg.to_dict()
    given = m.get("blocks") or [{"channels": c} for c in m["channels"]]
    out = []
    for b in given:
        b = {**DEFAULTS, **b}
        kernel = b["kernel"] or m["kernel_size"]
        out.append({**b, "kernel": kernel, "padding_given": b["padding"],
                    "padding": kernel // 2 if b["padding"] == "same" else b["padding"],
                    "batch_norm": m["batch_norm"] if b["batch_norm"] is None else b["batch_norm"],
                    "pool_stride": b["pool_stride"] or b["pool_size"]})
    return out


def block_output(h: int, w: int, b: dict) -> tuple[int, int]:
    """The height and width a block (``cnn_blocks``) makes of an h x w input (Paddle's floor arithmetic)."""
    def side(n):
        n = (n + 2 * b["padding"] - b["kernel"]) // b["stride"] + 1
        if b["pool"] != "none" and n >= 1:
            n = (n + 2 * b["pool_padding"] - b["pool_size"]) // b["pool_stride"] + 1
        return n
    return side(h), side(w)
