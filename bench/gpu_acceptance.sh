#!/usr/bin/env bash
# The GPU acceptance runs of issues 3 (training) and 4 (Detect), in two stages that each fit
# one device call (at most 10 minutes; the device budget is 15 minutes in all):
#
#   bench/gpu_acceptance.sh benches  [OUT]   # bench/train.py (paper + fast stem) and bench/detect.py
#   bench/gpu_acceptance.sh protocol [OUT]   # phantom (>= 120 patients) -> export -> train (RECIPE)
#                                            # -> Table 2 -> Detect on the held-out volumes ->
#                                            # pointing game, FROC, volume AUC
#
# OUT (default: $OUT, else gpu-acceptance) receives the JSON/Markdown/PNG results and a log;
# copy the figures into bench/RESULTS.md. Knobs (environment): PATIENTS (120), EPOCHS (250),
# STEM (paper; 'fast' trains ~3x faster), RECIPE (default; 'paper' = the paper's method, its
# map unrefined), DEVICE (cuda), WORK (scratch folder, default /tmp).
# SMOKE=1 runs both stages at toy sizes on the CPU in a few minutes: check the script with it
# before spending device time.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${1:?usage: bench/gpu_acceptance.sh benches|protocol [OUT]}"
OUT="$(mkdir -p "${2:-${OUT:-gpu-acceptance}}" && cd "${2:-${OUT:-gpu-acceptance}}" && pwd)"
WORK="${WORK:-/tmp/blcam-gpu-acceptance}"
PY="${PYTHON:-python}"
JOBS="$(nproc)"
RECIPE="${RECIPE:-default}"
REFINE=(); [ "$RECIPE" = paper ] && REFINE=(--refine 0)
export BLCAM_BENCH_WORK="$WORK/bench"

if [ "${SMOKE:-0}" = 1 ]; then
    DEVICE="${DEVICE:-cpu}"; PATIENTS="${PATIENTS:-12}"; EPOCHS="${EPOCHS:-2}"; STEM="${STEM:-paper}"
    PHANTOM=(--shape 24 96 96); EXPORT=(--patch 12 64 64 --negatives-per-volume 2)
    TRAIN=(--arch resnet10 --widen 0.25 --crop 8 48 48 --batch-size 8)
    BENCH_TRAIN=(--crop 8 64 64 --patch 12 96 96 --patches 28 --epochs 2 --baseline-steps 3 --warmup-steps 1
                 --baseline-workers 1 --workers 0 --threads 2)
    BENCH_DETECT=(--sizes 24x96x96 --crop 8 48 48 --patch 12 64 64 --sliding-windows 4 --threads 2)
else
    DEVICE="${DEVICE:-cuda}"; PATIENTS="${PATIENTS:-120}"; EPOCHS="${EPOCHS:-250}"; STEM="${STEM:-paper}"
    PHANTOM=(); EXPORT=(); TRAIN=(); BENCH_TRAIN=(); BENCH_DETECT=()
fi

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }
run() { log "\$ $*"; "$@" 2>&1 | tee -a "$OUT/log.txt"; }

"$PY" -c "import torch; print('torch', torch.__version__, '| cuda:', torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
    | tee -a "$OUT/log.txt"

case "$STAGE" in
benches)
    run "$PY" bench/train.py --device "$DEVICE" --stems paper fast "${BENCH_TRAIN[@]}" --json "$OUT/train.json"
    run "$PY" bench/detect.py --device "$DEVICE" "${BENCH_DETECT[@]}" --json "$OUT/detect.json"
    ;;
protocol)
    rm -rf "$WORK/protocol"
    W="$WORK/protocol"
    run blcam phantom "$W/phantom" --patients "$PATIENTS" --jobs "$JOBS" --no-progress "${PHANTOM[@]}"
    run blcam export "$W/phantom/cohort.csv" --out "$W/patches" --jobs "$JOBS" "${EXPORT[@]}"
    run blcam train "$W/patches" --out "$W/run" --recipe "$RECIPE" --stem "$STEM" --epochs "$EPOCHS" \
        --device "$DEVICE" "${TRAIN[@]}"
    cp "$W/run/curves.png" "$W/run/history.csv" "$OUT/"
    run blcam evaluate "$W/run" "$W/patches" --device "$DEVICE" --out "$OUT/table2.json"
    "$PY" -c "import sys; from pathlib import Path; from blcam.demo.pipeline import held_out_cohort; \
held_out_cohort(*map(Path, sys.argv[1:]))" "$W/phantom/cohort.csv" "$W/patches/manifest.csv" "$W/held_out.csv"
    run blcam detect "$W/run/model.safetensors" "$W/held_out.csv" --out "$W/detections" --device "$DEVICE" \
        "${REFINE[@]}"
    run blcam evaluate-detection "$W/detections" "$W/held_out.csv" --masks "$W/phantom/masks" \
        --out "$OUT/localisation.json"
    ;;
*)
    echo "unknown stage '$STAGE': use benches or protocol" >&2
    exit 2
    ;;
esac
log "done: $STAGE -> $OUT"
