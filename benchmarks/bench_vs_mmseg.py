"""The project's detector network against real mmsegmentation, side by side, with a bf16 column.

    python benchmarks/bench_vs_mmseg.py --mmseg-python MMVENV/bin/python --pal4vst PAL4VST_SRC \
        [--runs 7] [--threads 2] [--work DIR] [--dtypes fp32 bf16]

MMVENV: a venv with mmsegmentation 1.2.2, mmengine, mmcv-lite 2.1.0 and the same torch (the
versions are listed in tests/fixtures/README.md). PAL4VST_SRC: a checkout
or bare git dir of the public owenzlz/PAL4VST; only the text of its official config
mmsegmentation/configs/pal4vst/swin-large_upernet_unified_512x512.py is read.

mmseg builds that config (Swin-B window 12, UPerHead + FCNHead) with seeded random weights
(benchmarks/_random_weights.py), saves it as an mmseg-0.x checkpoint, and times its own
EncoderDecoder.inference (fp32, always). The project loads the same file with load_detector
(dtype fp32, then bf16) and times det.segmenter. Each side is a long-lived process; the driver
alternates them (mmseg, fp32, bf16, then reversed, ...) on a rolled 512x512 image so no run repeats
an input, one forward at a time, after one warm-up each. Printed: every run, the medians, the
ratios (fp32 / mmseg, mmseg / bf16) and the agreement of each project dtype with mmseg.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

SEED = 20251126
SIZE = 512
CFG = "mmsegmentation/configs/pal4vst/swin-large_upernet_unified_512x512.py"
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------------------- workers
def _proto():
    """Real stdout carries the protocol (one JSON object a line); everything else goes to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return lambda **m: (out.write(json.dumps(m) + "\n"), out.flush())


def _serve(send, work, name, fn, x):
    import torch

    last = None
    send(ready=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "time":
            k = int(cmd[1])
            inp = torch.roll(x, shifts=(37 * k, 53 * k), dims=(2, 3)).contiguous()
            with torch.inference_mode():
                t0 = time.perf_counter()
                y = fn(inp)
                dt = time.perf_counter() - t0
            last = y
            send(t=dt)
        elif cmd[0] == "quit":
            torch.save(last.float(), os.path.join(work, f"last_{name}.pt"))
            send(bye=True)
            return


def _stub_mmcv_ops():
    """mmcv-lite has no compiled ops; mmseg imports a few at import time (never called here)."""
    def missing(*a, **k):
        raise NotImplementedError("mmcv.ops is stubbed (mmcv-lite)")

    m = types.ModuleType("mmcv.ops")
    m.__path__ = []
    for n in ("point_sample", "sigmoid_focal_loss", "CrissCrossAttention", "PSAMask", "DeformConv2d",
              "ModulatedDeformConv2d", "SyncBatchNorm", "nms", "batched_nms", "roi_align", "RoIAlign",
              "MultiScaleDeformableAttention", "DeformConv2dPack", "ModulatedDeformConv2dPack"):
        setattr(m, n, type(n, (), {"__init__": missing}) if n[0].isupper() else missing)
    sys.modules["mmcv.ops"] = m
    import mmcv

    mmcv.ops = m


def mmseg_worker(work, cfg_path, threads):
    send = _proto()
    _stub_mmcv_ops()
    import copy
    import logging

    import torch

    torch.set_num_threads(threads)
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    sys.path.insert(0, HERE)
    from _random_weights import balance_classes_, randomize_

    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    cfg = Config.fromfile(cfg_path)
    mcfg = copy.deepcopy(cfg.model)
    mcfg.backbone.pop("init_cfg", None)  # no ImageNet weights
    torch.manual_seed(SEED)
    model = randomize_(MODELS.build(mcfg), SEED)
    try:
        from skimage import data

        rgb = torch.from_numpy(data.astronaut().copy())
    except ImportError:
        rgb = torch.randint(0, 256, (SIZE, SIZE, 3), generator=torch.Generator().manual_seed(SEED), dtype=torch.uint8)
    x = (rgb.permute(2, 0, 1)[None].float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = model.extract_feat(x)
        for head in (model.decode_head, model.auxiliary_head):
            balance_classes_(head, head(list(feats)))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"meta": {"config": cfg.pretty_text, "CLASSES": ("background", "bad_region")}, "state_dict": sd},
               os.path.join(work, "model.pth"))
    torch.save(x, os.path.join(work, "input.pt"))
    metas = [dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE))]

    def fwd(inp):
        return model.inference(inp, metas)

    with torch.inference_mode():
        torch.save(fwd(x).float(), os.path.join(work, "warm_mmseg.pt"))
    _serve(send, work, "mmseg", fwd, x)


