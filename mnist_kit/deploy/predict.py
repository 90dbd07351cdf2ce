"""Predict the class of people's images (digits, clothing, or an image folder's classes) with an exported model.
Imports no training code."""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnist_kit.deploy import inference
from mnist_kit.deploy.preprocess import ImageError, preprocess
from mnist_kit.errors import UserError
from mnist_kit.experiments import listing
from mnist_kit.util.images import IMAGE_SUFFIXES, MAX_PIXELS, load_image


def newest_export(root: Path) -> Path:
    """The complete, checked export written last by any run under ``root``."""
    metas = [folder / inference.META for run in listing.find(root) for folder in run.exports()
             if inference.is_export(folder, checked=True)]
    if not metas:
        raise inference.ModelError(f"no exported model under {root}; make one with `mnist-kit export`, "
                                   "or pass --model DIR")
    return max(metas, key=lambda p: p.stat().st_mtime).parent


def expand(paths: list[str]) -> list[tuple[str, Path | None, str | None]]:
    """(name, path, error) for every file named by PATHs: files, folders (their images) or globs."""
    out: list[tuple[str, Path | None, str | None]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                out.append((p, None, "the folder holds no image files"))
            out += [(str(f), f, None) for f in files]
        elif path.is_file():
            out.append((p, path, None))
        elif path.exists():
            out.append((p, None, "not a regular file (a FIFO, socket or device)"))
        elif any(c in p for c in "*?["):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                out.append((p, None, "no file matches this pattern"))
            out += [(m, Path(m), None) for m in matches if Path(m).is_file()]
        else:
            out.append((p, None, "no such file or folder"))
    return out


def reader(meta: inference.ExportMeta, max_pixels: int = MAX_PIXELS):
    """The function that brings an image file (or its bytes) to the form of the export's training images:
    uint8 (H, W) or (H, W, 3). It raises ImageError (TooLarge beyond ``max_pixels``)."""
    style = meta.get("preprocess", "digit")
    if style == "folder":  # trained on an image folder: read each image as prepare read the training images
        image = meta["image"]
        return functools.partial(load_image, size=tuple(image["image_size"]), color=image["color"],
                                 resize=image["resize"], max_pixels=max_pixels)
    # MNIST or Fashion-MNIST: find the digit or object and frame it as those data sets do
    return functools.partial(preprocess, style=style, max_pixels=max_pixels)


def answer(p: np.ndarray, classes: list[str], topk: int = 3, min_confidence: float = 0.6) -> dict:
    """The prediction for one image's probabilities ``p``: class, label, probability, low_confidence, top."""
    order = np.argsort(-p, kind="stable")[:min(topk, len(classes))]
    best = int(order[0])
    return {"class": best, "label": classes[best], "probability": float(p[best]),
            "low_confidence": bool(p[best] < min_confidence),
            "top": [{"class": int(c), "label": classes[c], "probability": float(p[c])} for c in order]}


def predict_paths(paths: list[str], model_dir: Path, topk: int = 3, min_confidence: float = 0.6,
                  save_preprocessed: Path | None = None, device: str = "cpu", runtime: str = "auto") -> list[dict]:
    """One result per image: the class, its probability and the top-k, or the error for that file."""
    return predict_sources(paths, model_dir, topk, min_confidence, save_preprocessed, device, runtime)


def predict_sources(sources: Sequence[str | tuple[str, bytes]], model_dir: Path, topk: int = 3,
                    min_confidence: float = 0.6, save_preprocessed: Path | None = None, device: str = "cpu",
                    runtime: str = "auto") -> list[dict]:
    """``predict_paths`` for paths (files, folders, globs) and images in memory, given as (name, the bytes of
    an image file): each read by the same preprocessing."""
    predictor = inference.Predictor(model_dir, device=device, runtime=runtime)
    classes = predictor.meta["classes"]
    read = reader(predictor.meta)
    results: list[dict] = []
    images, slots = [], []
    named: list[tuple[str, Path | bytes | None, str | None]] = []
    for source in sources:
        named += [(source[0], source[1], None)] if isinstance(source, tuple) else list(expand([source]))
    for name, path, error in named:
        result = {"file": name}
        if error is None:
            try:
                images.append(read(path))
                slots.append(len(results))
            except ImageError as e:
                error = str(e)
        if error is not None:
            result["error"] = error
        results.append(result)
    if save_preprocessed is not None and images:
        save_new_pngs(save_preprocessed, [(f"{i:04d}_{_stem(results[i]['file'])}.png", img)
                                          for i, img in zip(slots, images)])
    probs = predictor.probabilities(np.stack(images)) if images else np.zeros((0, len(classes)))
    for i, p in zip(slots, probs):
        results[i].update(answer(p, classes, topk, min_confidence))
    return results


def _stem(name: str) -> str:
    """A file's name without its suffix; an image given in memory (``<image 3>``) as ``image-3``."""
    return name.strip("<>").replace(" ", "-") if name.startswith("<") else Path(name).stem


def save_new_pngs(folder: Path, named: list[tuple[str, np.ndarray]]) -> None:
    """Write each image as a new PNG file in ``folder`` (made if missing): refuse, before writing any, if a
    file (or a link) of one of these names is there already; never write through a link."""
    from PIL import Image

    folder = Path(folder)
    taken = [name for name, _ in named if os.path.lexists(folder / name)]
    if taken:
        raise UserError(f"--save-preprocessed {folder} already holds {taken[0]}"
                        + (f" and {len(taken) - 1} more of the files it would write" if len(taken) > 1 else "")
                        + "; mnist-kit writes only new files there: name a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in named:
        target = folder / name
        with open(target, "xb") as f:  # O_EXCL: a file or link that appeared meanwhile is not written through
            try:
                Image.fromarray(img, "L" if img.ndim == 2 else "RGB").save(f, format="PNG")
            except BaseException:
                target.unlink(missing_ok=True)  # ours: made by this open
                raise


def format_result(r: dict) -> str:
    if "error" in r:
        return f"{r['file']}: ERROR {r['error']}"
    top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])
    flag = "  (low confidence)" if r["low_confidence"] else ""
    return f"{r['file']}: {r['label']} (p={r['probability']:.3f}){flag}   top: {top}"


def to_json(results: list[dict]) -> str:
    return "\n".join(json.dumps(r) for r in results)
