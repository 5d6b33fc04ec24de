#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on one GPU, offline, within 8 minutes (budgeted per part, cut at 480 s): the `cuda` tests, inference,
# training steps and indexing, written as JSON + markdown records (default: docs/records/gpu/).
#
#   benchmarks/gpu_check.sh                       # everything, records in docs/records/gpu/
#   benchmarks/gpu_check.sh --out "$OUT"          # records elsewhere (e.g. the folder a GPU loan sends back)
#   benchmarks/gpu_check.sh --parts inference --batches 32,128,256
#   benchmarks/gpu_check.sh --dry-run             # the script's logic on a CPU, tiny sizes
#
# Python: $PYTHON, else the checkout's .venv, else python3. The package is imported from this checkout's src/. Every
# argument goes to gpu_check.py (`--help` lists them). The whole run is cut at $GPU_CHECK_TIMEOUT seconds (default 480).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=python3
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# What the check needs, said at once instead of as a traceback minutes in.
"$python" - <<'EOF'
import importlib.util, sys
missing = [name for name in ("torch", "transformers", "peft", "accelerate", "av", "pytest", "safetensors", "datasets")
           if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"error: the GPU check needs {', '.join(missing)} in {sys.executable}; set PYTHON to an environment "
             "that has them (pip install -e '.[dev]').")
import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none visible'}", flush=True)
EOF

exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" "$python" benchmarks/gpu_check.py "$@"
