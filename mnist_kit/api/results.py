"""What the Python API returns: a ``Run`` (a run folder, read when asked), an ``Evaluation``, an ``Export``, a
``Prediction`` per image, a ``Sweep`` and the data a ``prepare`` made. Plain objects over the files mnist-kit
writes; importing them imports no paddle. Each has ``to_dict()``: what the command's ``--json`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_kit.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from mnist_kit.config import Config


class Run:
    """A run folder: ``Run.open(path)``, or what ``train``, ``resume`` and ``runs`` return. Every property
    reads the folder when asked, so a run being trained shows its progress."""

    def __init__(self, path: str | Path, root: str | Path | None = None, listed: dict[str, Any] | None = None):
        self.path = Path(path)
        self.root = Path(root) if root is not None else None  # where it was listed from: names it in summary()
        self.listed = listed  # from runs(): its summary() as it was when listed (what runs sorted it by)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The run in folder ``path``; UserError if it is not one (no readable run.json)."""
        from mnist_kit.experiments import listing

        return cls(listing.resolve(Path(path), Path(path).parent).path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> dict[str, Any]:
        """What ``mnist-kit runs`` shows of it: status, epochs, best validation accuracy, time, hyper-parameters
        (``status`` "unreadable" and ``error`` for a run whose files cannot be read)."""
        from mnist_kit.experiments import listing
        from mnist_kit.experiments.rundir import RunDir

        return listing.summarize(RunDir(self.path), self.root)

    @property
    def status(self) -> str:
        """running, completed, interrupted, failed, stopped (killed without a word) or unreadable."""
        return str(self.summary()["status"])

    @property
    def info(self) -> dict[str, Any]:
        """run.json: what the run is and how it went."""
        from mnist_kit.experiments.rundir import RunDir

        return dict(RunDir(self.path).read_info())

    @property
    def config(self) -> Config:
        """The config the run trains with (its config.yaml), validated."""
        from mnist_kit.experiments.rundir import RunDir

        return RunDir(self.path).read_config()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One record per epoch done (metrics.jsonl): epoch, train_loss, train_acc, val_loss, val_acc, lr,
        images_per_sec, epoch_seconds, ... (``pandas.DataFrame(run.metrics)`` makes a table of them)."""
        from mnist_kit.experiments.rundir import RunDir

        return RunDir(self.path).read_metrics()

    @property
    def best_val_acc(self) -> float | None:
        """The best validation accuracy of its epochs (None before the first, or without validation)."""
        value = self.summary()["best_val_acc"]
        return None if value is None else float(value)

    @property
    def epochs(self) -> int | None:
        """How many epochs the run trains for (train.steps counted in epochs)."""
        return self.summary()["epochs"]

    def plot(self) -> Any:
        """A matplotlib figure of its epochs: training and validation loss and accuracy, the learning rate
        (Jupyter shows it; ``.savefig("run.png")`` writes it)."""
        from mnist_kit.logbook import figures

        return figures.run_figure(self.metrics, self.name)

    def exports(self) -> list[Path]:
        """Its complete, checked export folders."""
        from mnist_kit.deploy import inference
        from mnist_kit.experiments.rundir import RunDir

        return [f for f in RunDir(self.path).exports() if inference.is_export(f, checked=True)]


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint measured on the test (or validation) split: ``accuracy``, ``loss``, ``per_class``
    (precision, recall, F1 and support of each class) and ``confusion`` (rows: the true class)."""

    result: dict[str, Any] = field(repr=False)  # what `mnist-kit eval --json` prints
    images: np.ndarray | None = field(default=None, repr=False)  # the images of result["mistakes"], uint8

    @property
    def accuracy(self) -> float:
        return float(self.result["accuracy"])

    @property
    def loss(self) -> float:
        return float(self.result["loss"])

    @property
    def classes(self) -> list[str]:
        return list(self.result["classes"])

    @property
    def per_class(self) -> list[dict[str, Any]]:
        """One record per class: label, precision, recall, f1, support."""
        pc = self.result["per_class"]
        return [{"label": c, "precision": pc["precision"][i], "recall": pc["recall"][i], "f1": pc["f1"][i],
                 "support": pc["support"][i]} for i, c in enumerate(self.classes)]

    @property
    def confusion(self) -> np.ndarray:
        """``confusion[i, j]``: images of true class i predicted as j."""
        import numpy as np

        return np.asarray(self.result["confusion_matrix"], dtype=np.int64)

    @property
    def photos(self) -> dict[str, Any] | None:
        """With ``photos=N``: accuracy on photos made from test images, by file format."""
        return self.result.get("photos")

    def __repr__(self) -> str:
        r = self.result
        return (f"Evaluation({r['split']} of {r['dataset']}, {r['checkpoint']}: accuracy {r['accuracy']:.4f}, "
                f"loss {r['loss']:.4f}, {r['samples']} images)")

    @property
    def mistakes(self) -> list[dict[str, Any]]:
        """The most confidently wrong images: index in the split, label, predicted, probability."""
        return list(self.result.get("mistakes", []))

    def plot(self) -> Any:
        """A matplotlib figure: the confusion matrix beside the most confidently wrong images (Jupyter shows
        it; ``.savefig("eval.png")`` writes it)."""
        from mnist_kit.logbook import figures

        r = self.result
        return figures.evaluation_figure(self.confusion, self.classes, self.mistakes, self.images,
                                         f"{r['split']} split of {r['dataset']}, {r['checkpoint']}: accuracy "
                                         f"{r['accuracy']:.2%}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.result)


@dataclass(frozen=True)
class Export:
    """An exported model folder (what ``predict`` and ``serve`` use) and what its checks measured."""

    path: Path
    meta: dict[str, Any] = field(repr=False)  # the export's mnist_kit_model.json
    run: Path | None = None  # the run it was exported from, as it was named (by ``export``)

    @classmethod
    def open(cls, path: str | Path) -> Export:
        """The export in folder ``path``; UserError if it is not a complete, checked one."""
        from mnist_kit.deploy import inference

        return cls(Path(path), dict(inference.read_meta(Path(path))))

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def checks(self) -> dict[str, Any]:
        return dict(self.meta.get("checks", {}))

    @property
    def has_onnx(self) -> bool:
        """Whether it holds a checked model.onnx (predict and serve then run without paddle)."""
        return "onnx" in self.meta

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.meta}


@dataclass(frozen=True)
class Guess:
    """One of a prediction's top k: a class index, its label and its probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The class of one image: ``index``, ``label``, ``probability``, ``top`` (the k most likely), and
    ``low_confidence`` (below ``min_confidence``). ``source``: the file, or ``<image N>`` for one given in
    memory. With ``errors="keep"``, an image that could not be read has ``error`` set (and index -1)."""

    source: str
    index: int
    label: str
    probability: float
    top: tuple[Guess, ...] = ()
    low_confidence: bool = False
    error: str | None = None

    @classmethod
    def from_answer(cls, source: str, answer: dict[str, Any]) -> Prediction:
        """From ``deploy.predict``'s result for one image."""
        if "error" in answer:
            return cls(source, -1, "", 0.0, error=str(answer["error"]))
        return cls(source, int(answer["class"]), str(answer["label"]), float(answer["probability"]),
                   tuple(Guess(int(t["class"]), str(t["label"]), float(t["probability"])) for t in answer["top"]),
                   bool(answer["low_confidence"]))

    def to_dict(self) -> dict[str, Any]:
        """As ``mnist-kit predict --json`` prints it."""
        if self.error is not None:
            return {"file": self.source, "error": self.error}
        return {"file": self.source, "class": self.index, "label": self.label, "probability": self.probability,
                "low_confidence": self.low_confidence,
                "top": [{"class": g.index, "label": g.label, "probability": g.probability} for g in self.top]}


@dataclass(frozen=True)
class Sweep:
    """A sweep folder and its runs, each with how this sweep found or left it (``outcome``)."""

    path: Path
    summaries: list[dict[str, Any]] = field(repr=False)  # one per run, as `mnist-kit runs --json` (+ sweep_outcome)

    @property
    def runs(self) -> list[Run]:
        return [Run(s["path"]) for s in self.summaries]

    @property
    def failed(self) -> list[str]:
        return [s["run"] for s in self.summaries if s.get("sweep_outcome") == "failed"]

    @property
    def busy(self) -> list[str]:
        """Runs left alone: another process is training them."""
        return [s["run"] for s in self.summaries if s.get("sweep_outcome") == "busy"]

    @property
    def best(self) -> Run | None:
        """The run with the best validation accuracy."""
        scored = [s for s in self.summaries if s.get("best_val_acc") is not None]
        return Run(max(scored, key=lambda s: s["best_val_acc"])["path"]) if scored else None


@dataclass(frozen=True)
class PreparedData:
    """A data set prepared by ``prepare``: where its cache is, its classes, the summary the command prints,
    and its images (``x_train``, ``y_train``, ``x_test``, ``y_test``: uint8 images and their labels)."""

    name: str
    path: Path
    classes: tuple[str, ...]
    summary: str = field(repr=False)
    arrays: Any = field(default=None, repr=False)  # data.Prepared

    @property
    def x_train(self) -> np.ndarray:
        return self.arrays.x_train

    @property
    def y_train(self) -> np.ndarray:
        return self.arrays.y_train

    @property
    def x_test(self) -> np.ndarray:
        return self.arrays.x_test

    @property
    def y_test(self) -> np.ndarray:
        return self.arrays.y_test

    def plot(self, count: int = 20) -> Any:
        """A matplotlib figure: the first ``count`` training images with their labels, and the images per class
        in the training and test files."""
        from mnist_kit.logbook import figures

        return figures.samples_figure(self.x_train[:count], self.y_train[:count], list(self.classes),
                                      {"train": self.y_train, "test": self.y_test}, self.name)


def not_a(kind: str, given: Any, expected: str) -> UserError:
    """The error for an argument of the wrong type: one line, as the CLI's errors are."""
    return UserError(f"{kind} must be {expected}, not {type(given).__name__} {str(given)[:60]!r}")
