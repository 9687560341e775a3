"""Iteration-based training (the official recipe by default), evaluation and resume.

`train(TrainConfig(...))` runs single-process or under `torchrun` (DistributedDataParallel;
nccl on GPU, gloo on CPU). State written every `checkpoint_interval` iterations, atomically:
model, optimizer, AMP scaler, iteration, RNG states of every rank and the best metric. The
data order is a pure function of (seed, iteration) (`data.IterSampler`), so `--resume`
replays the same batches and, on CPU, reaches bit-identical weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.preprocess import normalize
from .data import IGNORE_INDEX, DataError, IterSampler, Sample, TrainDataset, discover
from .evaluate import evaluate_model
from .optim import OFFICIAL_CUSTOM_KEYS, LRSchedule, build_optimizer
from .state import (
    BEST,
    LATEST,
    atomic_torch_save,
    last_good,
    load_state,
    rng_state,
    rotate_iter_checkpoints,
    seed_everything,
    set_rng_state,
    unwrap,
)
from .transforms import TrainPipeline


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
    photometric: bool = False  # mmseg PhotoMetricDistortion after the flip (off = the official pipeline)
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
    # Weight of a soft Dice term on the artifact class of the decode output, added to the CE
    # (mmseg's loss_decode=[CE, Dice] pattern). 0 = the official CE-only loss. Dice is computed
    # over the whole batch, so false positives on clean images in the batch lower it too.
    dice_weight: float = 0.0
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
    # parameters whose name starts with one of these stay fixed, e.g. ("backbone.body.conv_stem",
    # "backbone.body.blocks.0"): a pretrained stem needs no training, and skipping its backward
    # (the high-resolution layers) makes a CPU step much cheaper
    freeze_prefixes: tuple[str, ...] = ()
    num_images: int | None = None  # use only N training images (few-shot), picked by seed
    # Clean negatives added to the training images: N pictures with label 0 everywhere, made
    # once into WORK_DIR/clean_replay by `pal synth` (scikit-image pictures, procedural images,
    # depth-of-field blur; plus `clean_replay_folders`). Why: a few-shot set of artifact images
    # alone teaches "everything is artifact" and the clean side is forgotten.
    clean_replay: int = 0
    clean_replay_folders: tuple[str, ...] = ()
    device: str | None = None
    threads: int | None = None
    cache_images: bool = False
    # Recompute the training BatchNorm layers' statistics on this many training pictures at the
    # working size before each validation and checkpoint (training/precise_bn.py). None = auto:
    # 64 when the total batch is below 16 (small-batch statistics of crops mislead eval mode), else 0.
    precise_bn: int | None = None
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


def dice_loss(logits: torch.Tensor, label: torch.Tensor, cls: int = 1, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of class `cls` over the batch (ignored pixels left out): directly the
    overlap the artifact IoU measures, where CE counts each pixel alone."""
    keep = (label != IGNORE_INDEX).float()
    p = torch.softmax(logits.float(), dim=1)[:, cls] * keep
    t = (label == cls).float() * keep
    return 1.0 - (2.0 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


def seg_loss(out: dict, label: torch.Tensor, aux_weight: float = 0.4, avg_non_ignore: bool = False,
             class_weight=None, dice_weight: float = 0.0) -> dict:
    """mmseg decode + auxiliary CE: logits resized (bilinear) to the label, ignore 255.

    As mmseg's `CrossEntropyLoss`: each pixel's CE is scaled by its class weight (if given) and
    the sum is divided by the number of pixels, all of them (`avg_non_ignore=False`, mmseg's
    default: ignored pixels count as 0) or only the non-ignored ones (`avg_non_ignore=True`).
    Weights do not change the denominator, so unit weights give the unweighted loss.
    `dice_weight` > 0 adds `dice_weight * dice_loss` of the decode output ("dice").
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
        if key == "out" and dice_weight:
            losses["dice"] = dice_weight * dice_loss(logits, label)
    losses["total"] = sum(losses.values())
    return losses


def make_clean_replay(out: Path, n: int, seed: int, folders: Sequence[str] = ()) -> list[Sample]:
    """`n` clean training pictures (label 0 everywhere) written to `out` by `pal synth`.

    A pure function of (n, seed, folders): a resumed run rebuilds the same pictures. Bases are the
    package's own offline ones (scikit-image pictures, dead leaves, procedural images) plus the
    pictures in `folders`; a third get a clean depth-of-field blur.
    """
    from .synth import SynthConfig, generate

    for f in folders:
        if not Path(f).is_dir():
            raise DataError(f"--clean-replay-folder {f!r} is not a folder; give a folder of clean pictures")
    generate(SynthConfig(out=os.fspath(out), n_train=int(n), n_val=0, seed=10_000 + int(seed), clean_ratio=1.0,
                         dead_leaves_ratio=0.2, procedural_ratio=0.2, dof_ratio=0.3, folders=tuple(folders)))
    # only this run's pictures: a WORK_DIR reused with a larger N earlier still holds the extra ones
    names = {f"train_{i:05d}" for i in range(int(n))}
    return [s for s in discover(out, "train").samples if s.label is not None and s.name in names]


def select_few(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """n training images picked deterministically (sorted, then a seeded permutation)."""
    samples = sorted(samples, key=lambda s: str(s.image))
    idx = np.random.default_rng([seed, 7]).permutation(len(samples))[:n]
    return [samples[i] for i in sorted(idx)]


def _apply_freeze(model, mode: str, prefixes=()) -> None:
    if prefixes:
        hit = [n for n, p in model.named_parameters() if n.startswith(tuple(prefixes))]
        if not hit:
            raise ValueError(f"--freeze-prefix {list(prefixes)}: no parameter name starts with these "
                             f"(e.g. {next(iter(dict(model.named_parameters())), '')!r})")
        for n, p in model.named_parameters():
            if n.startswith(tuple(prefixes)):
                p.requires_grad_(False)
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


class Trainer:
    """One training run, in the steps `train()` performs: `setup` (runtime, data, model,
    optimizer), `resume`, then per iteration `step`, `log_step`, `validate` and `save`, and
    finally `finish` (result + optional export)."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.rank, self.world, self.local_rank = _dist_info()
        self.log = log or (lambda m: _log(m, self.rank))
        self.best: dict = {"metric": cfg.metric, "value": None, "iter": None}
        self.history: list[dict] = []
        self.start_iter = 0

    # ------------------------------------------------------------------ setup
    def setup(self) -> Trainer:
        self._setup_runtime()
        self._setup_data()
        self._setup_model()
        return self

    def _setup_runtime(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # AdamW's second moments decay into float32 denormals; on x86 CPUs each op on them is
        # ~100x slower (sqrt alone was 22 % of a CPU step). Flushing them to zero changes nothing useful.
        torch.set_flush_denormal(True)
        if cfg.device:
            self.device = torch.device(cfg.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        self.work = Path(cfg.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed + self.rank)

    def _setup_data(self) -> None:
        cfg = self.cfg
        disc = discover(cfg.data, cfg.train_split)
        samples = [s for s in disc.samples if s.label is not None]
        if disc.missing_labels:
            self.log(f"warning: {len(disc.missing_labels)} training images have no label and are skipped "
                     f"(run `pal data check {cfg.data}`)")
        if not samples:
            raise DataError(f"{cfg.data}: no labelled images in split '{cfg.train_split}'")
        if cfg.num_images:
            samples = select_few(samples, cfg.num_images, cfg.seed)
        n_user = len(samples)
        if cfg.dice_weight < 0:
            raise ValueError(f"--dice-weight {cfg.dice_weight}: give 0 (off) or a positive weight")
        if cfg.clean_replay < 0:
            raise ValueError(f"--clean-replay {cfg.clean_replay}: give a number of clean pictures (0 = off)")
        if cfg.clean_replay > 0:
            replay = make_clean_replay(self.work / "clean_replay", cfg.clean_replay, cfg.seed,
                                       cfg.clean_replay_folders)
            self.log(f"clean replay: {len(replay)} clean pictures (label 0) added to {len(samples)} training images")
            samples = list(samples) + replay
        self.n_replay = len(samples) - n_user
        self.samples = samples
        self.val_samples: list[Sample] = []
        if cfg.val_interval > 0:
            try:
                self.val_samples = [s for s in discover(cfg.data, cfg.val_split).samples if s.label is not None]
            except DataError:
                self.val_samples = []
        pipeline = TrainPipeline(cfg.scale, tuple(cfg.ratio_range), cfg.crop_size, cfg.cat_max_ratio, cfg.flip_prob,
                                 photometric=cfg.photometric)
        self.dataset = TrainDataset(samples, pipeline, seed=cfg.seed, cache=cfg.cache_images)

    def _setup_model(self) -> None:
        cfg = self.cfg
        model, prov = build_model(cfg, self.log)
        model.to(self.device)
        if self.world > 1 and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the official configs use SyncBN
        _apply_freeze(model, cfg.freeze, cfg.freeze_prefixes)
        self.model = model
        self.optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.custom_keys())
        self.sched = LRSchedule(cfg.warmup_iters, cfg.warmup_start_factor, cfg.poly_end, cfg.poly_power)
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.model_config = json.loads(json.dumps(unwrap(model).config))
        self.model_config["backbone"].pop("pretrained_path", None)
        self.provenance = dict(prov, training_command=cfg.command, train_config=cfg.public(),
                               train_images=len(self.samples) - self.n_replay,
                               clean_replay_images=self.n_replay, world_size=self.world, torch=torch.__version__)
        synth_meta = Path(cfg.data) / "synth_meta.json"
        if synth_meta.is_file():  # made by `pal synth`: say so in the provenance and the model card
            meta = json.loads(synth_meta.read_text())
            self.provenance["training_data"] = {"kind": "synthetic (pal synth)", "artifact_types": meta.get("types"),
                                                "synth_config": meta.get("config")}

    # ------------------------------------------------------------------ resume
    def resume(self) -> Trainer:
        cfg = self.cfg
        path = None
        if cfg.resume:
            path = Path(cfg.resume) if isinstance(cfg.resume, str) else self.work / LATEST
            if not path.is_file():
                if isinstance(cfg.resume, str):
                    raise FileNotFoundError(f"--resume {path}: no such checkpoint")
                self.log(f"resume: no {path} yet, starting from iteration 0")
                path = None
        if path is not None:
            state = load_state(path)
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.start_iter = int(state["iter"])
            self.best = state.get("best", self.best)
            self.history = state.get("history", [])
            rngs = state["rng"]
            set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])
            self.log(f"resume: {path} at iteration {self.start_iter}")
        self._make_loader()
        return self

    def _make_loader(self) -> None:
        cfg = self.cfg
        self.ddp_model = TrainForward(self.model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(self.ddp_model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                 find_unused_parameters=False)
        sampler = IterSampler(len(self.dataset), cfg.batch_size, cfg.seed, self.rank, self.world,
                              start=self.start_iter * cfg.grad_accum)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
            persistent_workers=False)
        self.data_iter = iter(loader)

    # ------------------------------------------------------------------ one iteration
    def step(self, it: int) -> float:
        """One optimizer step (grad_accum micro-batches) at iteration `it`; returns the loss."""
        cfg = self.cfg
        self.sched.apply(self.optimizer, it, cfg.lr)
        self.optimizer.zero_grad(set_to_none=True)
        pre = self.model_config.get("preprocess", {})
        total = 0.0
        for micro in range(cfg.grad_accum):
            img, label = next(self.data_iter)
            img = img.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            sync_ctx = (self.ddp_model.no_sync() if self.world > 1 and micro < cfg.grad_accum - 1
                        else contextlib.nullcontext())
            with sync_ctx:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    out = self.ddp_model(normalize(img, pre))
                loss = seg_loss(out, label, cfg.aux_weight, cfg.avg_non_ignore, cfg.class_weight,
                                cfg.dice_weight)["total"]
                loss = loss / cfg.grad_accum
                if not torch.isfinite(loss.detach()):
                    raise TrainingDiverged(
                        f"loss is {float(loss.detach())} at iteration {it}; training stopped. Last good "
                        f"checkpoint: {last_good(self.work)}. Lower --lr, use --clip-grad, or --amp off, then "
                        "--resume from it.")
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total

    def _record(self, rec: dict) -> None:
        self.history.append(rec)
        self.log(json.dumps(rec))
        if self.rank == 0:
            with open(self.work / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def inherited_calibration(self) -> dict | None:
        """A fine-tune keeps the operating point of its --init checkpoint (e.g. pal-starter's
        artifact-logit bias): exported without it, the raw network would run at a point nobody chose."""
        init = self.provenance.get("init") or {}
        cal = (init.get("provenance") or {}).get("calibration")
        if not cal or "artifact_logit_bias" not in cal:
            return None
        return {"artifact_logit_bias": float(cal["artifact_logit_bias"]), "inherited_from": init.get("file")}

    def precise_bn_images(self) -> int:
        cfg = self.cfg
        if cfg.precise_bn is not None:
            return max(int(cfg.precise_bn), 0)
        return 64 if cfg.batch_size * cfg.grad_accum * self.world < 16 else 0

    def refresh_bn(self, it: int) -> None:
        """Precise BatchNorm statistics once per iteration, before they are evaluated or saved."""
        n = self.precise_bn_images()
        if not n or getattr(self, "_bn_iter", None) == it:
            return
        from .precise_bn import precise_bn_

        samples = select_few(self.samples, min(n, len(self.samples)), self.cfg.seed)
        precise_bn_(unwrap(self.model), samples, self.cfg.batch_size, self.device)
        self._bn_iter = it

    def validate(self, it: int) -> None:
        """Val metrics on rank 0, best.pt when `cfg.metric` improves; `best` broadcast to all ranks."""
        cfg = self.cfg
        self.refresh_bn(it)
        if self.rank == 0:
            res = evaluate_model(self.model, self.val_samples, self.device)
            value = res.get(cfg.metric)
            rec = {"iter": it, "val": {k: res[k] for k in ("mIoU", "aIoU", "aAcc")}}
            self._record(rec)
            if value is not None and (self.best["value"] is None or value > self.best["value"]):
                self.best = {"metric": cfg.metric, "value": value, "iter": it, "val": rec["val"]}
                atomic_torch_save({"iter": it, "model": unwrap(self.model).state_dict(),
                                   "model_config": self.model_config, "best": self.best}, self.work / BEST)
            _set_train_mode(self.model, cfg.freeze)
        if self.world > 1:
            import torch.distributed as dist

            obj = [self.best]
            dist.broadcast_object_list(obj, src=0)
            self.best = obj[0]

    def save(self, it: int) -> Path:
        """latest.pt (+ iter_N.pt): everything --resume needs, the RNG state of every rank included."""
        cfg = self.cfg
        self.refresh_bn(it)
        rngs = [rng_state()]
        if self.world > 1:
            import torch.distributed as dist

            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        path = self.work / LATEST
        if self.rank == 0:
            state = {"iter": it, "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None, "rng": rngs,
                     "best": self.best, "history": self.history, "model_config": self.model_config,
                     "train_config": cfg.public(), "provenance": self.provenance}
            atomic_torch_save(state, path)
            if cfg.keep_iter_checkpoints:
                rotate_iter_checkpoints(self.work, state, it, cfg.keep_iter_checkpoints)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return path

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        cfg = self.cfg
        self.log(f"train: {len(self.samples)} images, {len(self.val_samples)} val, {self.world} process(es) on "
                 f"{self.device}, batch {cfg.batch_size}x{cfg.grad_accum} accum x{self.world}, iterations "
                 f"{self.start_iter}->{cfg.max_iters}")
        _set_train_mode(self.model, cfg.freeze)
        t0, running, n_run = time.time(), 0.0, 0
        it = self.start_iter
        while it < cfg.max_iters:
            running += self.step(it)
            it += 1
            n_run += 1
            last = it == cfg.max_iters
            if it % cfg.log_interval == 0 or last:
                self._record({"iter": it, "loss": running / n_run, "lr": self.optimizer.param_groups[0]["lr"],
                              "sec_per_iter": (time.time() - t0) / n_run})
                t0, running, n_run = time.time(), 0.0, 0
            if self.val_samples and (it % cfg.val_interval == 0 or last):
                self.validate(it)
            if it % cfg.checkpoint_interval == 0 or last:
                self.save(it)
        return self.finish(it)

    def finish(self, it: int) -> dict:
        cfg = self.cfg
        result = {"work_dir": os.fspath(self.work), "iters": it, "best": self.best,
                  "final_loss": next((h["loss"] for h in reversed(self.history) if "loss" in h), None),
                  "history": [h for h in self.history if "val" in h][-5:]}
        if self.rank == 0 and cfg.export:
            from .export import SYNTHETIC_NOTE, export_safetensors

            src = self.work / BEST if (self.work / BEST).is_file() else self.work / LATEST
            state = load_state(src)
            metrics = {"val": self.best.get("val")} if self.best.get("val") else None
            prov = dict(self.provenance, exported_from=src.name, iteration=state["iter"], best=self.best)
            result["export"] = os.fspath(export_safetensors(
                state["model"], self.model_config, cfg.export, provenance=prov, fp16=cfg.export_fp16,
                metrics=metrics, description=SYNTHETIC_NOTE if "training_data" in self.provenance else None,
                calibration=self.inherited_calibration()))
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        return result


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> dict:
    """Run `cfg` to `cfg.max_iters` (resuming if asked); returns the result summary."""
    return Trainer(cfg, log).setup().resume().run()


class TrainForward(torch.nn.Module):
    """forward() = model.forward_train(): DDP's gradient hooks are set up in forward()."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_train(x)


def fmt_result(res: Mapping) -> str:
    def r(v):
        return None if v is None else (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v)

    return json.dumps({k: (r(v) if not isinstance(v, dict) else v) for k, v in res.items()}, default=str)
