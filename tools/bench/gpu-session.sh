#!/usr/bin/env bash
# The GPU check: one run of at most ~8 minutes on a GPU machine prints every extraction and training
# figure and runs the GPU tests.
#
# GPU machines here have torch, transformers, numpy, typer and pytest but no network and none of
# zarr, numcodecs, webdataset, dask, soundfile, fsspec and their dependencies. So, in two steps:
#
#   tools/bench/gpu-session.sh prepare        # where pip has a registry: Python 3.12 wheels into .whl/
#   tools/bench/gpu-session.sh run [ARGS...]  # on the GPU machine, from the checkout (with .whl/)
#
# `run` installs .whl/ to /tmp/site (skipped where the packages are importable), then, each under a
# time limit (seconds, from the environment):
#   1. bench-extract, the headline (ARGS replace DEFAULT_ARGS below)           BENCH_S   (140)
#   2. bench-extract with bf16 weights, 200 s and 600 s batches                WEIGHTS_S (50)
#   3. bench-extract compiled: bf16 weights, CUDA graphs, 4 s length buckets   COMPILE_S (100)
#   4. bench-train --size $TRAIN_SIZE (loader wait, cached / online)           TRAIN_S   (60)
#   5. bench-train --step-only at 120 s and 800 s batches (FLOPs, MFU)         STEP_S    (40)
#   6. bench-train --loader-only, 1 / 2 / 4 / 8 workers                        LOADER_S  (25)
#   7. the GPU tests (pytest -m gpu)                                           TESTS_S   (65)
# and prints every figure; the raw results land in $OUT (extract*.json/.err, train*.json/.err, tests.log).
# DEVICE (cuda), MODEL (wavlm-large), TRAIN_SIZE (base), COMPILE_MODE (reduce-overhead), LEVER_MINUTES
# (30: the audio of steps 2 and 3) and STEPS
# ("extract weights compiled train trainstep loader tests") adapt it, e.g. for a rehearsal on a CPU:
#   DEVICE=cpu MODEL=tiny TRAIN_SIZE=tiny OUT=/tmp/gs-out tools/bench/gpu-session.sh run --device cpu --model tiny --minutes 1
# With the `run` tool: command "bash tools/bench/gpu-session.sh run", carry [".whl"].
set -uo pipefail
cd "$(dirname "$0")/../.."

WHEELS="zarr numcodecs donfig google-crc32c webdataset braceexpand dask distributed partd locket zict tblib
        soundfile cffi pycparser fsspec"
DEVICE=${DEVICE:-cuda} MODEL=${MODEL:-wavlm-large} TRAIN_SIZE=${TRAIN_SIZE:-base}
COMPILE_MODE=${COMPILE_MODE:-reduce-overhead} STEPS=${STEPS:-extract weights compiled train trainstep loader tests}
# 3 h of audio = three 1 h shards: the commit-to-commit pace. Writers: auto (the default) then
# processes, side by side; RSS on a 3 min and a 30 min corpus.
DEFAULT_ARGS=(--device "$DEVICE" --model "$MODEL" --dtype bf16 --minutes 180 --loader-workers 6
              --batch-seconds 200 --codec int8-delta --writer-kind auto,process --naive-minutes 1
              --rss-minutes 3 --json)
# the levers' variants: a shorter corpus, (a) and (b) only
LEVER_ARGS=(--device "$DEVICE" --model "$MODEL" --dtype bf16 --minutes "${LEVER_MINUTES:-30}" --loader-workers 6 --codec int8-delta
            --naive-minutes 0.1 --rss-minutes 0 --no-ceiling --json)

# python3 -c "$BENCH" MODULE bench-MODULE ARGS...: `audistill tools bench-MODULE ARGS` through the
# bench module alone (the checkout's tools/bench/ registers its command on a bare Typer app)
BENCH='import sys, importlib, typer
app = typer.Typer()
importlib.import_module("audistill.tools.bench." + sys.argv[1]).register(app)
app.command("other")(lambda: None)  # two commands: typer keeps the command name
app(sys.argv[2:], prog_name="audistill tools")'

# step NAME LIMIT_S COMMAND...: run with a time limit, stdout to $OUT/NAME.json, stderr to NAME.err
step() {
  local name=$1 limit=$2 t0; shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  local rc=$?
  echo "== $name: rc=$rc$([ $rc = 124 ] && echo " (time limit ${limit} s)"), $(( $(date +%s) - t0 )) s"
  grep -A12 "Traceback" "$OUT/$name.err" | tail -14
  [ $rc = 0 ] || grep "^\[bench" "$OUT/$name.err" | cut -c1-240  # what it measured before it stopped
}

