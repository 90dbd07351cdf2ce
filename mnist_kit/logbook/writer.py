"""VisualDL logging: one writer per run directory, every component, and reading records back.

What visualdl 2.5.3 does that shapes this module (checked against its source and its server):
- ``add_pr_curve``/``add_roc_curve`` crash with numpy >= 1.24, and upstream's ROC divides by the wrong
  count; the curves are computed here (``metrics.binary_curve``) and written as raw records.
- ``roc_curve_raw`` truncates numpy rates to int: rates are passed as lists.
- ``add_embeddings`` forces step 0; embeddings are written as raw records with their step. Its parser
  cuts vectors of more than 200 dimensions with an indexing bug (the CNN's 980 became about 4 distinct
  points), so wider features are reduced to ``EMBEDDING_DIMS`` by PCA first.
- On resume, the records up to the resumed step are carried into a fresh log file and the rest are set
  aside, so the log has no duplicated and no missing steps.
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import numpy as np

from mnist_kit.evaluation import metrics
from mnist_kit.logbook import visuals
from mnist_kit.util import readback

MAX_RECORDS = 4 << 30  # bytes of one VisualDL records file read back (on resume)
NUM_THRESHOLDS = 127  # the most visualdl's PR/ROC pages take
EMBEDDING_LIMIT, EMBEDDING_DIMS = 200, 64  # wider features than the limit are reduced to EMBEDDING_DIMS


def read_records(path: Path) -> list:
    """The ``Record`` protos of a VisualDL records file; a frame cut short by a crash ends the list."""
    from visualdl.proto.record_pb2 import Record

    blob = readback.read_bytes(path, MAX_RECORDS)
    out, pos = [], 0
    while pos + 8 <= len(blob):
        (length,) = struct.unpack("<Q", blob[pos:pos + 8])
        if pos + 8 + length > len(blob):
            break
        try:
            out.append(Record.FromString(blob[pos + 8:pos + 8 + length]))
        except Exception:  # noqa: BLE001 - a damaged tail: keep what came before
            break
        pos += 8 + length
    return out


def _set_aside_name(name: str) -> str:
    # the board reads every file whose name contains "vdlrecords": rename so set-aside logs are not shown
    return name.replace("vdlrecords", "vdl-set-aside")


class Logbook:
    """The VisualDL log of one run. With ``logdir=None`` every call does nothing (logging off, or rank > 0)."""

    def __init__(self, logdir: Path | None, display_name: str = "", resume_step: int | None = None,
                 superseded: Path | None = None):
        """``resume_step``: keep the existing records up to and including this step; those after it are moved
        (with the old files) to ``superseded``."""
        self.writer = None
        self.logdir = Path(logdir) if logdir is not None else None
        if logdir is None:
            return
        from visualdl import LogWriter  # imported only when logging is on

        logdir = Path(logdir)
        old_files = sorted(logdir.glob("vdlrecords*")) if resume_step is not None else []
        kept, dropped = [], 0
        for f in old_files:
            for record in read_records(f):
                values = [v for v in record.values if v.tag != "meta_data_tag"]
                keep = [v for v in values if v.id <= resume_step]
                dropped += len(values) - len(keep)
                if keep:
                    del record.values[:]
                    record.values.extend(keep)
                    kept.append(record)
        stamp = f"{int(time.time()):010d}"
        name = f"vdlrecords.{stamp}.log" if not old_files else f"vdlrecords.{stamp}.resumed{len(old_files)}.log"
        self.writer = LogWriter(logdir=str(logdir), file_name=name, display_name=display_name)
        if old_files:
            for record in kept:  # the records are replayed as they were written
                self._add(record)
            self.writer.flush()
            for f in old_files:
                if dropped and superseded is not None:
                    superseded.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(f), superseded / _set_aside_name(f.name))
                else:
                    f.unlink()

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def _add(self, record) -> None:
        assert self.writer is not None
        self.writer._get_file_writer().add_record(record)

    # ---------------------------------------------------------------- components

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag=tag, text_string=text, step=int(step))

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag=tag, img=rgb, step=int(step), dataformats="HWC")

    def histogram(self, tag: str, values: np.ndarray, step: int, buckets: int = 30) -> None:
        if self.writer is not None:
            self.writer.add_histogram(tag=tag, values=np.asarray(values).ravel(), step=int(step), buckets=buckets)

    def hparams(self, hparams: dict, metric_tags: list[str]) -> None:
        """Hyper-parameters of the run; the board takes each metric's value from the scalar tag of that name."""
        if self.writer is not None:
            self.writer.add_hparams(hparams_dict=hparams, metrics_list=list(metric_tags))

    def curves(self, labels: np.ndarray, probs: np.ndarray, classes, step: int) -> None:
        """One PR curve (tag ``pr/<class>``) and one ROC curve (``roc/<class>``) per class (the first
        ``visuals.MAX_CLASSES``), from the TRUE labels against that class's probability."""
        if self.writer is None:
            return
        from visualdl.component.base_component import pr_curve_raw, roc_curve_raw

        walltime = round(time.time() * 1000)
        for k, name in list(enumerate(classes))[:visuals.MAX_CLASSES]:
            c = metrics.binary_curve(labels == k, probs[:, k], NUM_THRESHOLDS)
            counts = {key: c[key].tolist() for key in ("tp", "fp", "tn", "fn")}
            tag = f"{k}_{name}".replace("/", "-").replace(" ", "_")
            self._add(pr_curve_raw(tag=f"pr/{tag}", precision=c["precision"].tolist(),
                                   recall=c["recall"].tolist(), step=int(step), walltime=walltime, **counts))
            self._add(roc_curve_raw(tag=f"roc/{tag}", tpr=c["recall"].tolist(), fpr=c["fpr"].tolist(),
                                    step=int(step), walltime=walltime, **counts))

    def embeddings(self, tag: str, features: np.ndarray, metadata: dict[str, list[str]], step: int) -> None:
        """One point per row of ``features``, with one metadata column per key of ``metadata`` (the board
        labels points by the first and offers every column to colour them by)."""
        if self.writer is None:
            return
        from visualdl.component.base_component import embedding

        features = np.asarray(features, np.float32)
        if features.shape[1] > EMBEDDING_LIMIT:
            features = metrics.pca(features, EMBEDDING_DIMS)
        columns = [list(c) for c in metadata.values()]  # visualdl takes the columns and makes rows of them
        self._add(embedding(tag=tag, labels=columns, labels_meta=list(metadata), hot_vectors=features.tolist(),
                            step=int(step), walltime=round(time.time() * 1000)))

    # ---------------------------------------------------------------- composites

    def sample_grid(self, tag: str, images: np.ndarray, labels: np.ndarray, classes, step: int = 0) -> None:
        """The first ``visuals.SHOWN`` images, each captioned with its class."""
        if self.writer is not None:
            captions = [class_caption(y, classes) for y in labels[:visuals.SHOWN]]
            self.image(tag, visuals.grid(images[:visuals.SHOWN], captions), step)

    def misclassified(self, tag: str, images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, step: int,
                      limit: int = visuals.SHOWN) -> None:
        if self.writer is None:
            return
        wrong = np.flatnonzero(predicted != labels)[:limit]
        captions = [f"p:{predicted[i]} t:{labels[i]}" for i in wrong]
        self.image(tag, visuals.grid(images[wrong], captions, colors=[(255, 120, 120)] * len(wrong)), step)

    def confusion(self, tag: str, cm: np.ndarray, classes, step: int) -> None:
        if self.writer is not None:
            self.image(tag, visuals.confusion_image(cm, list(classes)), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def class_caption(k: int, classes) -> str:
    """``3 Dress``; a class named by its own index (MNIST's digits) is just ``3``."""
    return str(k) if str(classes[k]) == str(k) else f"{k} {classes[k]}"


def log_prepared(logdir: Path, prepared, summary: str, counts: dict | None = None) -> None:
    """What ``prepare`` shows in VisualDL: up to ten training samples of each class, and the class counts
    (``counts``, {split: [count per class]}, default: the data set's own)."""
    logdir = Path(logdir)
    for old in logdir.glob("vdlrecords*"):  # one log per data set: a new prepare replaces it
        old.unlink()
    book = Logbook(logdir, display_name=f"data: {prepared.name}")
    images, labels = [], []  # one row per class; a class with fewer than ten images leaves blank tiles
    blank = np.zeros_like(prepared.x_train[0])
    for k, _ in enumerate(prepared.classes[:visuals.MAX_TILES // 10]):  # the first 40 classes at most
        picks = np.flatnonzero(prepared.y_train == k)[:10]
        images += [prepared.x_train[i] for i in picks] + [blank] * (10 - len(picks))
        labels.append(class_caption(k, prepared.classes))
    book.image("data/train_samples_by_class", visuals.grid(np.stack(images), [""] * len(images), columns=10,
                                                           row_labels=labels), 0)
    book.text("data/class_counts", summary)
    for split, per_class in (counts or prepared.meta["class_counts"]).items():
        for k, n in enumerate(per_class):
            book.scalar(f"data/{split}_count", n, k)  # x axis: class index
    book.close()
