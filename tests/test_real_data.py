"""Real data: the default CNN on the full Fashion-MNIST from Debian's package, through the CLI."""

import json

import pytest

from conftest import REPO, run_subprocess
from test_data import needs_debian


@pytest.mark.slow
@needs_debian
def test_default_cnn_one_epoch_on_fashion_mnist_reaches_85_percent(tmp_path):
    proc = run_subprocess("prepare", "--dataset", "fashion-mnist")
    assert proc.returncode == 0, proc.stderr
    assert "60000 training and 10000 test images" in proc.stdout
    proc = run_subprocess("train", "--config", REPO / "configs" / "cnn.yaml", "-o", "data.name=fashion-mnist",
                          "-o", "train.epochs=1", "--name", "real", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    proc = run_subprocess("eval", "--run", "checkpoints/real", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["samples"] == 10000 and result["split"] == "test"
    print(f"test accuracy after one epoch: {result['accuracy']:.4f}")
    assert result["accuracy"] >= 0.85
