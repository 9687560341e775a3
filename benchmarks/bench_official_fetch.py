"""The official-weights flow at full size: a random-weight checkpoint with exactly the official
PAL4VST Swin-B w12 keys and shapes, in mmseg-0.x layout (state_dict + meta), served by the loopback
fake Drive (tests/fakedrive.py, confirm-form flow), then `pal models download`'s path: download ->
weights_only load -> strict manifest -> finite forward -> safetensors -> atomic rename -> lock file.
Prints sizes, wall time per phase and peak RSS. The real Drive is not reachable from here.

    python benchmarks/bench_official_fetch.py [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="pal-fetch-"))
    os.environ.update({"XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config"),
                       "PAL_REGISTRY": str(work / "registry.json")})
    import torch

    from comfyui_pal.models import create_model, hub

    t0 = time.perf_counter()
    src = work / "best_mIoU_iter_7200.pth"
    if not src.exists():
        torch.manual_seed(0)
        model = create_model("pal4vst-swin-b-w12", aux_head=True)
        torch.save({"meta": {"mmseg_version": "0.30.0 (random-weight stand-in)", "iter": 7200},
                    "state_dict": model.state_dict()}, src)
        del model
    t_make = time.perf_counter() - t0
    Path(os.environ["PAL_REGISTRY"]).write_text(json.dumps({"models": {"fullsize": {
        "source": "gdrive", "file_id": "1FullSizeStandInId_0001", "preset": "pal4vst-swin-b-w12",
        "original_name": src.name, "size_approx": 486_000_000, "filename": "fullsize-swin-b-w12.safetensors"}}}))
    from fakedrive import FakeDrive

    with FakeDrive(lifetime_s=1800) as drive:
        drive.add("1FullSizeStandInId_0001", src.read_bytes(), src.name, mode="confirm")
        os.environ["PAL_GDRIVE_URL"] = drive.url
        t1 = time.perf_counter()
        out = hub.download("fullsize", progress=False)
        t_fetch = time.perf_counter() - t1
        t2 = time.perf_counter()
        again = hub.resolve("fullsize")  # second use: lock-file check (sha256 of the converted file)
        t_again = time.perf_counter() - t2
    rec = hub.read_lock(out.parent)["files"][out.name]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "pth_bytes": src.stat().st_size, "safetensors_bytes": out.stat().st_size,
        "make_random_pth_s": round(t_make, 1), "download_verify_convert_s": round(t_fetch, 1),
        "second_resolve_s": round(t_again, 2), "same_path": again == out,
        "drive_requests": len(drive.requests), "peak_rss_mb": round(peak_mb), "torch_threads": torch.get_num_threads(),
        "original_sha256": rec["original_sha256"], "converted_sha256": rec["sha256"],
    }, indent=1))


if __name__ == "__main__":
    main()
