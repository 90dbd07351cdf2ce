#!/usr/bin/env bash
# The whole job on the default config, from a fresh clone: set up, then prepare -> train -> eval ->
# export -> predict.
# Where the MNIST mirrors cannot be reached it says so and uses Fashion-MNIST from Debian's package
# (same IDX format) instead. Extra arguments go to `mnist-kit train`, e.g. -o train.epochs=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mk=.venv/bin/mnist-kit

dataset=mnist
echo "== mnist-kit prepare --dataset mnist"
if ! $mk prepare --dataset mnist; then
  echo
  echo "== MNIST could not be downloaded (see above). FALLING BACK to Fashion-MNIST from a local IDX source"
  echo "   (Debian's dataset-fashion-mnist): same format, 10 classes of clothing instead of digits."
  dataset=fashion-mnist
  $mk prepare --dataset fashion-mnist
fi

run=quickstart-$(date +%Y%m%d-%H%M%S)
echo "== mnist-kit train --config cnn -o data.name=$dataset --name $run $*"
$mk train --config cnn -o data.name=$dataset --name "$run" "$@"

echo "== mnist-kit eval --run checkpoints/$run"
$mk eval --run "checkpoints/$run"

echo "== mnist-kit export --run checkpoints/$run"
$mk export --run "checkpoints/$run"

samples=checkpoints/$run/sample-images
.venv/bin/python scripts/sample_images.py "$samples" --dataset "$dataset"
echo "== mnist-kit predict --model checkpoints/$run/export/best $samples"
$mk predict --model "checkpoints/$run/export/best" "$samples"

echo "== done: the run is in checkpoints/$run; see it in VisualDL with: .venv/bin/mnist-kit board"
echo "   draw for the model in your browser (or call its HTTP API) with: .venv/bin/mnist-kit serve --model checkpoints/$run/export/best"
