#!/usr/bin/env bash
# One lent GPU machine, one call: the extraction benchmark (issue #3) and the GPU tests.
#
# The lent machines have torch, transformers and numpy but no network and none of zarr, numcodecs,
# webdataset, dask, soundfile, fsspec and their dependencies. So, in two steps:
#
#   tools/bench/gpu-session.sh prepare        # here (network): Python 3.12 wheels into .whl/ (git-ignored)
#   tools/bench/gpu-session.sh run [ARGS...]  # there: install .whl/ to /tmp/site, bench, GPU tests
#
# With the `run` tool: command "bash tools/bench/gpu-session.sh run", carry [".whl"]. ARGS replace
# the default bench-extract arguments below. Results land in $OUT (bench.json, bench.err, tests.log).
# Time limits (seconds) through the environment: BENCH_S (default 420) and TESTS_S (120).
set -uo pipefail
cd "$(dirname "$0")/../.."

WHEELS="zarr numcodecs donfig google-crc32c webdataset braceexpand dask distributed partd locket zict tblib
        soundfile cffi pycparser fsspec"
# 10 h of audio = 10 one-hour shards, enough for a commit-to-commit pace; (b) with the default
# writers (processes on CUDA) as the headline, then with threads
DEFAULT_ARGS=(--device cuda --model wavlm-large --dtype bf16 --minutes 600 --loader-workers 6
              --batch-seconds 200 --codec int8-delta --writer-kind auto,thread --switch-interval-ms 0
              --naive-minutes 3 --rss-minutes 5 --json)

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
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
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
  mkdir -p /tmp/ns/audistill && for d in shards extract train tools; do ln -sfn "$PWD/$d" /tmp/ns/audistill/$d; done
  touch /tmp/ns/audistill/__init__.py
  export PYTHONPATH=/tmp/ns:/tmp/site${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; echo "cpus $(nproc)"
  echo "install $(( $(date +%s) - T0 )) s"
  [ $# -gt 0 ] && ARGS=("$@") || ARGS=("${DEFAULT_ARGS[@]}")
  T0=$(date +%s)
  timeout "${BENCH_S:-420}" python3 -c 'import typer
from audistill.tools.bench.extract import register
app = typer.Typer(); register(app)
@app.command()
def _other(): pass
app()' bench-extract "${ARGS[@]}" > "$OUT/bench.json" 2> "$OUT/bench.err"
  echo "bench rc=$? $(( $(date +%s) - T0 )) s"
  grep "bench-extract" "$OUT/bench.err"; grep -A12 "Traceback" "$OUT/bench.err" | tail -30
  T0=$(date +%s)
  timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="" \
    tests/extract/test_gpu.py tests/shards/test_codecs.py > "$OUT/tests.log" 2>&1
  echo "gpu tests rc=$? $(( $(date +%s) - T0 )) s"
  grep -E "Error|assert|mismatch|passed|failed" "$OUT/tests.log" | tail -20
  ;;
*)
  sed -n 2,12p "$0"; exit 2
  ;;
esac
