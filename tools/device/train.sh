#!/bin/bash
# On the GPU machine: up to three runs of the release recipe side by side (one small net leaves most of
# an H100 idle, and their XLA compilations overlap); each is packed into $OUT when it ends.
# RUNS lists them, ';'-separated, each "NAME ARCH WARP WEIGHT_DECAY [EPOCHS [kd|kdv]]"; "kd" distills from the
# teachers whose probabilities prepare.sh stored in .gpu/teacher (docs/model.md parts 9-11), "kdv" from their
# probabilities on fixed augmented views of each face (--teacher-views, part 13). The default: vgg-deep distilled
# from all six the old way (part 11's plan) and vgg-large, the net of the best single model so far, on the views
# (vgg and vgg-deep on the views ran on the CPU, 2026-12-05/06, both level with fervid-vgg).
# EXTRA adds fervid train options to every run (such as "--ema 0.999").
set -u
T0=$(date +%s); BUDGET=${BUDGET:-570}
RUNS=${RUNS:-"vgg-deep-kd6 vgg-deep each 5e-4 250 kd;vgg-large-kdv6 vgg-large each 5e-4 200 kdv"}
DATA=${DATA:-/work/shared/data/fer2013.zip}
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false
export FERVID_CACHE_DIR=/tmp/fervid-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1
if [ ! -e $DATA ]; then
  mkdir -p /tmp/d "$(dirname $DATA)" && tar xJf .gpu/fer.tar.xz -C /tmp/d &&
    python3 tools/device/make_zip.py /tmp/d .gpu/order.txt.gz $DATA || exit 1
fi
echo "data ready after $(( $(date +%s) - T0 ))s"
# The teachers' caches hold a digest of the training faces as decoded where they were made: faces this OpenCV decodes
# differently would make every distilled run score the teachers, whose files stayed behind. Said in seconds, not at each run.
if [ -d .gpu/teacher/checkpoint ]; then
  python3 - $DATA <<'EOF' || exit 1
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

train() {  # RUN ARGS...: train into /tmp/RUN until the budget ends, pack it into $OUT
  local name=$1; shift
  local left=$(( T0 + BUDGET - $(date +%s) )) rc last=""
  timeout $left python3 -m fervid train $DATA --out /tmp/$name "$@" > $OUT/$name.log 2>&1; rc=$?
  # Cut short: keep what `--resume` needs to finish elsewhere (the last weights with the optimizer, 37 MB for
  # vgg-deep), while the call's return (64 MiB, 8 files) has room: a second cut-short run returns its best weights only.
  # The teachers' caches stay here: finish.sh takes them from .gpu/teacher.
  # Runs cut short by the budget end together: one at a time (a lock outside $OUT, whose files all come back) decides
  # and packs, so the second sees the first's pieces.
  echo "$name rc $rc after $(( $(date +%s) - T0 ))s"; grep "^epoch" $OUT/$name.log | tail -3; tail -1 $OUT/$name.log
  (flock 9
   [ $rc -eq 0 ] || [ "$(du -sm $OUT | cut -f1)" -ge 20 ] || last=checkpoint/last.weights.h5
   cd /tmp/$name && tar czf - config.json checkpoint/state.json checkpoint/best.weights.h5 $last \
     $(ls report.md model.json metrics.json history.csv 2>/dev/null) | split -b 15M - $OUT/$name.tgz.) 9>/tmp/fervid-pack.lock
}
IFS=';' read -ra specs <<< "$RUNS"
for spec in "${specs[@]}"; do
  read -r name arch warp wd epochs kd <<< "$spec"
  [ -z "$epochs" ] && { epochs=${VGG_EPOCHS:-250}; [ "$arch" = compact ] && epochs=${COMPACT_EPOCHS:-200}; }
  distill=()
  if [ "$kd" = kd ] || [ "$kd" = kdv ]; then  # the teachers' probabilities travel in .gpu/teacher: no teacher model, no ONNX Runtime here
    mkdir -p /tmp/fervid-$name/checkpoint
    [ "$kd" = kdv ] || cp .gpu/teacher/checkpoint/teacher.npz /tmp/fervid-$name/checkpoint/ || exit 1  # kdv reads only its views' file
    for t in $(cat .gpu/teacher/teachers.txt); do distill+=(--teacher "$t"); done
    distill+=(--distill "${DISTILL:-0.5}")
  fi
  if [ "$kd" = kdv ]; then  # consistent distillation: the teachers' probabilities on fixed views of each face
    cp .gpu/teacher/checkpoint/teacher-views.npz /tmp/fervid-$name/checkpoint/ || exit 1
    distill+=(--teacher-views "$(cat .gpu/teacher/views.txt)")
  fi
  train fervid-$name --name fervid-$arch --arch $arch --epochs $epochs --batch-size 128 --precision mixed_bfloat16 \
    --brightness 0.2 --contrast 0.2 --erasing 0.5 --warmup-epochs 5 --weight-decay $wd --warp $warp ${distill[@]+"${distill[@]}"} \
    ${EXTRA:-} &
  [ "$spec" = "${specs[0]}" ] && sleep 20  # the first run decodes the dataset into the shared cache meanwhile
done
while sleep 30; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; \
  for f in $OUT/*.log; do echo "$(basename $f) $(grep -c '^epoch' $f)"; done; jobs -r | grep -q train || break; done
wait
ls -la $OUT
