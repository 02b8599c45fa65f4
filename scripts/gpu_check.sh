#!/usr/bin/env bash
# The GPU checks as one short script, for a machine with a CUDA GPU and a CUDA build of PyTorch already installed
# (the project's own .venv holds a CPU build, so this uses the machine's python3 and only puts src/ on its path):
#
#     bash scripts/gpu_check.sh              # logs and summary.txt under $OUT (default runs/gpu-check)
#
# 1. tests/test_cuda.py on the GPU: both trainers under fp16 autocast, PGD, ANSM and `ansm defend` on the device,
#    and checkpoints moved between the GPU and a CPU (seconds);
# 2. the demo on the GPU (`ansm demo --device cuda`): the whole pipeline end to end, timed (35 min on 2 CPU cores);
# 3. the ANSM latency bench on the GPU, fp32 and fp16 (bench/ansm_latency.py).
# Each step has its own time limit, so the whole script stays under ~10 minutes; it exits 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ANSM=("$PY" -c "from ansm.cli import main; main()")
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it, record its exit status and duration
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failed=1
}

"$PY" - <<'EOF' 2>&1 | tee "$OUT/environment.txt" || exit 1
import importlib, sys
import torch
missing = [m for m in ("numpy", "PIL", "skimage", "typer", "rich", "safetensors", "matplotlib", "flatbuffers", "pytest")
           if importlib.util.find_spec(m) is None]
if missing or not torch.cuda.is_available():
    sys.exit(f"cannot check here: missing {missing}, CUDA available: {torch.cuda.is_available()}")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
EOF

step cuda-tests 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step demo 420 "${ANSM[@]}" demo --device cuda --out "$OUT/demo"
step latency 120 "$PY" bench/ansm_latency.py --device cuda --sizes 512 1024 --nets full fast
step latency-fp16 120 "$PY" bench/ansm_latency.py --device cuda --amp fp16 --sizes 512 1024 --nets full fast
cp "$OUT/demo/report.md" "$OUT/demo-report.md" 2>/dev/null
exit "$failed"
