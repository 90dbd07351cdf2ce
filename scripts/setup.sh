#!/usr/bin/env bash
# Set up everything mnist-kit needs, idempotently:
#   - a virtual environment in .venv with mnist-kit installed (editable), the CPU build of PaddlePaddle and
#     the other dependencies, at the versions tested together (constraints.txt; with --test: the test tools too);
#   - Debian's dataset-fashion-mnist, the offline data source, where apt-get can be used;
#   - with --test, Debian's chromium (the browser tests) and postgresql (tune on a shared database) too, where
#     apt-get can be used.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[cpu]"  # the CPU build of PaddlePaddle (a GPU build: README "Install")
[ "${1:-}" = "--test" ] && extras="[cpu,test]"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
echo "== installing mnist-kit$extras into .venv (the tested versions: constraints.txt)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".$extras"

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
apt_usable() { command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; }
apt_updated=""
apt_install() {  # Debian packages, where apt-get can be used
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq && apt_updated=1; }
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if apt_usable; then
    echo "== installing Debian's dataset-fashion-mnist (the offline data source)"
    apt_install dataset-fashion-mnist \
      || echo "warning: could not install dataset-fashion-mnist; without network, use: mnist-kit prepare --from-dir FOLDER"
  else
    echo "note: apt-get is not usable here, so Debian's dataset-fashion-mnist is not installed;" \
         "without network, prepare data with: mnist-kit prepare --from-dir FOLDER"
  fi
fi

# The tests that look at the VisualDL board in a real browser drive Debian's Chromium (Playwright's
# client, from the test extra, attaches to it; it downloads no browser of its own).
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null; then
  if apt_usable; then
    echo "== installing Debian's chromium (for the browser tests)"
    apt_install chromium fonts-liberation || echo "warning: could not install chromium; the browser tests will be skipped"
  else
    echo "note: apt-get is not usable here, so chromium is not installed; the browser tests will be skipped"
  fi
fi
# The tests of tune across machines start a throwaway PostgreSQL server (Debian's postgresql) on 127.0.0.1.
if [ "${1:-}" = "--test" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if apt_usable; then
    echo "== installing Debian's postgresql (for the tests of tune on a shared database)"
    apt_install postgresql || echo "warning: could not install postgresql; the PostgreSQL tests will be skipped"
  else
    echo "note: apt-get is not usable here, so postgresql is not installed; the PostgreSQL tests will be skipped"
  fi
fi
echo "== set-up done: run .venv/bin/mnist-kit (or activate with: source .venv/bin/activate)"
