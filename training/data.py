"""Data sets on disk: discovery of the PAL4VST and plain layouts, validation, torch datasets.

Layouts (``root`` = what the user passes as ``--data``):

* PAL4VST ``ArtifactsDataset``: ``images/<split>/**/<name>.jpg`` + ``labels/<split>/**/<name>.png``,
  single-channel labels 0 = clean, 1 = artifact, 255 = ignore.
* plain: ``images/[<split>/]**`` + ``masks/[<split>/]**/<name>.png`` with masks 0/255 (or 0/1).
  Without split folders every image belongs to every split (a warning says so).
* per-task: ``<root>/<task>/`` each holding one of the above layouts.

A sub-folder under the split folder (``images/train/<task>/x.jpg``) or a per-task root names
the sample's *task*; `pal eval` reports IoU per task (the paper's Table 1 rows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMG_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
IGNORE_INDEX = 255
DEFAULT_TASK = "default"


class DataError(ValueError):
    """A data set cannot be used; the message names the path and the fix."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None
    task: str
    label_format: str  # "pal" (0/1/255) or "mask" (0/255 or 0/1)

    @property
    def name(self) -> str:
        return self.image.stem


@dataclass
class Discovery:
    samples: list[Sample] = field(default_factory=list)
    layout: str = ""
    warnings: list[str] = field(default_factory=list)
    orphan_labels: list[Path] = field(default_factory=list)
    missing_labels: list[Path] = field(default_factory=list)


def _files(folder: Path, exts=IMG_EXTS) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts
                  and not p.name.startswith("."))


def _layout_of(root: Path) -> str | None:
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "pal"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "mask"
    return None


def _discover_one(root: Path, split: str, task_prefix: str | None, out: Discovery) -> None:
    layout = _layout_of(root)
    if layout is None:
        return
    out.layout = out.layout or layout
    label_dir_name = "labels" if layout == "pal" else "masks"
    img_dir, lab_dir = root / "images" / split, root / label_dir_name / split
    if not img_dir.is_dir():
        if layout == "mask" and not any((root / "images" / s).is_dir() for s in ("train", "val", "test")):
            img_dir, lab_dir = root / "images", root / "masks"
            out.warnings.append(f"{root}: no split folders (images/{split}/); using every image for '{split}'")
        else:
            return
    labels = {}
    for p in _files(lab_dir, (".png", ".bmp", ".tif", ".tiff")):
        labels[p.relative_to(lab_dir).with_suffix("").as_posix()] = p
    used = set()
    for img in _files(img_dir):
        rel = img.relative_to(img_dir)
        key = rel.with_suffix("").as_posix()
        sub = rel.parent.as_posix()
        task = task_prefix or (sub if sub != "." else DEFAULT_TASK)
        if task_prefix and sub != ".":
            task = f"{task_prefix}/{sub}"
        lab = labels.get(key)
        if lab is None:
            out.missing_labels.append(img)
        else:
            used.add(key)
        out.samples.append(Sample(img, lab, task, layout))
    out.orphan_labels += [p for k, p in labels.items() if k not in used]


