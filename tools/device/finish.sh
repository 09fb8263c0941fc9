#!/bin/bash
# Here, after tools/device/train.sh: unpack each returned run into runs/, complete it on TensorFlow
# (ONNX, evaluation, plots, report) and export its int8 model (runs/NAME/NAME.onnx + .json).
set -euo pipefail
FILES=$(realpath "${1:?usage: finish.sh FOLDER_WITH_RUN_TGZ_PARTS}")
[ -z "${ZIP:-}" ] || ZIP=$(realpath "$ZIP")  # given from wherever this is started
cd "$(dirname "$0")/../.."  # runs/, .gpu/ and the default ZIP are the checkout's, wherever this is started
git checkout -- tools/teachers  # prepare.sh took the tracked teachers out of the work tree for the device call
ZIP=${ZIP:-../shared/data/fer2013.zip}
for first in "$FILES"/*.tgz.aa; do
  name=$(basename "$first" .tgz.aa)
  mkdir -p runs/$name
  if ! cat "$FILES/$name".tgz.* | tar xzf - -C runs/$name; then  # a piece that did not come back: the others still finish
    echo "$name: its archive is damaged or incomplete; skipped"; continue
  fi
  if ! python3 -c "import json, sys; s = json.load(open(sys.argv[1] + '/checkpoint/state.json')); c = json.load(open(sys.argv[1] + '/config.json')); sys.exit(s['epochs_done'] < c['epochs'])" runs/$name; then
    echo "$name stopped before its last epoch: not finishing it (its schedule did not end)"; continue
  fi
  cp -n .gpu/teacher/checkpoint/teacher*.npz runs/$name/checkpoint/ 2>/dev/null || true  # not carried back: the resume would score the teachers again
  fervid train --resume --out runs/$name
  fervid export runs/$name/model.keras --int8 "$ZIP" --out runs/$name/$name.onnx
  fervid evaluate runs/$name/$name.onnx "$ZIP" --against fervid-vgg  # replaces it only at p < 0.05 (docs/model.md)
done
