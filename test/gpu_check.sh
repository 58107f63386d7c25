#!/usr/bin/env bash
# GPU checks that cannot run on a CPU-only machine. Run from the repository root on a machine with an
# NVIDIA GPU and only this repository (no network needed once the venv exists):
#
#   OUT=/tmp/gpu_out test/gpu_check.sh
#
# It builds the full-size demo bundle (real Light-WAM dims, bf16, deterministic random weights),
# benchmarks torch fp32/bf16 (eager unmerged LoRA, eager merged, torch.compile, CUDA graphs) and
# ONNX Runtime (CUDA, TensorRT when the installed onnxruntime has them), exports ONNX, checks torch vs
# ONNX agreement on the GPU, and runs the gpu-marked tests. Every step logs to $OUT/<step>.log and the
# bench results land in $OUT/bench_*.json; $OUT/summary.txt lists each step's exit status. A step that
# fails does not stop the others (the summary says which failed); the script exits non-zero if any did.
# Needs a CUDA build of torch (the CPU venv of the Makefile cannot see the GPU: set PY=/path/to/python)
# and, for the ONNX CUDA/TensorRT steps, onnxruntime-gpu instead of onnxruntime in that environment.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to an output directory}"
mkdir -p "$OUT"
PY="${PY:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then PY="$(command -v python3)"; fi
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu SIZE=tiny dry-runs the script's logic on a CPU-only machine
SIZE="${SIZE:-full}"
COMPILE="${COMPILE:-1}"  # COMPILE=0 skips the torch.compile benches (minutes of compilation each)
BUNDLE="${BUNDLE:-$OUT/demo_$SIZE}"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-5}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
failed=0

step() {  # step NAME CMD... : run, log, record status
  local name="$1"; shift
  echo "=== $name: $*" | tee -a "$SUMMARY"
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "    rc=$rc ($((SECONDS - t0)) s) log $OUT/$name.log" | tee -a "$SUMMARY"
  if [[ $rc -ne 0 ]]; then failed=1; tail -n 20 "$OUT/$name.log" | sed 's/^/    | /' | tee -a "$SUMMARY"; fi
  return $rc
}

lw() { "$PY" -m lightwam_ros.cli "$@"; }

{
  echo "date: $(date -Is)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  "$PY" - <<'EOF'
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
print("onnxruntime", ort.__version__, "providers", ort.get_available_providers())
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$SUMMARY"
if [[ $DEVICE != cpu ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch in $PY cannot see a CUDA GPU (a +cpu torch build, or no driver); set PY to a" \
       "python with a CUDA torch (and onnxruntime-gpu for the ONNX CUDA/TensorRT steps)" | tee -a "$SUMMARY"
  exit 3
fi

# 1. Full-size demo bundle (about 3.3 GB bf16, written in ~1 min with ~1 GB of RAM).
if [[ ! -f "$BUNDLE/manifest.json" ]]; then
  step "demo_bundle_$SIZE" lw demo-bundle --out "$BUNDLE" --size "$SIZE" --seed 0
fi

# 2. Torch benchmarks.
bench() {  # bench NAME ARGS...
  local name="$1"; shift
  step "bench_$name" lw bench --bundle "$BUNDLE" --device "$DEVICE" --runs "$RUNS" --warmup "$WARMUP" \
    --json "$OUT/bench_$name.json" "$@"
}
for dtype in float32 bfloat16; do
  bench "torch_${dtype}_eager_unmerged" --backend torch --dtype "$dtype" --no-merge-lora
  bench "torch_${dtype}_eager_merged" --backend torch --dtype "$dtype"
  if [[ $COMPILE == 1 ]]; then
    bench "torch_${dtype}_compile" --backend torch --dtype "$dtype" --compile
  fi
  if [[ $DEVICE != cpu ]]; then
    bench "torch_${dtype}_cudagraph" --backend torch --dtype "$dtype" --cuda-graphs
    if [[ $COMPILE == 1 ]]; then
      bench "torch_${dtype}_compile_cudagraph" --backend torch --dtype "$dtype" --compile --cuda-graphs
    fi
  fi
done

# 3. ONNX export (verified against torch on the GPU) and ONNX Runtime benchmarks.
for dtype in float32 float16; do
  step "export_onnx_$dtype" lw export-onnx --bundle "$BUNDLE" --dtype "$dtype" --device "$DEVICE"
done
providers=$("$PY" -c "import onnxruntime as o; print(' '.join(o.get_available_providers()))")
for dtype in float32 float16; do
  if [[ $DEVICE == cpu || $providers == *CUDAExecutionProvider* ]]; then
    bench "onnx_${dtype}_$DEVICE" --backend onnx --dtype "$dtype"
  else
    echo "=== onnx $dtype: skipped, onnxruntime has no CUDAExecutionProvider ($providers)" | tee -a "$SUMMARY"
  fi
done

# 4. Torch vs ONNX Runtime agreement on the full bundle, per provider (max abs diff, normalized actions).
step onnx_agreement "$PY" - "$BUNDLE" "$DEVICE" <<'EOF'
import sys, numpy as np, torch, onnxruntime as ort
from lightwam_ros.bundle import Bundle
from lightwam_ros.backends.base import PolicyIO
from lightwam_ros.backends.torch_backend import TorchBackend
from lightwam_ros.backends.onnx_backend import OnnxBackend
b = Bundle.load(sys.argv[1])
dev = torch.device(sys.argv[2])
inputs = PolicyIO.from_bundle(b).example_inputs(dev)
avail = ort.get_available_providers()
worst = 0.0
for dtype, tol in ((torch.float32, 1e-3), (torch.float16, 5e-2)):
    ref = TorchBackend(b, dev, dtype).infer(*inputs)
    for prov in (("CPUExecutionProvider",) if dev.type == "cpu" else
                 ("CUDAExecutionProvider", "TensorrtExecutionProvider")):
        if prov not in avail:
            print(f"{prov}: not in this onnxruntime ({avail})")
            continue
        be = OnnxBackend(b, dev, dtype, providers=(prov, "CPUExecutionProvider"))
        out = be.infer(*inputs)
        d = float(np.abs(out - ref).max())
        print(f"{str(dtype):15} {prov:28} active {be.active_providers[0]:28} max|onnx-torch| {d:.3e} (tol {tol})")
        worst = max(worst, d / tol)
        be.close()
sys.exit(0 if worst <= 1.0 else 1)
EOF

# 5. gpu-marked tests of the suite (they skip without CUDA, so here they must run).
step pytest_gpu "$PY" -m pytest -q -m gpu -rs test/

echo "done; failed=$failed" | tee -a "$SUMMARY"
exit $failed
