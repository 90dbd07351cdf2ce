#!/usr/bin/env bash
# The reference recipes (configs/course_cnn.yaml, configs/visualdl_mlp.yaml) trained on Fashion-MNIST and on
# digits rendered from fonts (scripts/font_digits.py, 20,000 train / 5,000 test, test fonts unseen), each
# evaluated on its test split: the numbers in the README's "Reference recipes". About 10 minutes on 2 cores.
#   bash scripts/reference_recipes.sh [OUT]     (OUT: scratch folder, default /tmp/mnist-kit-recipes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/mnist-kit-recipes}
mk=".venv/bin/mnist-kit"
mkdir -p "$out"
if [ ! -f "$out/fonts-data/mnist/prepared.json" ]; then
  .venv/bin/python scripts/font_digits.py "$out/fonts-idx" --train 20000 --test 5000 --seed 0
  MNIST_KIT_DATA="$out/fonts-data" $mk prepare --dataset mnist --from-dir "$out/fonts-idx" --no-verify >/dev/null
fi
$mk prepare --dataset fashion-mnist >/dev/null
printf "%-20s %-14s %10s %10s %8s\n" recipe data "best val" "test acc" "time"
for recipe in course_cnn visualdl_mlp; do
  for data in fashion-mnist fonts; do
    if [ "$data" = fonts ]; then env=(MNIST_KIT_DATA="$out/fonts-data"); opts=(-o data.name=mnist -o data.val_size=5000)
    else env=(); opts=(-o data.name=fashion-mnist); fi
    run="$out/runs/$recipe-$data"
    rm -rf "$run"
    start=$(date +%s)
    env "${env[@]}" $mk train -c "$recipe" "${opts[@]}" -o output.root="$out/runs" -o output.visualdl=false \
      --name "$recipe-$data" >"$out/$recipe-$data.log" 2>&1
    secs=$(( $(date +%s) - start ))
    env "${env[@]}" $mk eval --run "$run" --json >"$out/$recipe-$data.eval.json" 2>/dev/null
    .venv/bin/python - "$run" "$out/$recipe-$data.eval.json" "$recipe" "$data" "$secs" <<'PY'
import json, sys
run, ev, recipe, data, secs = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
acc = json.load(open(ev))["accuracy"]
print(f"{recipe:<20} {data:<14} {100 * max(r['val_acc'] for r in rows):9.2f}% {100 * acc:9.2f}% {secs:>7}s")
PY
  done
done
