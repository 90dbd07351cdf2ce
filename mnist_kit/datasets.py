"""The catalogue of data sets: everything mnist-kit knows about each one, in one place -- where its files
come from and their checksums, its class names, how ``predict`` frames a person's photo for it, whether
augmentation is on by default, whether mirroring keeps an image's class, which key sets its validation
split. ``config``, ``data``, ``deploy`` and the CLI read it instead of naming data sets. Plain Python.

Adding a data set: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE_FOLDER = "image_folder"  # data.name of your own images


@dataclass(frozen=True)
class FileSpec:
    filename: str  # name of the official archive, e.g. train-images-idx3-ubyte.gz
    md5_gz: str  # published MD5 of the archive (torchvision, Paddle)
    md5_raw: str  # published MD5 of the uncompressed file
    ndim: int  # 3: images (count, height, width); 1: labels (count)
    sha256_gz: str | None = None  # published SHA-256 of the archive (TensorFlow), where there is one
    count: int = 0  # images or labels the file holds
    image_size: tuple[int, int] = (28, 28)  # height and width of each image

    @property
    def raw_name(self) -> str:
        return self.filename[: -len(".gz")]

    @property
    def raw_bytes(self) -> int:
        """The size of the uncompressed file: its header, and its images or labels."""
        h, w = self.image_size
        return 16 + self.count * h * w if self.ndim == 3 else 8 + self.count


@dataclass(frozen=True)
class DataSet:
    """One data set: what config, data, augment, export and predict know about it."""

    name: str  # data.name
    title: str
    kind: str  # "idx": four IDX files (data/cache.py); "folder": one sub-folder per class (data/folder.py)
    classes: tuple  # class names in label order; () for a folder: its sub-folders, sorted
    photo_style: str  # how predict frames a person's image (deploy/preprocess.py): digit, fill or folder
    augment_by_default: bool  # augment.apply: auto turns the transforms on (docs/performance.md measured why)
    noun: str  # what its images show, for messages: digits, clothing, images
    mirrored: str  # why a mirrored image is not of its class (augment.flip, model.tta flip are refused); "": it is
    mirrors: tuple = ()  # base URLs of the IDX files, tried in order
    files: dict = field(default_factory=dict, hash=False)  # role (train_images, ...) -> FileSpec
    debian_dir: Path | None = None  # where Debian's package puts the files
    debian_package: str | None = None

    @property
    def sizes(self) -> dict[str, int]:
        """Images of each split of the published files (an IDX data set), e.g. ``{"train": 60000, "test": 10000}``."""
        return {role.split("_")[0]: spec.count for role, spec in self.files.items() if role.endswith("_images")}

    @property
    def val_key(self) -> str:
        """The data key that sets the validation split: a count of images, or a share of a folder."""
        return "val_ratio" if self.kind == "folder" else "val_size"


CATALOG: dict[str, DataSet] = {
    "mnist": DataSet(
        name="mnist",
        title="MNIST",
        kind="idx",
        classes=tuple(str(d) for d in range(10)),
        photo_style="digit",  # framed as MNIST was made: the digit's box to 20x20, centred by its mass
        augment_by_default=True,
        noun="digits",
        mirrored="a mirrored 2 or 7 is not a digit",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision
            "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow
            "https://dataset.bj.bcebos.com/mnist/",  # Paddle
            "http://yann.lecun.com/exdb/mnist/",  # the original
        ),
        files={
            "train_images": FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                     "6bbc9ace898e44ae57da46a324031adb", 3,
                                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", count=60_000),
            "train_labels": FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                                     "a25bea736e30d166cdddb491f175f624", 1,
                                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", count=60_000),
            "test_images": FileSpec("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                                    "2646ac647ad5339dbf082846283269ea", 3,
                                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", count=10_000),
            "test_labels": FileSpec("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                                    "27ae3e4e09519cfbb04c329615203637", 1,
                                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", count=10_000),
        },
    ),
    "fashion-mnist": DataSet(
        name="fashion-mnist",
        title="Fashion-MNIST",
        kind="idx",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        photo_style="fill",  # the garment fills the frame
        augment_by_default=False,
        noun="clothing",
        mirrored="",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando, torchvision
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # Keras
            "https://dataset.bj.bcebos.com/fashion_mnist/",  # Paddle
        ),
        files={
            "train_images": FileSpec("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                     "f4a8712d7a061bf5bd6d2ca38dc4d50a", 3, count=60_000),
            "train_labels": FileSpec("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                                     "9018921c3c673c538a1fc5bad174d6f9", 1, count=60_000),
            "test_images": FileSpec("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                                    "8181f5470baa50b63fa0f6fddb340f0a", 3, count=10_000),
            "test_labels": FileSpec("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                                    "15d484375f8d13e6eb1aabb0c3f46965", 1, count=10_000),
        },
        debian_dir=Path("/usr/share/datasets/fashion-mnist"),
        debian_package="dataset-fashion-mnist",
    ),
    IMAGE_FOLDER: DataSet(
        name=IMAGE_FOLDER,
        title="an image folder",
        kind="folder",
        classes=(),
        photo_style="folder",  # resized as the folder's images were
        augment_by_default=False,
        noun="images",
        mirrored="",
    ),
}
IDX = tuple(name for name, d in CATALOG.items() if d.kind == "idx")  # prepare --dataset
FOLDERS = tuple(name for name, d in CATALOG.items() if d.kind == "folder")


def listing(names, word: str = "or") -> str:
    """Names as a sentence says them: ``a``, ``a or b``, ``a, b or c``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"


def idx_titles() -> str:
    """The IDX data sets by title, for help texts and messages: 'MNIST or Fashion-MNIST'."""
    return listing(CATALOG[n].title for n in IDX)


def mirrorable() -> str:
    """What may be mirrored (augment.flip, model.tta flip), for messages: 'clothing (fashion-mnist) or images
    (image_folder)'."""
    return listing(f"{d.noun} ({d.name})" for d in CATALOG.values() if not d.mirrored)


def get(name: str) -> DataSet:
    """The data set called ``name`` (config validation keeps data.name in the catalogue)."""
    return CATALOG[name]