# figures NAME: every figure of a bench-extract result
figures() {
  python3 -c 'import json, sys
from audistill.tools.bench.extract import summary
lines = open(sys.argv[1]).read().strip().splitlines()
print("\n".join(summary(json.loads(lines[-1]))) if lines else "no result")' "$OUT/$1.json" 2>&1 | sed 's/^/  /'
}

case "${1:-}" in
prepare)
  mkdir -p .whl
  # the versions installed here (the tested ones), else the newest
  PINS=$(python3 -c "import sys
from importlib.metadata import version, PackageNotFoundError
for p in sys.argv[1:]:
    try: print(f'{p}=={version(p)}')
    except PackageNotFoundError: print(p)" $WHEELS)
  # shellcheck disable=SC2086
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --no-deps -d .whl $PINS
  ls .whl
  ;;
run)
  shift
  OUT=${OUT:-/tmp/gpu-session-out}
  mkdir -p "$OUT"
  T0=$(date +%s)
  if ! python3 -c "import zarr, numcodecs, webdataset, dask, soundfile, fsspec" 2>/dev/null; then
    [ -d .whl ] || { echo "no .whl/: run 'tools/bench/gpu-session.sh prepare' first and carry .whl"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      > "$OUT/pip.log" 2>&1 || { tail -5 "$OUT/pip.log"; exit 1; }
  fi
  # the checkout is the audistill package (flat layout): map it as a namespace, no install needed
  NS=$(mktemp -d /tmp/ns.XXXX)
  mkdir -p "$NS/audistill" && for d in shards extract train tools; do ln -sfn "$PWD/$d" "$NS/audistill/$d"; done
  touch "$NS/audistill/__init__.py"
  export PYTHONPATH=$NS:/tmp/site${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "cpus $(nproc); python $(python3 -V 2>&1 | cut -d' ' -f2); install $(( $(date +%s) - T0 )) s"
  [ $# -gt 0 ] && ARGS=("$@") || ARGS=("${DEFAULT_ARGS[@]}")
  for s in $STEPS; do
    case $s in
    extract) step extract "${BENCH_S:-140}" python3 -c "$BENCH" extract bench-extract "${ARGS[@]}"; figures extract ;;
    weights) step weights "${WEIGHTS_S:-50}" python3 -c "$BENCH" extract bench-extract "${LEVER_ARGS[@]}" --precision weights \
               --batch-seconds 200,600 --writer-kind auto; figures weights ;;
    compiled) step compiled "${COMPILE_S:-100}" python3 -c "$BENCH" extract bench-extract "${LEVER_ARGS[@]}" --precision weights \
                --compile "$COMPILE_MODE" --bucket-seconds 4 --batch-seconds 200 --writer-kind auto; figures compiled ;;
    train) step train "${TRAIN_S:-60}" python3 -c "$BENCH" train bench-train --size "$TRAIN_SIZE" --device "$DEVICE" --json
           tail -c 3000 "$OUT/train.json" | sed 's/^/  /' ;;
    trainstep) step trainstep "${STEP_S:-40}" python3 -c "$BENCH" train bench-train --step-only --size "$TRAIN_SIZE" \
                 --device "$DEVICE" --step-seconds 120,800 --steps 10 --json
               tail -c 2000 "$OUT/trainstep.json" | sed 's/^/  /' ;;
    loader) step loader "${LOADER_S:-25}" python3 -c "$BENCH" train bench-train --loader-only --size "$TRAIN_SIZE" \
              --workers 1,2,4,8 --batches 8 --json
            tail -c 2000 "$OUT/loader.json" | sed 's/^/  /' ;;
    tests) t0=$(date +%s)
           # the test files holding GPU tests (gpu-marked); no others are collected, as the machine
           # lacks some test-only dependencies
           mapfile -t FILES < <(grep -rlE "pytest\.mark\.gpu" tests --include "test_*.py")
           timeout "${TESTS_S:-65}" python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="" "${FILES[@]}" \
             > "$OUT/tests.log" 2>&1
           echo "== gpu tests: rc=$?, $(( $(date +%s) - t0 )) s"
           grep -E "^(FAILED|ERROR)|passed|failed|skipped" "$OUT/tests.log" | tail -20 ;;
    *) echo "unknown step $s"; exit 2 ;;
    esac
  done
  rm -rf "$NS"
  echo "total $(( $(date +%s) - T0 )) s"
  ;;
*)
  sed -n 2,23p "$0"; exit 2
  ;;
esac