def project_worker(work, dtype, threads):
    send = _proto()
    import torch

    torch.set_num_threads(threads)
    from comfyui_pal.models import load_detector

    x = torch.load(os.path.join(work, "input.pt"), weights_only=True)
    t0 = time.perf_counter()
    det = load_detector(os.path.join(work, "model.pth"), device="cpu", dtype=dtype)
    load_s = time.perf_counter() - t0
    torch.set_num_threads(threads)
    seg, dt = det.segmenter, det.dtype

    def fwd(inp):
        return seg(inp.to(dt))

    with torch.inference_mode():
        t0 = time.perf_counter()
        torch.save(fwd(x).float(), os.path.join(work, f"warm_{dtype}.pt"))
        warm = time.perf_counter() - t0
    sys.stderr.write(f"{dtype}: load {load_s:.2f} s, first call {warm:.2f} s, runs in {dt}\n")
    _serve(send, work, dtype, fwd, x)


# ------------------------------------------------------------------------------- driver
class Worker:
    def __init__(self, name, argv, work, env):
        self.name = name
        self.log = open(os.path.join(work, f"{name}.log"), "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                  env=env)

    def recv(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker exited; see {self.log.name}")
        return json.loads(line)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.recv()


def agreement(ref, low):
    import torch

    gap = ref[:, 1] - ref[:, 0]
    decided = gap.abs() >= 0.05
    same = ref.argmax(1) == low.argmax(1)
    par = lambda t: float((t.argmax(1) == 1).float().mean())  # noqa: E731
    return {"max_abs_logit_diff": float((ref - low).abs().max()), "argmax_agree_all": float(same.float().mean()),
            "agree_gap>=0.05": float(same[decided].float().mean()), "dPAR": par(low) - par(ref),
            "finite": bool(torch.isfinite(low).all())}


def drive(a) -> int:
    import torch

    work = a.work or tempfile.mkdtemp(prefix="pal-vs-mmseg-")
    os.makedirs(work, exist_ok=True)
    cfg = os.path.join(a.pal4vst, CFG)
    if not os.path.isfile(cfg):  # a bare git dir: extract only the config text
        src = os.path.join(work, "src")
        os.makedirs(src, exist_ok=True)
        tar = subprocess.run(["git", f"--git-dir={a.pal4vst}", "archive", "HEAD", "mmsegmentation/configs/pal4vst",
                              "mmsegmentation/configs_common"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=tar, check=True)
        cfg = os.path.join(src, CFG)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    me = os.path.abspath(__file__)
    mm = Worker("mmseg", [a.mmseg_python, me, "_mmseg", work, cfg, str(a.threads)], work, env)
    mm.recv()
    workers = [mm] + [Worker(d, [sys.executable, me, "_project", work, d, str(a.threads)], work, env)
                      for d in a.dtypes]
    for w in workers[1:]:
        w.recv()
    times = {w.name: [] for w in workers}
    for i in range(a.runs):
        for w in workers if i % 2 == 0 else workers[::-1]:
            times[w.name].append(w.ask(f"time {i + 1}")["t"])
        print(json.dumps({"run": i + 1, **{k: round(v[-1], 3) for k, v in times.items()},
                          "load1": round(os.getloadavg()[0], 2)}), flush=True)
    for w in workers:
        w.ask("quit")
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"bench": "vs_mmseg", "runs": a.runs, "threads": a.threads, "median_s": {k: round(v, 3) for k, v in med.items()}}
    if "fp32" in med:
        out["fp32/mmseg"] = round(med["fp32"] / med["mmseg"], 3)
    for d in a.dtypes:
        if d != "fp32":
            out[f"mmseg/{d} (speed-up)"] = round(med["mmseg"] / med[d], 3)
    for when in ("warm", "last"):
        ref = torch.load(os.path.join(work, f"{when}_mmseg.pt"), weights_only=True)
        for d in a.dtypes:
            out[f"{d}_vs_mmseg_{when}"] = agreement(ref, torch.load(os.path.join(work, f"{when}_{d}.pt"), weights_only=True))
    print(json.dumps(out), flush=True)
    for f in os.listdir(work):
        if f.endswith((".pth", ".pt")):
            os.remove(os.path.join(work, f))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_mmseg":
        return mmseg_worker(argv[1], argv[2], int(argv[3])) or 0
    if argv and argv[0] == "_project":
        return project_worker(argv[1], argv[2], int(argv[3])) or 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mmseg-python", required=True)
    p.add_argument("--pal4vst", required=True, help="PAL4VST checkout or bare git dir")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=None)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    return drive(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
