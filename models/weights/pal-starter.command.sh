#!/bin/sh
# Exact commands that produced models/weights/pal-starter.safetensors.
# CPU only (2 shared cores), torch 2.14.1, timm 1.0.31, 1 thread per process (OMP_NUM_THREADS=1:
# with 2 threads on the busy shared machine an iteration took ~11 s instead of ~0.55 s).
# Data paths are outside the repo; every data set is a pure function of its `pal synth` flags.
# A run stopped at iteration N equals `--max-iters N` with the same --poly-end (the LR schedule
# depends on --poly-end/--warmup-iters only), so each stage below is reproducible as written.
set -e
export OMP_NUM_THREADS=1
COMMON="--batch-size 4 --crop-size 256 --ratio-range 0.75,1.5 --lr 1e-3 --head-lr-mult 1 \
  --checkpoint-interval 100 --log-interval 20 --workers 0 --threads 1 --cache-images"

# Stage 1: from scratch, 6 artifact types (checkerboard held out for the few-shot experiment),
# first-revision labels (whole alpha>=0.5 support). Stopped at 1500 of a 2000-iteration schedule.
pal synth /work/data/synth-starter --n-train 400 --n-val 40 --seed 0 --exclude checkerboard --label-rule support
pal train --data /work/data/synth-starter --work-dir /work/runs/starter \
  --model models/weights/pal-starter.config.json $COMMON \
  --warmup-iters 100 --poly-end 2000 --val-interval 200 --max-iters 900
cp /work/runs/starter/latest.pt /work/runs/stage1_snapshot.pt          # iteration 900 -> stage 2
pal train --data /work/data/synth-starter --work-dir /work/runs/starter \
  --model models/weights/pal-starter.config.json $COMMON \
  --warmup-iters 100 --poly-end 2000 --val-interval 200 --max-iters 1500 --resume
cp /work/runs/starter/latest.pt /work/runs/stage1_final.pt             # base of the few-shot experiment

# Stage 2: all 7 types (old + new images), from stage 1 @900; stopped at 500 of 3000.
pal synth /work/data/synth-all --n-train 400 --n-val 40 --seed 1 --label-rule support
mkdir -p /work/data/stage2
ln -sfn /work/data/synth-starter /work/data/stage2/six_types
ln -sfn /work/data/synth-all /work/data/stage2/all_types
pal train --data /work/data/stage2 --work-dir /work/runs/stage2 --init /work/runs/stage1_snapshot.pt \
  $COMMON --warmup-iters 50 --poly-end 3000 --val-interval 250 --seed 1 --max-iters 500
cp /work/runs/stage2/latest.pt /work/runs/stage2_snapshot.pt

# Stage 3 (shipped): 7 types, labels = visibly changed pixels only (the default rule).
pal synth /work/data/v2-all --n-train 400 --n-val 40 --seed 3
pal train --data /work/data/v2-all --work-dir /work/runs/stage3 --init /work/runs/stage2_snapshot.pt \
  $COMMON --warmup-iters 50 --poly-end 2000 --val-interval 250 --seed 3 --max-iters 2000 \
  --export /work/runs/stage3/stage3.safetensors

# Ship: threshold calibration on the stage-3 val split (artifact-logit shift maximising val aIoU),
# fp16 export with provenance + model card. See benchmarks/bench_starter.py for the numbers.
python - <<'PY'
from comfyui_pal.training.data import discover
from comfyui_pal.training.evaluate import load_eval_model
from comfyui_pal.training.export import export_from_state
from comfyui_pal.training.loop import calibrate_bias
net, _ = load_eval_model("/work/runs/stage3/latest.pt")
delta, table = calibrate_bias(net, discover("/work/data/v2-all", "val").samples)
export_from_state("/work/runs/stage3/latest.pt", "models/weights/pal-starter.safetensors",
                  bias_shift=delta, extra_provenance={"calibration": {"split": "v2-all/val", "aIoU_by_shift": table}})
PY
# Held-out test set (other seed, held-out skimage pictures coffee/rocket, one type per image):
pal synth /work/data/v2-heldout --n-train 0 --n-val 0 --n-test 140 --seed 1001 --by-type --skimage heldout
pal eval --model models/weights/pal-starter.safetensors --data /work/data/v2-heldout --split test --out /work/runs/eval-starter
