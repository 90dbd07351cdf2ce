#!/usr/bin/env python
"""Write the tutorial notebooks, docs/tutorial.ipynb (English) and docs/tutorial_cn.ipynb (Chinese), from one list
of cells: the code is the same in both, only the text differs. They are committed without outputs; a test
checks they are what this script writes, and runs the English one in a real Jupyter kernel.

    .venv/bin/python scripts/make_tutorials.py           # write them
    .venv/bin/python scripts/make_tutorials.py --check   # exit 1 if they are not current
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"

# (English, Chinese) text, or code: the course's experiments, top to bottom
CELLS: list[tuple[str, str] | str] = [
    ("""# mnist-kit: the MNIST course with the Python API

Paddle's MNIST course trains a linear model, an MLP and a CNN, compares losses and optimizers, and looks at the
results in VisualDL. This notebook does the same with mnist-kit's Python API: each step is one function, which
checks what it is given, keeps every run in its own folder (`checkpoints/`) and never overwrites one.

Every run here trains for 2 epochs: a few minutes in all on 2 CPU cores. Install with
`pip install "mnist-kit[cpu,notebook]"` (the `notebook` extra adds pictures and progress bars).""",
     """# mnist-kit：用 Python API 走一遍 MNIST 课程

飞桨的 MNIST 课程依次训练线性模型、多层感知机（MLP）和卷积神经网络（CNN），比较不同的损失函数和优化器，再用 VisualDL
查看结果。本笔记本用 mnist-kit 的 Python API 完成同样的实验：每一步都是一个函数调用，函数会先检查参数，每次训练都保存在
`checkpoints/` 下独立的文件夹里，已有的训练结果绝不会被覆盖。

这里每次训练只跑 2 个 epoch，在 2 核 CPU 上全部跑完也只要几分钟。安装：`pip install "mnist-kit[cpu,notebook]"`
（`notebook` 附加依赖提供绘图和进度条）。"""),
    ("""## 1. The data

