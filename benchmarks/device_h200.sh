#!/usr/bin/env bash
# The prepared run for a lent GPU (the `device` tool's H200), in one command of under 10 minutes:
# the GPU tests, then the end-to-end Lightning benchmark on GPT-2 small (124M), figures under $OUT.
#
# Here, once (the device image lacks scikit-optimize and pyaml; pure-Python wheels):
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl scikit-optimize==0.10.2 pyaml==26.7.0
# Then: device run(command="bash benchmarks/device_h200.sh", carry=[".whl"], timeout_s=590)
# and record $OUT/e2e_lightning_gpu.json and the test log in benchmarks/README.md.
# A dry run of the plumbing on a CPU: MODEL=gpt2 STEPS=12 TRIALS=2 bash benchmarks/device_h200.sh
set -uo pipefail
OUT=${OUT:-/tmp/autoscout-device}
MODEL=${MODEL:-gpt2_124m} STEPS=${STEPS:-100} TRIALS=${TRIALS:-8}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=/tmp/autoscout-inductor AUTOSCOUT_STORE=/tmp/autoscout-device.sqlite
python3 -c "import skopt" 2>/dev/null || { echo "scikit-optimize is missing: carry .whl (see the top of $0)" >&2; exit 1; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__,
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/machine.txt"

# 1. The tests that need a GPU, plus the device wiring's own tests (about 2 minutes; cut at 200 s).
timeout 200 python3 -m pytest -q -p no:cacheprovider -rs tests/integrations/test_gpu.py tests/integrations/test_device.py \
  2>&1 | tee "$OUT/gpu_tests.log"

# 2. Defaults vs AutoScout vs hand-tuned bf16 on GPT-2 small, 100 steps each (about 5 minutes);
#    tuning bounded to 150 s and 120 s per trial, as a user planning a 15-minute run would set it;
#    cut at 360 s so that the whole command stays inside the device's 10-minute limit.
timeout 360 python3 -m benchmarks.e2e_lightning --models "$MODEL" --steps "$STEPS" --trials "$TRIALS" --trial-timeout 120 \
  --max-seconds 150 --json "$OUT/e2e_lightning_gpu.json" 2>&1 | tee "$OUT/e2e_lightning_gpu.log"
