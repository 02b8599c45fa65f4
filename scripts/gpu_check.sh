#!/usr/bin/env bash
# The GPU checks as one short script, for a machine with a CUDA GPU and a CUDA build of PyTorch already installed
# (the project's own .venv holds a CPU build, so this uses the machine's python3 and only puts src/ on its path):
#
#     bash scripts/gpu_check.sh     # $OUT (default runs/gpu-check): summary.txt, log.txt and two reports; work in $WORK
#
# 1. tests/test_cuda.py on the GPU: both trainers under fp16 autocast, PGD, ANSM and `ansm defend` on the device,
#    and checkpoints moved between the GPU and a CPU (seconds);
# 2. the demo on the GPU (`ansm demo --device cuda`): the whole pipeline end to end, timed (~9 min on 2 CPU cores);
# 3. what GPU-scale adversarial training would cost (issue 14's open lever): 300 steps of unet-small trained on
#    PGD-10 examples only at 4/255, batch 64, 96-px crops; its summary.json's train_s gives steps per hour;
# 4. the ANSM latency bench on the GPU, fp32 and fp16 (bench/ansm_latency.py).
# Each step has its own time limit (9 minutes in all, inside the device tool's 10-minute command and 15-minute
# session budget: run it as `bash scripts/gpu_check.sh` with timeout_s 600); it exits 1 if any step failed or timed
# out (exit 124 in summary.txt: raise that step's limit on the next machine).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
WORK=${WORK:-$(mktemp -d)}  # (the device tool returns at most 8 files from $OUT, so the runs' outputs stay here)
mkdir -p "$OUT" "$WORK"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ANSM=("$PY" -c "from ansm.cli import main; main()")
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it, record its exit status and duration
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name" | tee -a "$OUT/log.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/log.txt"
    rc=${PIPESTATUS[0]}
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failed=1
}

"$PY" - <<'EOF' 2>&1 | tee "$OUT/summary.txt" || exit 1
import importlib, sys
import torch
missing = [m for m in ("numpy", "PIL", "skimage", "typer", "rich", "safetensors", "matplotlib", "flatbuffers", "pytest")
           if importlib.util.find_spec(m) is None]
if missing or not torch.cuda.is_available():
    sys.exit(f"cannot check here: missing {missing}, CUDA available: {torch.cuda.is_available()}")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
EOF

step cuda-tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step demo 270 "${ANSM[@]}" demo --device cuda --out "$WORK/demo"
step adv-training-cost 90 "${ANSM[@]}" train-localizer --arch unet-small --adv-eps 4/255 --adv-steps 10 \
    --adv-fraction 1 --steps 300 --batch-size 64 --eval-n 64 --device cuda --out "$WORK/adv-training"
step latency 40 "$PY" bench/ansm_latency.py --device cuda --repeats 3 --sizes 512 1024 --nets full fast
step latency-fp16 40 "$PY" bench/ansm_latency.py --device cuda --amp fp16 --repeats 3 --sizes 512 1024 --nets full fast
cp "$WORK/demo/report.md" "$OUT/demo-report.md" 2>/dev/null
cp "$WORK/adv-training/summary.json" "$OUT/adv-training-summary.json" 2>/dev/null
exit "$failed"
