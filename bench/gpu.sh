#!/usr/bin/env bash
# Every GPU measurement the speed and augmentation goals need, in one call, for a session with a GPU:
#
#     bash bench/gpu.sh [OUT_DIR]        # default: bench-gpu/; one log per measurement
#
# speedrun over 5 seeds (time to result, load and compile warm-up apart), best, the standard PyTorch
# baselines, the Trainer against a hand-written loop, and augmentation throughput against the peers.
set -euo pipefail
out="${1:-bench-gpu}"
mkdir -p "$out"
python=${PYTHON:-python}
run() {  # run NAME COMMAND...: the command's output goes to the terminal and to OUT/NAME.log
    local name=$1
    shift
    echo "== $name: $*" | tee "$out/$name.log"
    "$@" 2>&1 | tee -a "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/device.txt"
run speedrun "$python" bench/train_speed.py --device cuda --recipe speedrun --seeds 5 --baselines mlp,cnn,resnet18
run best "$python" -m trainlab.cli train --recipe best --device cuda --out "$out/best-run" --quiet
run trainer_overhead "$python" bench/trainer_overhead.py --device cuda --model speednet --images 60000
run augment "$python" bench/augment.py --device cuda
