#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, as one run on a machine that has one (docs/cuda-backend.md,
# "On a GPU"): the versions, the tests written for the CUDA emulator run on the GPU instead
# (tests/cuda_on_gpu_plugin.py), and benchmarks/bench_cuda.py. Logs and figures go to $OUT
# (default: gpu-out/). Run from the repository root: bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
TEST_SECONDS=${TEST_SECONDS:-150}
BENCH_SECONDS=${BENCH_SECONDS:-180}

# graphc itself, without touching the machine's packages (it may have no network)
if ! $PY -c "import graphc.frontends" 2>/dev/null; then
    $PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
        || { cat "$OUT/install.log"; exit 1; }
fi

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $PY - <<'EOF'
import importlib
for name in ("numpy", "sympy", "cupy", "torch", "jax", "llvmlite", "hypothesis"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "missing:", exc)
from graphc.backends.cuda.backend import gpu_problem
print("gpu_problem:", gpu_problem())
from graphc.backends.cuda.gpu import target_id
print("target:", target_id())
EOF
} 2>&1 | tee "$OUT/versions.txt"

# the cuda backend's own tests and every other test that runs emulated CUDA (the -k names
# pick those among other backends' cases; a few cheap ones of other backends come along)
TESTS=(tests/test_cuda_backend.py tests/test_cuda_softmax.py tests/test_cuda_vector.py
       tests/test_cuda_gemm_ptx.py tests/test_scan_loop.py tests/test_respace_merge.py
       tests/test_backend_protocol.py tests/test_kernel_ir.py tests/test_scans_sort.py
       tests/test_elementwise.py tests/test_fuzz.py)
SELECT="cuda or gpu or emulat or sympy_functions_through_core_ops or every_registered_backend"
SELECT+=" or respace"
# (pictures need Graphviz's dot, which a GPU machine may lack)
command -v dot >/dev/null || SELECT="($SELECT) and not render"
timeout "$TEST_SECONDS" env GRAPHC_CUDA_ON_GPU=1 $PY -m pytest -v --tb=short -p no:cacheprovider \
    -n "${TEST_WORKERS:-8}" -k "$SELECT" --durations=10 "${TESTS[@]}" \
    >"$OUT/tests.log" 2>&1
echo "tests exit code: $?" | tee -a "$OUT/tests.log"
tail -n 60 "$OUT/tests.log"

timeout "$BENCH_SECONDS" $PY benchmarks/bench_cuda.py --breakdown W1,W5,W6 --json "$OUT/bench_cuda.json" \
    2>&1 | tee "$OUT/bench.log"
