#!/usr/bin/env bash
# Set up everything mnist-kit needs, idempotently:
#   - a virtual environment in .venv with mnist-kit installed (editable) and its dependencies
#     (with --test: the test tools too);
#   - Debian's dataset-fashion-mnist, the offline data source, where apt-get can be used.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test,onnx]"  # the tests cover --format onnx too
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
echo "== installing mnist-kit$extras into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
    echo "== installing Debian's dataset-fashion-mnist (the offline data source)"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "warning: could not install dataset-fashion-mnist; without network, use: mnist-kit prepare --from-dir FOLDER"
  else
    echo "note: apt-get is not usable here, so Debian's dataset-fashion-mnist is not installed;" \
         "without network, prepare data with: mnist-kit prepare --from-dir FOLDER"
  fi
fi
echo "== set-up done: run .venv/bin/mnist-kit (or activate with: source .venv/bin/activate)"
