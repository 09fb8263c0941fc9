#!/bin/bash
# Here, after tools/device/train.sh: unpack each returned run into runs/, complete it on TensorFlow
# (ONNX, evaluation, plots, report) and export its int8 model (runs/NAME/NAME.onnx + .json). A run cut short
# on the device is unpacked with the teachers' caches, and the command that resumes it is printed.
# Usage: bash tools/device/finish.sh FOLDER_WITH_RUN_TGZ_PIECES   (ZIP: the FER2013 zip, default ../shared/data/fer2013.zip)
# Exits 1 when a run could not be unpacked or finished (the others are still finished).
set -euo pipefail
shopt -s nullglob
die() { echo "finish.sh: $*" >&2; exit 1; }
FILES=$(realpath -m -- "${1:?usage: finish.sh FOLDER_WITH_RUN_TGZ_PIECES}")
[ -z "${ZIP:-}" ] || ZIP=$(realpath -m -- "$ZIP")  # given from wherever this is started
cd "$(dirname "$0")/../.."  # runs/, .gpu/ and the default ZIP are the checkout's, wherever this is started
pieces=("$FILES"/*.tgz.*)
[ ${#pieces[@]} -gt 0 ] || die "no run archives in $FILES (RUN.tgz.aa, .ab... from train.sh's \$OUT)"
ZIP=${ZIP:-$(realpath -m ../shared/data/fer2013.zip)}
[ -f "$ZIP" ] || die "$ZIP: no such file (set ZIP to the FER2013 zip)"
# prepare.sh took the tracked teachers out of the work tree for the device call: the deleted ones come back,
# local edits stay.
git ls-files -d -z -- tools/teachers | xargs -0 -r git checkout --

progress() {  # RUN: "finished" (all epochs, or stopped early by --patience), "none" (no epoch finished),
  python3 - "$1" <<'EOF'  # "stopped DONE EPOCHS", or "damaged WHY"
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
if not (run / "config.json").is_file() or not (run / "checkpoint" / "state.json").is_file():
    print("none")
    sys.exit()
try:
    config, state = json.loads((run / "config.json").read_text()), json.loads((run / "checkpoint" / "state.json").read_text())
    done, epochs, best, patience = state["epochs_done"], config["epochs"], state["best_epoch"], config.get("patience", 0)
except (ValueError, KeyError, TypeError) as error:
    print("damaged", repr(error))
    sys.exit()
early = patience and done - best >= patience  # as fervid.training.fit decides it
print("finished" if done >= epochs or early else f"stopped {done} {epochs}")
EOF
}

mkdir -p runs
tmp=""; trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
failed=0
for name in $(for piece in "${pieces[@]}"; do piece=${piece##*/}; echo "${piece%.tgz.*}"; done | sort -u); do
  if [ -e "runs/$name" ]; then
    echo "$name: runs/$name is already there: finishing what it holds (remove it to unpack the archive again)"
  elif [ ! -e "$FILES/$name.tgz.aa" ]; then
    echo "$name: its first piece ($name.tgz.aa) did not come back; skipped"; failed=1; continue
  else  # unpacked beside runs/NAME, which it becomes only whole
    tmp=$(mktemp -d "runs/.$name.XXXXXX")
    if ! cat "$FILES/$name".tgz.* | tar xzf - -C "$tmp"; then  # a piece that did not come back: the others still finish
      echo "$name: its archive is damaged or incomplete; skipped"; rm -rf "$tmp"; tmp=""; failed=1; continue
    fi
    mv "$tmp" "runs/$name"; tmp=""
  fi
  # Not carried back: without them a resume would score the teachers again.
  mkdir -p "runs/$name/checkpoint"
  for cache in .gpu/teacher/checkpoint/teacher*.npz; do
    [ -e "runs/$name/checkpoint/${cache##*/}" ] || cp "$cache" "runs/$name/checkpoint/"
  done
  read -r how epoch epochs <<< "$(progress "runs/$name")"
  case "$how" in
    finished) ;;
    none) echo "$name: no epoch finished on the device (no checkpoint/state.json): nothing to finish"; failed=1; continue ;;
    stopped)
      echo -n "$name: cut short after epoch $epoch of $epochs"
      if [ -f "runs/$name/checkpoint/last.weights.h5" ]; then
        printf '; to finish it (hours on this CPU): fervid train %q --resume --out %q\n' "$ZIP" "$PWD/runs/$name"
      else  # train.sh had no room for it in what the call returns
        printf ', without its last checkpoint: it cannot be resumed; its best epoch can start a new run:\n'
        printf '  fervid train %q --init-from %q ...\n' "$ZIP" "$PWD/runs/$name"
      fi
      continue ;;
    *) echo "$name: its config.json or checkpoint/state.json cannot be read ($epoch $epochs); skipped"; failed=1; continue ;;
  esac
  if ! { fervid train "$ZIP" --resume --out "runs/$name" &&
         fervid export "runs/$name/model.keras" --int8 "$ZIP" --out "runs/$name/$name.onnx" &&
         fervid evaluate "runs/$name/$name.onnx" "$ZIP" --against fervid-vgg; }; then  # replaces it only at p < 0.05 (docs/model.md)
    echo "$name: not finished (see above)"; failed=1
  fi
done
[ "$failed" -eq 0 ] || die "some runs were not finished (said above)"
