#!/usr/bin/env bash
# GPU smoke run, prepared to run as one short script on a machine with a GPU (issue 12):
#   1. the quickstart workflow end to end (search, pruning, retrain, report) with its Train worker on the GPU;
#   2. benchmarks/gpu_smoke.py: UE / search / packed-retrain steps on the GPU against the CPU, for the quickstart
#      and for FM at M = 10M, K = 64: samples/s, peak GPU memory, the search-step ratio to UE.
# Figures go to $OUT (default: ./gpu-smoke): quickstart/report.json, quickstart.log, gpu_smoke.json.
#
#   benchmarks/gpu_smoke.sh [--cpu] [--tiny]
#     --cpu   no GPU: the same steps on the CPU (checks the script itself; a test runs it with --cpu --tiny)
#     --tiny  tiny data and tables (seconds)
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=0
tiny=0
for arg in "$@"; do
  case "$arg" in
    --cpu) cpu=1 ;;
    --tiny) tiny=1 ;;
    *) echo "gpu_smoke.sh: unknown argument $arg (expected --cpu and/or --tiny)" >&2; exit 2 ;;
  esac
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
out="${OUT:-gpu-smoke}"
mkdir -p "$out"

sets=(--set ray.num_workers=1)
flags=()
if [[ $cpu == 0 ]]; then
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: pass --cpu")'
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  sets+=(--set ray.gpus_per_worker=1)
else
  flags+=(--cpu)
fi
if [[ $tiny == 1 ]]; then
  sets+=(--set dataset.synthetic.rows=20000 --set search.max_epochs=2 --set train.max_epochs=2 --set report.reference=none)
  flags+=(--tiny)
fi

start=$(date +%s)
"$PYTHON" -m autosrh_ray run workflows/quickstart.yaml "${sets[@]}" --output "$out/quickstart" --fresh \
  2>&1 | tee "$out/quickstart.log"
echo "quickstart workflow on $([[ $cpu == 1 ]] && echo CPU || echo GPU): $(( $(date +%s) - start )) s"
"$PYTHON" benchmarks/gpu_smoke.py "${flags[@]}" --json "$out/gpu_smoke.json"