def discover(root: str | os.PathLike, split: str = "train") -> Discovery:
    """Find the (image, label, task) triples of one split under `root` (any supported layout)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist")
    out = Discovery()
    if _layout_of(root):
        _discover_one(root, split, None, out)
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if _layout_of(sub):
                _discover_one(sub, split, sub.name, out)
        if out.layout:
            out.layout = "per-task " + out.layout
    if not out.layout:
        raise DataError(
            f"{root}: no data set found. Expected images/<split>/*.jpg + labels/<split>/*.png (PAL4VST), "
            "images/ + masks/ (0/255 masks), or one such folder per task")
    return out


def read_label(path: Path, label_format: str = "pal") -> np.ndarray:
    """Label as uint8 HxW with 0 clean, 1 artifact, 255 ignore (masks: >=128 -> 1)."""
    arr = _read_label_raw(path)
    if label_format == "mask":
        if arr.max(initial=0) <= 1:
            return arr.astype(np.uint8)
        return (arr >= 128).astype(np.uint8)
    return arr


def _read_label_raw(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
            arr = np.asarray(im.convert("RGB"))
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                raise DataError(f"{path}: label is a colour image (mode {im.mode}); labels must be "
                                "single-channel PNGs with class indices (0 clean, 1 artifact, 255 ignore)")
            return arr[..., 0].copy()
        arr = np.asarray(im)  # 'P' gives palette indices, like mmseg's unchanged read
    if arr.ndim != 2:
        raise DataError(f"{path}: label has shape {arr.shape}; expected a single-channel image")
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
            raise DataError(f"{path}: label values exceed 0..255 (dtype {arr.dtype})")
        arr = arr.astype(np.uint8)
    return arr


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    from ..core.imageio import load_image

    img = load_image(sample.image)
    label = read_label(sample.label, sample.label_format) if sample.label is not None else None
    if label is not None and label.shape != img.shape[:2]:
        raise DataError(f"{sample.image}: image is {img.shape[1]}x{img.shape[0]} but its label "
                        f"{sample.label} is {label.shape[1]}x{label.shape[0]}; labels must match the image size")
    return img, label


# --------------------------------------------------------------------------- pal data check


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()  # catches truncated/corrupt files without decoding everything twice
    with Image.open(path) as im:
        im.load()
        return im.size[1], im.size[0]


def check(root: str | os.PathLike, splits: Sequence[str] = ("train", "val", "test")) -> dict:
    """Validate a data set before training. Returns a report dict; report['ok'] is False on errors.

    Errors: unreadable images or labels, images without labels, image/label size mismatch,
    label values outside {0,1,255} (PAL layout) or {0,255}/{0,1} (mask layout), colour labels.
    Warnings: labels without images, PAL labels that look like 0/255 masks, empty splits.
    """
    root = Path(root)
    report: dict = {"root": os.fspath(root), "splits": {}, "errors": [], "warnings": [], "ok": True}
    errors, warnings = report["errors"], report["warnings"]
    found_any = False
    for split in splits:
        try:
            disc = discover(root, split)
        except DataError as e:
            errors.append({"path": os.fspath(root), "problem": str(e)})
            break
        warnings += [{"path": os.fspath(root), "problem": w} for w in disc.warnings]
        tasks: dict[str, int] = {}
        n_art = 0
        for s in disc.samples:
            tasks[s.task] = tasks.get(s.task, 0) + 1
            try:
                hw = _image_size(s.image)
            except Exception as e:  # PIL raises many types for broken files
                errors.append({"path": os.fspath(s.image), "problem": f"unreadable image: {e}"})
                continue
            if s.label is None:
                continue
            try:
                lab = _read_label_raw(s.label)
            except DataError as e:
                errors.append({"path": os.fspath(s.label), "problem": str(e)})
                continue
            except Exception as e:
                errors.append({"path": os.fspath(s.label), "problem": f"unreadable label: {e}"})
                continue
            if lab.shape != hw:
                errors.append({"path": os.fspath(s.label), "problem":
                               f"size mismatch: label {lab.shape[1]}x{lab.shape[0]}, image {hw[1]}x{hw[0]}"})
            vals = set(np.unique(lab).tolist())
            allowed = {0, 1, 255} if s.label_format == "pal" else ({0, 1} if vals <= {0, 1} else {0, 255})
            bad = sorted(vals - allowed)
            if bad:
                shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
                fix = ("PAL4VST labels hold 0 = clean, 1 = artifact, 255 = ignore"
                       if s.label_format == "pal" else "masks must be binary 0/255 (or 0/1)")
                errors.append({"path": os.fspath(s.label), "problem": f"label values outside {sorted(allowed)}: "
                               f"{shown}; {fix}"})
            elif s.label_format == "pal" and 1 not in vals and 255 in vals and (lab == 255).mean() > 0.001:
                warnings.append({"path": os.fspath(s.label), "problem":
                                 "label has 0 and 255 but no 1: a 0/255 mask read as clean + ignore; "
                                 "put 0/255 masks in masks/ (plain layout) or write 1 for artifacts"})
            if 1 in vals or (s.label_format == "mask" and 255 in vals):
                n_art += 1
        errors += [{"path": os.fspath(p), "problem": "image has no label (expected "
                    f"{'labels' if disc.layout.endswith('pal') else 'masks'}/<split>/<same name>.png)"}
                   for p in disc.missing_labels]
        warnings += [{"path": os.fspath(p), "problem": "label without an image (ignored)"}
                     for p in disc.orphan_labels]
        if disc.samples:
            found_any = True
        report["splits"][split] = {"images": len(disc.samples), "with_artifacts": n_art, "tasks": tasks,
                                   "layout": disc.layout}
    if not found_any and not errors:
        errors.append({"path": os.fspath(root), "problem": f"no images in any of the splits {list(splits)}"})
    report["ok"] = not errors
    return report


# --------------------------------------------------------------------------- torch data sets


class TrainDataset:
    """Indexable by (sample index, augmentation seed): the sampler owns all randomness."""

    def __init__(self, samples: Sequence[Sample], pipeline, seed: int = 0, cache: bool = False):
        self.samples = list(samples)
        self.pipeline = pipeline
        self.seed = seed
        self._cache: dict[int, tuple] = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        item = load_sample(self.samples[i])
        if item[1] is None:
            raise DataError(f"{self.samples[i].image}: training needs a label")
        if self._cache is not None:
            self._cache[i] = item
        return item

    def __getitem__(self, key):
        import torch

        i, pos = key
        img, label = self._load(i)
        rng = np.random.default_rng([self.seed, pos])
        img, label = self.pipeline(img, label, rng)
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(label.astype(np.int64))


class IterSampler:
    """Infinite, resumable batch sampler for iteration-based training (incl. DDP sharding).

    Global sample position p = (micro_batch * world + rank) * batch + j walks through epochs of
    per-epoch permutations `default_rng([seed, epoch]).permutation(n)`; the pair (index, p)
    goes to the data set, which seeds that sample's augmentation with p. Resuming at a given
    micro-batch therefore replays exactly the same data as an uninterrupted run.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        if n <= 0:
            raise DataError("the training split is empty")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.start = start
        self._perm_epoch, self._perm = -1, None

    def _index(self, pos: int) -> int:
        epoch, k = divmod(pos, self.n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[k])

    def __iter__(self):
        m = self.start
        while True:
            base = (m * self.world + self.rank) * self.batch_size
            yield [(self._index(p), p) for p in range(base, base + self.batch_size)]
            m += 1
