#!/bin/bash
# On the GPU machine: up to three runs of the release recipe side by side (one small net leaves most of
# an H100 idle, and their XLA compilations overlap); each is packed into $OUT when it ends.
# RUNS lists them, ';'-separated, each "NAME ARCH WARP WEIGHT_DECAY [EPOCHS [kd|kdv]]"; "kd" distills from the
# teachers whose probabilities prepare.sh stored in .gpu/teacher (docs/model.md parts 9-11), "kdv" from their
# probabilities on fixed augmented views of each face (--teacher-views, part 13). The default: vgg-deep distilled
# from all six the old way (part 11's plan) and vgg-large, the net of the best single model so far, on the views
# (vgg and vgg-deep on the views ran on the CPU, 2026-12-05/06, both level with fervid-vgg).
# EXTRA adds fervid train options to every run (such as "--ema 0.999").
# Exits 1 when a run failed or was cut short (after packing what there is), 0 when all finished.
set -uo pipefail  # not -e: a run that fails leaves the others training and packed
T0=$(date +%s); BUDGET=${BUDGET:-570}
RUNS=${RUNS:-"vgg-deep-kd6 vgg-deep each 5e-4 250 kd;vgg-large-kdv6 vgg-large each 5e-4 200 kdv"}
DATA=${DATA:-/work/shared/data/fer2013.zip}
die() { echo "train.sh: $*" >&2; exit 1; }
: "${OUT:?set OUT to the folder whose files come back from the device}"

# Every run is checked before any starts: a bad one found later would leave the earlier ones training unseen.
IFS=';' read -ra specs <<< "$RUNS"
[ ${#specs[@]} -gt 0 ] || die "RUNS is empty"
names=()
for spec in "${specs[@]}"; do
  read -r name arch warp wd epochs kd extra <<< "$spec"
  [ -n "$wd" ] && [ -z "$extra" ] || die "RUNS: '$spec': give NAME ARCH WARP WEIGHT_DECAY [EPOCHS [kd|kdv]]"
  [ -z "$epochs" ] || [[ $epochs =~ ^[1-9][0-9]*$ ]] || die "RUNS: '$spec': EPOCHS must be a whole number, not '$epochs'"
  case "$kd" in
    "") need=() ;;
    kd) need=(.gpu/teacher/teachers.txt .gpu/teacher/checkpoint/teacher.npz) ;;
    kdv) need=(.gpu/teacher/teachers.txt .gpu/teacher/checkpoint/teacher-views.npz .gpu/teacher/views.txt) ;;
    *) die "RUNS: '$spec': the last field is kd or kdv (or left out), not '$kd'" ;;
  esac
  for f in ${need[@]+"${need[@]}"}; do
    [ -f "$f" ] || die "RUNS: $name ($kd) needs $f: build it with tools/device/prepare.sh (TEACHER_VIEWS above 0 for kdv)"
  done
  case " ${names[*]-} " in *" $name "*) die "RUNS: two runs named $name" ;; esac
  names+=("$name")
done

if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false
export FERVID_CACHE_DIR=/tmp/fervid-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1
if [ ! -e "$DATA" ]; then
  mkdir -p /tmp/d "$(dirname "$DATA")" && tar xJf .gpu/fer.tar.xz -C /tmp/d &&
    python3 tools/device/make_zip.py /tmp/d .gpu/order.txt.gz "$DATA" || exit 1
fi
echo "data ready after $(( $(date +%s) - T0 ))s"
# The teachers' caches hold a digest of the training faces as decoded where they were made: faces this OpenCV decodes
# differently would make every distilled run score the teachers, whose files stayed behind. Said in seconds, not at each run.
if [ -d .gpu/teacher/checkpoint ]; then
  python3 - "$DATA" <<'EOF' || exit 1
import sys
from pathlib import Path
import numpy as np
from fervid.data import load_arrays, read_dataset
from fervid.training.distill import faces_digest, same_faces
digest = faces_digest(load_arrays(read_dataset(sys.argv[1]), "train").inputs())
for cache in sorted(Path(".gpu/teacher/checkpoint").glob("teacher*.npz")):
    with np.load(cache) as cached:
        if not same_faces(dict(cached), digest):
            sys.exit(f"{cache}: made on training faces that decode differently here; score the teachers on the device's decoding")
print("teacher caches: made on the faces decoded here")
EOF
fi

