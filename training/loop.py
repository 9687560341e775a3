"""Iteration-based training (the official recipe by default), evaluation and resume.

`train(TrainConfig(...))` runs single-process or under `torchrun` (DistributedDataParallel;
nccl on GPU, gloo on CPU). State written every `checkpoint_interval` iterations, atomically:
model, optimizer, AMP scaler, iteration, RNG states of every rank and the best metric. The
data order is a pure function of (seed, iteration) (`data.IterSampler`), so `--resume`
replays the same batches and, on CPU, reaches bit-identical weights.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, DataError, IterSampler, Sample, TrainDataset, discover, load_sample
from .optim import OFFICIAL_CUSTOM_KEYS, LRSchedule, build_optimizer
from .transforms import TrainPipeline, test_resize

LATEST = "latest.pt"
BEST = "best.pt"


class TrainingDiverged(RuntimeError):
    """Loss became NaN/inf; the message names the last good checkpoint."""


@dataclass
class TrainConfig:
    data: str
    work_dir: str
    model: str | dict | None = None  # preset name, config dict or JSON path; None = from --init
    init: str | None = None  # .pth / .safetensors (project or official) to start from
    backbone_weights: str | None = None  # local timm weight file for a timm backbone
    max_iters: int = 20000
    batch_size: int = 8  # per process
    grad_accum: int = 1
    crop_size: int = 512
    scale: int = 512
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    head_lr_mult: float = 10.0
    warmup_iters: int = 1500
    warmup_start_factor: float = 1e-6
    poly_end: int = 160000
    poly_power: float = 1.0
    aux_weight: float = 0.4
    avg_non_ignore: bool = False  # mmseg default: CE mean over all pixels, ignored ones count as 0
    # Per-class CE weights (mmseg semantics, see seg_loss); None = the official unweighted loss.
    # A few % artifact pixels (and many clean images) otherwise pull the model to "all clean".
    class_weight: tuple[float, ...] | None = None
    clip_grad: float | None = None
    amp: str = "auto"  # auto (fp16 on CUDA) | off | fp16 | bf16
    num_workers: int = 2
    seed: int = 0
    val_interval: int = 500
    val_split: str = "val"
    train_split: str = "train"
    metric: str = "mIoU"  # best checkpoint by this val metric (mIoU or aIoU)
    checkpoint_interval: int = 500
    keep_iter_checkpoints: int = 0  # also keep iter_N.pt files (0 = only latest/best)
    log_interval: int = 50
    resume: bool | str = False  # True = work_dir/latest.pt, or a path
    freeze: str = "none"  # none | backbone | backbone_bn (freeze BN statistics only)
    num_images: int | None = None  # use only N training images (few-shot), picked by seed
    device: str | None = None
    threads: int | None = None
    cache_images: bool = False
    export: str | None = None  # write best (or final) weights as .safetensors here
    export_fp16: bool = True
    command: str | None = None  # the command line, recorded in provenance
    _custom_keys: dict = field(default_factory=lambda: dict(OFFICIAL_CUSTOM_KEYS))

    def custom_keys(self) -> dict:
        keys = {k: dict(v) for k, v in self._custom_keys.items()}
        keys["head"]["lr_mult"] = self.head_lr_mult
        return keys

    def public(self) -> dict:
        d = asdict(self)
        d.pop("_custom_keys")
        return d


# --------------------------------------------------------------------------- helpers


def _dist_info() -> tuple[int, int, int]:
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _log(msg: str, rank: int = 0) -> None:
    if rank == 0:
        print(msg, file=sys.stderr, flush=True)


def load_model_config(model) -> dict | None:
    if model is None or isinstance(model, Mapping):
        return dict(model) if model else None
    if isinstance(model, str) and model.endswith(".json"):
        return json.loads(Path(model).read_text())
    from ..models.factory import PRESETS

    if model in PRESETS:
        return model  # type: ignore[return-value]
    raise ValueError(f"--model {model!r}: not a preset ({', '.join(sorted(PRESETS))}) nor a .json config file")


def build_model(cfg: TrainConfig, log=_log) -> tuple[torch.nn.Module, dict]:
    """Create the model (with aux head) and apply --init / --backbone-weights. Returns (model, provenance)."""
    from ..models.factory import create_model

    prov: dict = {}
    model_cfg = load_model_config(cfg.model)
    init_sd = None
    if cfg.init:
        from ..models.checkpoint import file_sha256, load_checkpoint

        init_path = Path(cfg.init)
        if not init_path.is_file():  # a registry name such as "pal-starter"
            from ..models.detector import resolve_source

            init_path = resolve_source(cfg.init)
        init_sd, init_config, init_prov = _load_init(init_path, load_checkpoint)
        prov["init"] = {"file": init_path.name, "sha256": file_sha256(init_path),
                        "provenance": init_prov}
        if model_cfg is None:
            model_cfg = init_config
    if model_cfg is None:
        raise ValueError("give --model (a preset or a config .json) or --init (a checkpoint to start from)")
    if cfg.backbone_weights:
        if isinstance(model_cfg, str):
            from ..models.factory import PRESETS

            model_cfg = json.loads(json.dumps(PRESETS[model_cfg]))
        if model_cfg["backbone"].get("type") != "timm":
            raise ValueError("--backbone-weights applies to timm backbones; for Swin/ConvNeXt start from a "
                             "full checkpoint with --init")
        model_cfg = json.loads(json.dumps(model_cfg))
        model_cfg["backbone"]["pretrained_path"] = str(cfg.backbone_weights)
        from ..models.checkpoint import file_sha256

        prov["backbone_weights"] = {"file": Path(cfg.backbone_weights).name,
                                    "sha256": file_sha256(cfg.backbone_weights)}
    model = create_model(model_cfg, aux_head=True)
    if init_sd is not None:
        own = model.state_dict()
        load = {k: v for k, v in init_sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        skipped = sorted(k for k in init_sd if k not in load)
        if not load:
            raise ValueError(f"--init {cfg.init}: none of its tensors fit the model {model.config.get('name', '')}; "
                             "pass the matching --model or omit --model to use the checkpoint's own config")
        missing = sorted(k for k in own if k not in load)
        model.load_state_dict(load, strict=False)
        log(f"init: loaded {len(load)}/{len(own)} tensors from {cfg.init}"
            + (f"; {len(missing)} left at random init (e.g. {missing[:3]})" if missing else "")
            + (f"; {len(skipped)} checkpoint tensors unused (e.g. {skipped[:3]})" if skipped else ""))
    return model, prov


def load_state(path) -> dict:
    """Read a `pal train` state (latest.pt/best.pt) with `weights_only=True`.

    Only the plain types such a state holds are allowed (numpy arrays of the RNG state, torch's
    version string), so a malicious `.pt` passed to --init or --resume cannot run code.
    """
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64)),
               type(np.dtype(np.int64)), torch.torch_version.TorchVersion]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray._reconstruct)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_init(path, load_checkpoint):
    """A checkpoint file, or a `pal train` state (latest.pt/best.pt: keeps the aux head too)."""
    p = Path(path)
    if p.suffix == ".pt" and p.is_file():
        try:
            obj = load_state(p)
        except Exception:  # noqa: BLE001 - e.g. a TorchScript archive: let load_checkpoint explain
            obj = None
        if isinstance(obj, dict) and "model" in obj and "model_config" in obj:
            return obj["model"], obj["model_config"], dict(obj.get("provenance") or {}, source_format="pal-train-state")
    return load_checkpoint(path)


def _amp_dtype(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 or off on CPU")
    return torch.float16


def seg_loss(out: dict, label: torch.Tensor, aux_weight: float = 0.4, avg_non_ignore: bool = False,
             class_weight=None) -> dict:
    """mmseg decode + auxiliary CE: logits resized (bilinear) to the label, ignore 255.

    As mmseg's `CrossEntropyLoss`: each pixel's CE is scaled by its class weight (if given) and
    the sum is divided by the number of pixels, all of them (`avg_non_ignore=False`, mmseg's
    default: ignored pixels count as 0) or only the non-ignored ones (`avg_non_ignore=True`).
    Weights do not change the denominator, so unit weights give the unweighted loss.
    """
    losses = {}
    w = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=label.device)
    for key, weight in (("out", 1.0), ("aux", aux_weight)):
        logits = out.get(key)
        if logits is None or weight == 0:
            continue
        logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        ce = F.cross_entropy(logits, label, weight=w, ignore_index=IGNORE_INDEX, reduction="none")
        denom = (label != IGNORE_INDEX).sum().clamp(min=1) if avg_non_ignore else label.numel()
        losses[key] = weight * ce.sum() / denom
    losses["total"] = sum(losses.values())
    return losses


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Mapping) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_torch_save(obj, path: Path) -> None:
    from ..core.imageio import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def select_few(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """n training images picked deterministically (sorted, then a seeded permutation)."""
    samples = sorted(samples, key=lambda s: str(s.image))
    idx = np.random.default_rng([seed, 7]).permutation(len(samples))[:n]
    return [samples[i] for i in sorted(idx)]


# --------------------------------------------------------------------------- evaluation


class IoUAccumulator:
    """mmseg IoUMetric: intersections and unions summed over the whole data set, per task."""

    def __init__(self, num_classes: int = 2):
        self.nc = num_classes
        self.tasks: dict[str, np.ndarray] = {}  # task -> [4, nc]: intersect, union, pred, label areas
        self.par: dict[str, list[tuple[float, float]]] = {}

    def add(self, pred: np.ndarray, label: np.ndarray, task: str = "default",
            pred_par: float | None = None) -> None:
        valid = label != IGNORE_INDEX
        p, t = pred[valid].astype(np.int64), label[valid].astype(np.int64)
        inter = np.bincount(t[p == t], minlength=self.nc)[: self.nc]
        area_p = np.bincount(p, minlength=self.nc)[: self.nc]
        area_t = np.bincount(t, minlength=self.nc)[: self.nc]
        acc = self.tasks.setdefault(task, np.zeros((4, self.nc), np.int64))
        acc += np.stack([inter, area_p + area_t - inter, area_p, area_t])
        gt_par = float((label == 1).mean())
        self.par.setdefault(task, []).append((pred_par if pred_par is not None else float((pred == 1).mean()),
                                              gt_par))

    @staticmethod
    def _scores(acc: np.ndarray) -> dict:
        inter, union = acc[0].astype(np.float64), acc[1].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, np.nan)
        return {"aIoU": None if np.isnan(iou[1]) else float(iou[1] * 100),
                "bIoU": None if np.isnan(iou[0]) else float(iou[0] * 100),
                "mIoU": float(np.nanmean(iou) * 100) if not np.all(np.isnan(iou)) else None,
                "aAcc": float(inter.sum() / max(acc[3].sum(), 1) * 100)}

    def result(self) -> dict:
        out: dict = {"per_task": {}}
        total = np.zeros((4, self.nc), np.int64)
        for task, acc in sorted(self.tasks.items()):
            pars = np.array(self.par[task])
            out["per_task"][task] = dict(self._scores(acc), n=len(pars),
                                         par_pred_mean=float(pars[:, 0].mean()),
                                         par_pred_median=float(np.median(pars[:, 0])),
                                         par_gt_mean=float(pars[:, 1].mean()))
            total += acc
        out.update(self._scores(total))
        tasks = [v for v in out["per_task"].values() if v["aIoU"] is not None]
        out["aIoU_task_mean"] = float(np.mean([v["aIoU"] for v in tasks])) if tasks else None
        all_par = np.concatenate([np.array(v) for v in self.par.values()]) if self.par else np.zeros((0, 2))
        out["n"] = int(len(all_par))
        if len(all_par):
            out["par_pred_mean"] = float(all_par[:, 0].mean())
            out["par_gt_mean"] = float(all_par[:, 1].mean())
        return out


def _normalise(x_u8: torch.Tensor, preprocess: Mapping) -> torch.Tensor:
    mean = torch.tensor(preprocess.get("mean", [123.675, 116.28, 103.53]), device=x_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.get("std", [58.395, 57.12, 57.375]), device=x_u8.device).view(1, 3, 1, 1)
    return (x_u8.float() - mean) / std


@torch.no_grad()
def evaluate_model(model, samples: Sequence[Sample], device=None, size=None, resize: str | None = None,
                   overlay_dir: str | None = None, n_overlays: int = 0, log=None) -> dict:
    """Artifact IoU / mIoU / PAR of `model` (an EncoderDecoder) on labelled samples.

    Test pipeline: resize to the config's input size (default 512x512, no ratio kept), logits
    bilinearly resized to the label's size, argmax (mmseg). PAR is on the working-size map.
    """
    model = _unwrap(model)
    device = device or next(model.parameters()).device
    pre = model.config.get("preprocess", {}) if hasattr(model, "config") else {}
    size = size or tuple(pre.get("size") or (512, 512))
    resize = resize or pre.get("resize", "bilinear")
    was_training = model.training
    model.eval()
    acc = IoUAccumulator()
    written = 0
    try:
        for k, s in enumerate(samples):
            img, label = load_sample(s)
            if label is None:
                raise DataError(f"{s.image}: evaluation needs a label")
            x = torch.from_numpy(np.array(test_resize(img, size, resize))).permute(2, 0, 1)[None].to(device)
            logits = model(_normalise(x, pre))
            pred_work = logits.argmax(1)[0]
            pred_par = float((pred_work == 1).float().mean())
            full = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)
            pred = full.argmax(1)[0].cpu().numpy().astype(np.uint8)
            acc.add(pred, label, s.task, pred_par)
            if overlay_dir and written < n_overlays:
                _save_overlay(img, pred, label, Path(overlay_dir) / f"{s.task.replace('/', '_')}_{s.name}.jpg")
                written += 1
            if log and (k + 1) % 50 == 0:
                log(f"eval: {k + 1}/{len(samples)}")
    finally:
        model.train(was_training)
    return acc.result()


@torch.no_grad()
def calibrate_bias(model, samples: Sequence[Sample], shifts=None, device=None) -> tuple[float, dict]:
    """Artifact-logit offset that maximises artifact IoU on `samples` (threshold moving).

    Adding `delta` to decode_head.conv_seg.bias[1] - bias[0] makes argmax (threshold 0.5 on
    softmax) equal thresholding the old probability at sigmoid(-delta). Returns (delta, {delta: aIoU}).
    """
    model = _unwrap(model)
    device = device or next(model.parameters()).device
    pre = model.config.get("preprocess", {})
    size = tuple(pre.get("size") or (512, 512))
    shifts = list(shifts if shifts is not None else np.round(np.arange(-1.0, 3.01, 0.25), 2))
    inter = dict.fromkeys(shifts, 0)
    union = dict.fromkeys(shifts, 0)
    was_training = model.training
    model.eval()
    try:
        for s in samples:
            img, label = load_sample(s)
            x = torch.from_numpy(np.array(test_resize(img, size, pre.get("resize", "bilinear")))).permute(2, 0, 1)
            logits = model(_normalise(x[None].to(device), pre))
            full = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)[0]
            margin = (full[1] - full[0]).cpu().numpy()
            valid, gt = label != IGNORE_INDEX, label == 1
            for d in shifts:
                pred = (margin + d > 0) & valid
                inter[d] += int((pred & gt).sum())
                union[d] += int(((pred | gt) & valid).sum())
    finally:
        model.train(was_training)
    table = {d: 100.0 * inter[d] / max(union[d], 1) for d in shifts}
    best = max(shifts, key=lambda d: (table[d], -abs(d)))
    return float(best), table


def apply_bias_shift(state_dict: dict, delta: float) -> dict:
    """Copy of `state_dict` with the artifact logit of decode_head.conv_seg raised by `delta`."""
    sd = dict(state_dict)
    b = sd["decode_head.conv_seg.bias"].clone()
    b[1] += delta
    sd["decode_head.conv_seg.bias"] = b
    return sd


def _save_overlay(img: np.ndarray, pred: np.ndarray, label: np.ndarray, path: Path) -> None:
    """Side by side: prediction overlay (official magenta) | ground truth overlay."""
    from ..core.imageio import save_image_atomic
    from ..core.par import overlay

    left = overlay(img, pred == 1)
    right = overlay(img, label == 1)
    right[label == IGNORE_INDEX] = (right[label == IGNORE_INDEX] * 0.5 + np.array([0, 127, 0])).astype(np.uint8)
    save_image_atomic(np.concatenate([left, right], axis=1), path)


# --------------------------------------------------------------------------- training


def _apply_freeze(model, mode: str) -> None:
    if mode == "none":
        return
    if mode not in ("backbone", "backbone_bn"):
        raise ValueError(f"--freeze {mode!r}: choose none, backbone or backbone_bn")
    if mode == "backbone":
        for p in model.backbone.parameters():
            p.requires_grad_(False)


def _set_train_mode(model, freeze: str) -> None:
    model.train()
    if freeze in ("backbone", "backbone_bn"):
        model.backbone.eval()  # frozen BatchNorm statistics (and no drop-path in a frozen backbone)


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> dict:
    rank, world, local_rank = _dist_info()
    logf = log or (lambda m: _log(m, rank))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # AdamW's second moments decay into float32 denormals; on x86 CPUs each op on them is ~100x
    # slower (sqrt alone was 22 % of a CPU step). Flushing them to zero changes nothing useful.
    torch.set_flush_denormal(True)
    if cfg.device:
        device = torch.device(cfg.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True

    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)
    np.random.seed((cfg.seed + rank) % 2**32)
    random.seed(cfg.seed + rank)

    # ---- data
    disc = discover(cfg.data, cfg.train_split)
    samples = [s for s in disc.samples if s.label is not None]
    if disc.missing_labels:
        logf(f"warning: {len(disc.missing_labels)} training images have no label and are skipped "
             f"(run `pal data check {cfg.data}`)")
    if not samples:
        raise DataError(f"{cfg.data}: no labelled images in split '{cfg.train_split}'")
    if cfg.num_images:
        samples = select_few(samples, cfg.num_images, cfg.seed)
    val_samples: list[Sample] = []
    if cfg.val_interval > 0:
        try:
            val_samples = [s for s in discover(cfg.data, cfg.val_split).samples if s.label is not None]
        except DataError:
            val_samples = []
    pipeline = TrainPipeline(cfg.scale, tuple(cfg.ratio_range), cfg.crop_size, cfg.cat_max_ratio, cfg.flip_prob)
    dataset = TrainDataset(samples, pipeline, seed=cfg.seed, cache=cfg.cache_images)

    # ---- model + optimizer
    model, prov = build_model(cfg, logf)
    model.to(device)
    if world > 1 and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the official configs use SyncBN
    _apply_freeze(model, cfg.freeze)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.custom_keys())
    sched = LRSchedule(cfg.warmup_iters, cfg.warmup_start_factor, cfg.poly_end, cfg.poly_power)
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    model_config = json.loads(json.dumps(_unwrap(model).config))
    model_config["backbone"].pop("pretrained_path", None)

    start_iter, best = 0, {"metric": cfg.metric, "value": None, "iter": None}
    history: list[dict] = []
    resume_path = None
    if cfg.resume:
        resume_path = Path(cfg.resume) if isinstance(cfg.resume, str) else work / LATEST
        if not resume_path.is_file():
            if isinstance(cfg.resume, str):
                raise FileNotFoundError(f"--resume {resume_path}: no such checkpoint")
            logf(f"resume: no {resume_path} yet, starting from iteration 0")
            resume_path = None
    if resume_path is not None:
        state = load_state(resume_path)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iter"])
        best = state.get("best", best)
        history = state.get("history", [])
        rngs = state["rng"]
        _set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
        logf(f"resume: {resume_path} at iteration {start_iter}")

    ddp_model = TrainForward(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(ddp_model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=False)

    sampler = IterSampler(len(dataset), cfg.batch_size, cfg.seed, rank, world, start=start_iter * cfg.grad_accum)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        persistent_workers=False)
    data_iter = iter(loader)

    provenance = dict(prov, training_command=cfg.command, train_config=cfg.public(),
                      train_images=len(samples), world_size=world, torch=torch.__version__)
    synth_meta = Path(cfg.data) / "synth_meta.json"
    if synth_meta.is_file():  # made by `pal synth`: say so in the provenance and the model card
        meta = json.loads(synth_meta.read_text())
        provenance["training_data"] = {"kind": "synthetic (pal synth)", "artifact_types": meta.get("types"),
                                       "synth_config": meta.get("config")}

    def save_state(it: int) -> Path:
        rngs = [_rng_state()]
        if world > 1:
            import torch.distributed as dist

            gathered: list = [None] * world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        path = work / LATEST
        if rank == 0:
            state = {"iter": it, "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rngs,
                     "best": best, "history": history, "model_config": model_config,
                     "train_config": cfg.public(), "provenance": provenance}
            _atomic_torch_save(state, path)
            if cfg.keep_iter_checkpoints:
                _atomic_torch_save(state, work / f"iter_{it}.pt")
                olds = sorted(work.glob("iter_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
                for old in olds[: -cfg.keep_iter_checkpoints]:
                    old.unlink(missing_ok=True)
        return path

    def last_good() -> str:
        p = work / LATEST
        if p.is_file():
            it = load_state(p)["iter"]
            return f"{p} (iteration {it})"
        return "none written yet"

    logf(f"train: {len(samples)} images, {len(val_samples)} val, {world} process(es) on {device}, "
         f"batch {cfg.batch_size}x{cfg.grad_accum} accum x{world}, iterations {start_iter}->{cfg.max_iters}")
    pre = model_config.get("preprocess", {})
    _set_train_mode(model, cfg.freeze)
    t0, running, n_run = time.time(), 0.0, 0
    it = start_iter
    while it < cfg.max_iters:
        sched.apply(optimizer, it, cfg.lr)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            img, label = next(data_iter)
            img, label = img.to(device, non_blocking=True), label.to(device, non_blocking=True)
            x = _normalise(img, pre)
            sync_ctx = (ddp_model.no_sync() if world > 1 and micro < cfg.grad_accum - 1
                        else _nullcontext())
            with sync_ctx:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = ddp_model(x)
                losses = seg_loss(out, label, cfg.aux_weight, cfg.avg_non_ignore, cfg.class_weight)
                loss = losses["total"] / cfg.grad_accum
                if not torch.isfinite(loss.detach()):
                    raise TrainingDiverged(
                        f"loss is {float(loss.detach())} at iteration {it}; training stopped. Last good "
                        f"checkpoint: {last_good()}. Lower --lr, use --clip-grad, or --amp off, then "
                        "--resume from it.")
                scaler.scale(loss).backward()
            total += float(loss.detach())
        if cfg.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        it += 1
        running += total
        n_run += 1
        if it % cfg.log_interval == 0 or it == cfg.max_iters:
            rec = {"iter": it, "loss": running / n_run, "lr": optimizer.param_groups[0]["lr"],
                   "sec_per_iter": (time.time() - t0) / n_run}
            history.append(rec)
            logf(json.dumps(rec))
            if rank == 0:
                with open(work / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            t0, running, n_run = time.time(), 0.0, 0
        if val_samples and (it % cfg.val_interval == 0 or it == cfg.max_iters):
            if rank == 0:
                res = evaluate_model(model, val_samples, device)
                value = res.get(cfg.metric)
                rec = {"iter": it, "val": {k: res[k] for k in ("mIoU", "aIoU", "aAcc")}}
                history.append(rec)
                logf(json.dumps(rec))
                with open(work / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if value is not None and (best["value"] is None or value > best["value"]):
                    best = {"metric": cfg.metric, "value": value, "iter": it, "val": rec["val"]}
                    _atomic_torch_save({"iter": it, "model": _unwrap(model).state_dict(),
                                        "model_config": model_config, "best": best}, work / BEST)
                _set_train_mode(model, cfg.freeze)
            if world > 1:
                import torch.distributed as dist

                obj = [best]
                dist.broadcast_object_list(obj, src=0)
                best = obj[0]
        if it % cfg.checkpoint_interval == 0 or it == cfg.max_iters:
            save_state(it)
            if world > 1:
                import torch.distributed as dist

                dist.barrier()

    result = {"work_dir": os.fspath(work), "iters": it, "best": best,
              "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
              "history": [h for h in history if "val" in h][-5:]}
    if rank == 0 and cfg.export:
        from .export import SYNTHETIC_NOTE, export_safetensors

        src = work / BEST if (work / BEST).is_file() else work / LATEST
        state = load_state(src)
        metrics = {"val": best.get("val")} if best.get("val") else None
        result["export"] = os.fspath(export_safetensors(
            state["model"], model_config, cfg.export, provenance=dict(provenance, exported_from=src.name,
                                                                      iteration=state["iter"], best=best),
            fp16=cfg.export_fp16, metrics=metrics,
            description=SYNTHETIC_NOTE if "training_data" in provenance else None))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return result


class TrainForward(torch.nn.Module):
    """forward() = model.forward_train(): DDP's gradient hooks are set up in forward()."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_train(x)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def fmt_result(res: Mapping) -> str:
    def r(v):
        return None if v is None else (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v)

    return json.dumps({k: (r(v) if not isinstance(v, dict) else v) for k, v in res.items()}, default=str)
