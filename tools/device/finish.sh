#!/bin/bash
# Here, after tools/device/train.sh: unpack each returned run into runs/, complete it on TensorFlow
# (ONNX, evaluation, plots, report) and export its int8 model (runs/NAME/NAME.onnx + .json).
set -euo pipefail
FILES=${1:?usage: finish.sh FOLDER_WITH_RUN_TGZ_PARTS}
git -C "$(dirname "$0")/../.." checkout -- tools/teachers  # prepare.sh took the tracked teachers out of the work tree for the device call
ZIP=${ZIP:-../shared/data/fer2013.zip}
for first in "$FILES"/*.tgz.aa; do
  name=$(basename "$first" .tgz.aa)
  mkdir -p runs/$name
  cat "$FILES/$name".tgz.* | tar xzf - -C runs/$name
  if ! python3 -c "import json, sys; s = json.load(open(sys.argv[1] + '/checkpoint/state.json')); c = json.load(open(sys.argv[1] + '/config.json')); sys.exit(s['epochs_done'] < c['epochs'])" runs/$name; then
    echo "$name stopped before its last epoch: not finishing it (its schedule did not end)"; continue
  fi
  fervid train --resume --out runs/$name
  fervid export runs/$name/model.keras --int8 "$ZIP" --out runs/$name/$name.onnx
done