# What comes back from the call: 64 MiB in 8 files at most (tools/device/README.md); kept a little under.
PIECE=$(( 15 * 1024 * 1024 )); ROOM=$(( 60 * 1024 * 1024 )); MAX_FILES=8
room() {  # RUN BYTES: whether an archive of BYTES for RUN fits in $OUT, beside what is there and the best weights
  local bytes files other best  # of the runs not packed yet (runs cut short by the budget end pack together)
  bytes=$(( $(du -sb "$OUT" | cut -f1) + $2 )); files=$(( $(ls "$OUT" | wc -l) + ($2 + PIECE - 1) / PIECE ))
  for other in "${names[@]}"; do
    other=fervid-$other
    if [ "$other" = "$1" ] || [ -e "$OUT/$other.tgz.aa" ] || [ ! -d "/tmp/$other" ]; then continue; fi
    best=$(stat -c %s "/tmp/$other/checkpoint/best.weights.h5" 2>/dev/null || echo 0)
    bytes=$(( bytes + best )); files=$(( files + 1 + best / PIECE ))
  done
  [ "$bytes" -le "$ROOM" ] && [ "$files" -le "$MAX_FILES" ]
}
# RUN RC: /tmp/RUN into $OUT/RUN.tgz.aa, .ab...: config, state, best weights, report. A run cut short adds its last
# weights with the optimizer (37 MB for vgg-deep, 59 MB for vgg-large), for `--resume` to finish it elsewhere, if they fit.
pack() {
  local name=$1 rc=$2 f files=() tgz=/tmp/$1.tgz
  for f in config.json checkpoint/state.json checkpoint/best.weights.h5 report.md model.json metrics.json history.csv; do
    [ -e "/tmp/$name/$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || { echo "$name: nothing to pack"; return; }
  if [ "$rc" -ne 0 ] && [ -f "/tmp/$name/checkpoint/last.weights.h5" ]; then
    tar czf "$tgz" -C "/tmp/$name" "${files[@]}" checkpoint/last.weights.h5
    if ! room "$name" "$(stat -c %s "$tgz")"; then
      echo "$name: its last checkpoint would not fit in what the call returns: packed without it (no --resume)"
      tar czf "$tgz" -C "/tmp/$name" "${files[@]}"
    fi
  else
    tar czf "$tgz" -C "/tmp/$name" "${files[@]}"
  fi
  split -b "$PIECE" "$tgz" "$OUT/$name.tgz." && rm -f "$tgz"
}
train() {  # RUN ARGS...: train into /tmp/RUN until the budget ends, pack it into $OUT; returns fervid train's status
  local name=$1; shift
  local left=$(( T0 + BUDGET - $(date +%s) )) rc
  if [ "$left" -lt 1 ]; then  # `timeout 0` would mean no limit at all
    echo "$name: not started, nothing left of BUDGET=$BUDGET s"; return 1
  fi
  timeout -k 15 "$left" python3 -m fervid train "$DATA" --out "/tmp/$name" "$@" > "$OUT/$name.log" 2>&1; rc=$?
  echo "$name rc $rc after $(( $(date +%s) - T0 ))s"; grep "^epoch" "$OUT/$name.log" | tail -3; tail -1 "$OUT/$name.log"
  # One run packs at a time (a lock outside $OUT, whose files all come back), so the second sees the first's pieces.
  # The teachers' caches stay here: finish.sh takes them from .gpu/teacher.
  (flock 9; pack "$name" "$rc") 9>/tmp/fervid-pack.lock
  return "$rc"
}
pids=()
for spec in "${specs[@]}"; do
  read -r name arch warp wd epochs kd <<< "$spec"
  [ -z "$epochs" ] && { epochs=${VGG_EPOCHS:-250}; [ "$arch" = compact ] && epochs=${COMPACT_EPOCHS:-200}; }
  distill=()
  if [ -n "$kd" ]; then  # the teachers' probabilities travel in .gpu/teacher: no teacher model, no ONNX Runtime here
    mkdir -p "/tmp/fervid-$name/checkpoint"
    for t in $(cat .gpu/teacher/teachers.txt); do distill+=(--teacher "$t"); done
    distill+=(--distill "${DISTILL:-0.5}")
  fi
  if [ "$kd" = kd ]; then
    cp .gpu/teacher/checkpoint/teacher.npz "/tmp/fervid-$name/checkpoint/" || { echo "$name: not started"; pids+=(0); continue; }
  elif [ "$kd" = kdv ]; then  # consistent distillation: the teachers' probabilities on fixed views of each face (only that file)
    cp .gpu/teacher/checkpoint/teacher-views.npz "/tmp/fervid-$name/checkpoint/" || { echo "$name: not started"; pids+=(0); continue; }
    distill+=(--teacher-views "$(cat .gpu/teacher/views.txt)")
  fi
  train "fervid-$name" --name "fervid-$arch" --arch "$arch" --epochs "$epochs" --batch-size 128 --precision mixed_bfloat16 \
    --brightness 0.2 --contrast 0.2 --erasing 0.5 --warmup-epochs 5 --weight-decay "$wd" --warp "$warp" \
    ${distill[@]+"${distill[@]}"} ${EXTRA:-} &
  pids+=($!)
  [ "$spec" = "${specs[0]}" ] && sleep 20  # the first run decodes the dataset into the shared cache meanwhile
done
while sleep 30; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; \
  for f in "$OUT"/*.log; do echo "$(basename "$f") $(grep -c '^epoch' "$f")"; done; jobs -r | grep -q train || break; done
failed=0
for pid in "${pids[@]}"; do
  if [ "$pid" = 0 ] || ! wait "$pid"; then failed=1; fi
done
ls -la "$OUT"
[ "$failed" -eq 0 ] || die "a run failed or was cut short (its rc above, its log in \$OUT)"
