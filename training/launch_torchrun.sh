#!/usr/bin/env bash
# Train with all GPUs of this machine (DistributedDataParallel through torchrun).
#   training/launch_torchrun.sh PATCHES RUN [more blcam train options...]
# NPROC (default: the number of visible GPUs) sets the process count; --batch-size is the
# global batch and must divide evenly by it. Rerun with --resume to continue a killed run.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 PATCHES RUN [blcam train options...]" >&2
    exit 2
fi
PATCHES=$1; RUN=$2; shift 2
PYTHON=${PYTHON:-python}
NPROC=${NPROC:-$("$PYTHON" -c "import torch; print(max(1, torch.cuda.device_count()))")}
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
    -m blcam train "$PATCHES" --out "$RUN" "$@"
