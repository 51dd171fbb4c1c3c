#!/usr/bin/env bash
# The paper's MobileSAM + SRW recipe on one machine with several GPUs (torchrun).
# Usage: scripts/launch_torchrun.sh /data/sa1b /data/sam_vit_h_4b8939.pth /data/work [GPUS]
set -euo pipefail
sa1b=${1:?SA-1B folder of sa_*.tar}; checkpoint=${2:?sam_vit_h_4b8939.pth}; work=${3:?work folder}; gpus=${4:-8}
run="torchrun --standalone --nproc-per-node $gpus -m mobilesam_srw"

# 1% of SA-1B (10 of ~1000 tars, seeded) for training; for evaluation, the last tar not used in training
$run precompute --sa1b "$sa1b" --checkpoint "$checkpoint" --out "$work/shards/train" --subset 1% --dtype fp16
python3 - "$sa1b" "$work" <<'PY' > "$work/val_tars.txt"
import glob, json, os, sys
used = set(json.load(open(os.path.join(sys.argv[2], "shards/train/manifest.json")))["sources"])
tars = sorted(os.path.basename(p) for p in glob.glob(os.path.join(sys.argv[1], "sa_*.tar")))
print(next(name for name in reversed(tars) if name not in used))
PY
$run precompute --sa1b "$sa1b" --checkpoint "$checkpoint" --out "$work/shards/val" --subset "$work/val_tars.txt" --limit 1000

# global batch 64 = 64 / GPUS per GPU; AdamW lr 0.002, 8 epochs (the defaults)
per_gpu=$((64 / gpus))
$run train --shards "$work/shards/train" --out "$work/runs/mse" --loss mse --batch-size "$per_gpu"
$run train --shards "$work/shards/train" --out "$work/runs/srw" --loss srw --tau 0.5 --batch-size "$per_gpu"

$run eval --shards "$work/shards/val" --student "$work/runs/mse" "$work/runs/srw" --sam-checkpoint "$checkpoint" \
    --grid 5 16 32 --out "$work/reports/table6"
srw-sam export --run "$work/runs/srw" --sam-checkpoint "$checkpoint" --out "$work/mobile_sam_srw.pt"
