#!/bin/bash
# Build .gpu/ for tools/device/train.sh: Keras wheels for the device's Python 3.12, FER2013 as tar.xz, and the
# teachers' probabilities on its training faces for the distilled ("kd") runs (TEACHERS: absolute paths or
# bundled names, space-separated; the default is the six models in tools/teachers/, docs/model.md part 11).
# Usage: bash tools/device/prepare.sh [FER2013_ZIP]   (default: ../shared/data/fer2013.zip beside the checkout)
set -euo pipefail
die() { echo "prepare.sh: $*" >&2; exit 1; }
# Checked before anything is written or downloaded; the zip's path is taken from where this was started.
[ $# -le 1 ] || die "usage: prepare.sh [FER2013_ZIP]"
ZIP=${1:-$(dirname "$0")/../../../shared/data/fer2013.zip}
[ -f "$ZIP" ] || die "$ZIP: no such file (give the FER2013 zip: prepare.sh PATH/fer2013.zip)"
ZIP=$(realpath -- "$ZIP")
MAX_VIEWS=64  # fervid.training.config.MAX_TEACHER_VIEWS
VIEWS=${TEACHER_VIEWS:-8}
[[ $VIEWS =~ ^(0|[1-9][0-9]*)$ ]] && [ "$VIEWS" -le "$MAX_VIEWS" ] ||
  die "TEACHER_VIEWS=$VIEWS: give a whole number of views from 0 (none) to $MAX_VIEWS"
cd "$(dirname "$0")/../.."
T=$(pwd -P)/tools/teachers
TEACHERS=${TEACHERS:-"$T/fervid-vgg-2026-11-27.onnx $T/fervid-vgg-once-wd05.onnx $T/fervid-vgg-deep-kd.onnx $T/fervid-vgg-large.onnx $T/fervid-vgg-deep-kd3.onnx $T/fervid-vgg-kd3.onnx"}
# An earlier run took the tracked teachers out of the work tree (below): this one needs them back.
git ls-files -d -z -- tools/teachers | xargs -0 -r git checkout --
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")" .gpu/whl
grep -qx "/.gpu/" "$exclude" 2>/dev/null || echo "/.gpu/" >> "$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d .gpu/whl keras==3.15.1 namex==0.1.0 optree==0.20.0
rm -f .gpu/order.txt
python3 -c "import gzip, sys, zipfile; gzip.open(sys.argv[2], 'wt').write('\n'.join(i.filename for i in zipfile.ZipFile(sys.argv[1]).infolist()) + '\n')" "$ZIP" .gpu/order.txt.gz.tmp ||
  { rm -f .gpu/order.txt.gz.tmp; die "$ZIP: not a zip that can be read"; }
mv .gpu/order.txt.gz.tmp .gpu/order.txt.gz  # written whole or not at all
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unzip -q "$ZIP" -d "$tmp"
tar cf - -C "$tmp" . | xz -T2 -6 > .gpu/fer.tar.xz
mkdir -p .gpu/teacher && echo $TEACHERS > .gpu/teacher/teachers.txt
python3 - "$ZIP" $TEACHERS <<'EOF'
import sys
from pathlib import Path
from fervid.data import load_arrays, read_dataset
from fervid.data.arrays import fingerprint
from fervid.training.distill import cached_teacher_probabilities
index = read_dataset(sys.argv[1])
cached_teacher_probabilities(Path(".gpu/teacher"), sys.argv[2:], load_arrays(index, "train").inputs(), fingerprint(index))
EOF
# Consistent distillation ("kdv" runs in train.sh, docs/model.md part 13): the teachers on TEACHER_VIEWS fixed augmented
# views of each face, drawn with train.sh's recipe (--brightness 0.2 --contrast 0.2 --erasing 0.5, the default geometry and seed).
if [ "$VIEWS" -gt 0 ]; then
  python3 - "$ZIP" "$VIEWS" $TEACHERS <<'EOF'
import sys
from pathlib import Path
from fervid.data import load_arrays, read_dataset
from fervid.data.arrays import fingerprint
from fervid.training.config import TrainConfig
from fervid.training.distill import cached_teacher_view_probabilities
index = read_dataset(sys.argv[1])
recipe = TrainConfig(data=sys.argv[1], brightness=0.2, contrast=0.2, erasing=0.5).view_recipe()
cached_teacher_view_probabilities(Path(".gpu/teacher"), sys.argv[3:], load_arrays(index, "train").inputs(), fingerprint(index), recipe, int(sys.argv[2]))
EOF
  echo "$VIEWS" > .gpu/teacher/views.txt
else  # none: an earlier run's views would still travel (3.2 MB for 8)
  rm -f .gpu/teacher/checkpoint/teacher-views.npz .gpu/teacher/views.txt
fi
# The teachers' ONNX files are needed here only (their probabilities travel in .gpu/teacher), but tracked files
# travel: take the ones in tools/teachers/ that git can give back unchanged out of the work tree; finish.sh (or
# this script's next run, or `git checkout -- FILE`) restores them. A teacher elsewhere (a bundled model) stays.
for t in $TEACHERS; do
  [ -f "$t" ] || continue
  case "$(realpath -- "$t")" in "$T"/*) ;; *) continue ;; esac
  if git ls-files --error-unmatch -- "$t" >/dev/null 2>&1 && git diff --quiet -- "$t"; then
    rm -- "$t" && echo "$t left the work tree for the device call (git checkout -- '$t' brings it back)"
  fi
done
# The device call takes the tracked and untracked-not-ignored files plus .gpu, 64 MiB at most: say now, not there.
travels=$(python3 -c "import os, subprocess
tree = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], capture_output=True, check=True).stdout
files = [f.decode() for f in tree.split(b'\\0') if f] + [os.path.join(d, n) for d, _, names in os.walk('.gpu') for n in names]
print(sum(os.path.getsize(f) for f in files if os.path.isfile(f)))")
limit=$(( 64 * 1024 * 1024 ))
echo "the device call will carry $(( travels / 1000000 )) MB of its $(( limit / 1000000 )) MB limit"
if [ "$travels" -gt "$limit" ]; then
  echo "over by $(( (travels - limit) / 1000 )) kB: see tools/device/README.md" >&2
  exit 1
fi