`prepare` downloads MNIST (or takes it from Debian's package, or a folder), checks the files against their
published checksums and caches the arrays. A second call finds the cache.""",
     """## 1. 数据

`prepare` 会下载 MNIST（也可以使用 Debian 软件包里的文件，或本地文件夹中的文件），按官方公布的校验和检查文件，然后把数组
缓存起来。再次调用时直接读取缓存。"""),
    """import mnist_kit as mk

data = mk.prepare()
print(data.summary)""",
    ("A few training images with their labels, and how many images each class has:",
     "看几张训练图片及其标签，再看看每个类别各有多少张图片："),
    "data.plot()",
    ("""## 2. Linear model, MLP and CNN

Each shipped config is a recipe (`mnist-kit configs` lists them); `train` takes its name and `-o`-style overrides,
shows a progress bar per epoch, and returns the `Run` when it has ended.""",
     """## 2. 线性模型、MLP 与 CNN

每个内置配置都是一套训练方案（`mnist-kit configs` 可以列出全部）。`train` 接受配置名和 `-o` 形式的覆盖项，每个 epoch
显示一个进度条，训练结束后返回一个 `Run` 对象。"""),
    """quick = ["train.epochs=2"]
models = {name: mk.train(name, quick) for name in ("linear", "mlp", "cnn")}
for name, run in models.items():
    print(f"{name:6} best validation accuracy {run.best_val_acc:.2%}")
mk.plot_runs(list(models.values()), "linear model, MLP and CNN")""",
    ("""## 3. Cross entropy against mean squared error

A config is a typed, frozen object: `load_config(base, [...])` makes a new one from it (keys that do not apply to
the new loss are dropped), and `train` takes it as it is.""",
     """## 3. 交叉熵与均方误差

配置是带类型、不可修改的对象：`load_config(base, [...])` 会在它的基础上生成一个新配置（新损失函数用不到的键会被去掉），
`train` 可以直接接受这个对象。"""),
    """base = mk.load_config("mlp", quick)
losses = {loss: mk.train(mk.load_config(base, [f"loss.name={loss}"])) for loss in ("cross_entropy", "mse")}
for loss, run in losses.items():
    print(f"{loss:13} best validation accuracy {run.best_val_acc:.2%}")
mk.plot_runs(list(losses.values()), "cross entropy and MSE")""",
    ("## 4. Three optimizers side by side", "## 4. 三种优化器并排比较"),
    """settings = {
    "sgd": ["optimizer.name=sgd", "optimizer.lr=0.1"],
    "momentum": ["optimizer.name=momentum", "optimizer.lr=0.01"],
    "adam": ["optimizer.name=adam", "optimizer.lr=0.001"],
}
optimizers = {name: mk.train(mk.load_config(base, changes)) for name, changes in settings.items()}
for name, run in optimizers.items():
    print(f"{name:8} best validation accuracy {run.best_val_acc:.2%}")
mk.plot_runs(list(optimizers.values()), "SGD, momentum and Adam")""",
    ("""## 5. Resume from an earlier epoch

Every epoch ends with a checkpoint. `resume` continues a run from one, exactly: epoch 1 trained again from the end
of epoch 0 gives the same numbers.""",
     """## 5. 从较早的 epoch 恢复训练

每个 epoch 结束时都会保存检查点。`resume` 可以从任意检查点继续训练，结果完全一致：从第 0 个 epoch 结束处重新训练第 1
个 epoch，得到的数字与原来一模一样。"""),
    """cnn = models["cnn"]
before = [row["val_acc"] for row in cnn.metrics]
again = mk.resume(cnn, epoch=0)
after = [row["val_acc"] for row in again.metrics]
print("validation accuracy per epoch:", [f"{a:.4f}" for a in after], "- the same as before:", before == after)
cnn.plot()""",
    ("""## 6. Measure it on the test set

The confusion matrix (rows: the true class) beside the test images the model got wrong with the most confidence.""",
     """## 6. 在测试集上评估

左边是混淆矩阵（行是真实类别），右边是模型最有把握却判断错误的测试图片。"""),
    """result = mk.evaluate(cnn)
print(f"test accuracy {result.accuracy:.2%}, loss {result.loss:.4f}")
result.plot()""",
    ("""## 7. The board

VisualDL on every run of this notebook, inside the notebook: scalars, images, histograms, PR curves, the
hyper-parameters of the runs side by side.""",
     """## 7. VisualDL 面板

在笔记本里直接打开 VisualDL，查看本笔记本的所有训练：标量曲线、图片、直方图、PR 曲线，
还可以并排比较各次训练的超参数。"""),
    """board = mk.board()
board""",
    ("It runs until it is stopped, or until this notebook's kernel ends:",
     "面板会一直运行，直到手动停止，或者笔记本的内核退出："),
    "board.stop()",
    ("""## 8. Export, and read a photo of your own

`export` freezes the best checkpoint into an inference model and checks it against the trained network. `predict`
reads any image as a person's photo is read: the digit is found, framed and centred as MNIST's were. The photo
shipped with mnist-kit stands in for yours: `mk.predict(model, "my-digit.jpg")`.""",
     """## 8. 导出模型，识别你自己的照片

`export` 把最好的检查点导出为推理模型，并与训练好的网络逐一核对。`predict` 按照读取照片的方式处理任意图片：先找到数字，
再像 MNIST 那样裁剪并居中。这里用 mnist-kit 自带的一张照片代替你的照片，换成你自己的：
`mk.predict(model, "my-digit.jpg")`。"""),
    """from PIL import Image

model = mk.export(cnn)
photo = mk.sample_photo()
guess = mk.predict(model, photo)[0]
print(f"{photo.name}: {guess.label} (probability {guess.probability:.2f});",
      "then", ", ".join(f"{g.label} {g.probability:.2f}" for g in guess.top[1:]))
Image.open(photo)""",
]


PUNCTUATION = "，。：；！？（）、「」《》"  # full-width: never a space beside them


def unwrap(text: str) -> str:
    """Chinese paragraphs on one line each: Markdown turns a line break inside a paragraph into a space, which
    does not belong between Chinese characters (the lines are wrapped in this file only to be read here)."""
    def join(paragraph: str) -> str:
        lines = paragraph.split("\n")
        out = lines[0]
        for line in lines[1:]:  # a space only beside Latin text, as Chinese typesetting spaces it
            latin = (out[-1].isascii() or line[0].isascii()) and out[-1] not in PUNCTUATION \
                and line[0] not in PUNCTUATION
            out += (" " if latin else "") + line
        return out

    return "\n\n".join(p if p.startswith("#") else join(p) for p in text.split("\n\n"))


def notebook(language: int) -> dict:
    cells: list[dict] = []
    for cell in CELLS:
        number = f"cell-{len(cells) + 1}"  # stable ids: the same cell has the same id in both languages
        if isinstance(cell, tuple):
            cells.append({"cell_type": "markdown", "id": number, "metadata": {},
                          "source": (unwrap(cell[1]) if language else cell[0]).splitlines(True)})
        else:
            cells.append({"cell_type": "code", "execution_count": None, "id": number, "metadata": {}, "outputs": [],
                          "source": cell.splitlines(True)})
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def pages() -> dict[Path, str]:
    return {DOCS / name: json.dumps(notebook(i), indent=1, ensure_ascii=False) + "\n"
            for i, name in enumerate(("tutorial.ipynb", "tutorial_cn.ipynb"))}


def main(check: bool = False) -> int:
    stale = [path for path, text in pages().items() if not path.is_file() or path.read_text() != text]
    if check:
        if stale:
            print("not current (run scripts/make_tutorials.py):", ", ".join(p.name for p in stale))
        return 1 if stale else 0
    for path, text in pages().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
