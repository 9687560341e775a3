#!/bin/sh
# Exact commands that produced models/weights/pal-starter.safetensors (CPU, torch 2.14, 1 thread: the shared 2-core machine was busy).
# Stage 1: synthetic data (deterministic by seed; 'checkerboard' held out for the few-shot experiment).
pal synth /work/data/synth-starter --n-train 400 --n-val 40 --seed 0 --exclude checkerboard
# Stage 1 training from scratch (regnetx_002 + 32-channel UPerHead), crops of 256 from 512 images.
pal train --data /work/data/synth-starter --work-dir /work/runs/starter \
  --model models/weights/pal-starter.config.json \
  --max-iters 2000 --batch-size 4 --crop-size 256 --ratio-range 0.75,1.5 \
  --lr 1e-3 --head-lr-mult 1 --warmup-iters 100 --poly-end 2000 \
  --val-interval 200 --checkpoint-interval 100 --log-interval 20 --workers 0 --threads 1 --cache-images \
  --export /work/runs/starter/stage1.safetensors
