"""Streaming unlabeled CT crops: two views per sample, reproducible from the sample's index alone.

Why index-addressed randomness: every random choice of a sample (which volume, which slice, where
the crops lie, the intensity jitter, the block masks) is drawn from a generator seeded with
(seed, sample index). Any number of loader workers, DDP ranks, or a run stopped and continued
(`--continue`) then see exactly the same samples as one uninterrupted run, and no loader state
has to be checkpointed: the step counter is enough.

Streaming: volumes are read on demand through `sarco_nn.image_io.read_image` (NIfTI/MHA/NRRD or a
DICOM series folder, the readers of `sarco convert`), reoriented with `to_canonical` (LPS, axial
slice k = array[k]), resampled, windowed with `constants.CT_WINDOW_HU` to [0, 1] and cropped to the
body (voxels above the window's floor, as the official CropForeground). Each loader process keeps
only `cache_volumes` of them, so an archive of thousands of CTs never has to fit in memory.
A file that cannot be read is skipped with one warning naming it; the sample takes the next
volume of the same shuffled pass.

2D (`dims=2`): one axial slice per sample, drawn among the slices with at least
`min_body_area_cm2` of body (the abdomen, not the neck or head; a volume with no such slice
offers its slices with at least half its largest body area). 3D: sub-volumes. As in the official
loader, a region of 4/3 the crop size is chosen first and both views are cut inside it, so the
two views overlap partly.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarco_nn.constants import IMAGE_SUFFIXES
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.hashing import sha256_text
from sarco_nn.pretraining.config import PretrainConfig
from sarco_nn.pretraining.masking import random_block_mask
from sarco_nn.windowing import apply_window

__all__ = [
    "MAX_RECORDED_TRIES", "PreparedVolume", "StepSampler", "UnlabeledCTDataset", "discover_volumes",
    "file_list_sha256", "prepare_volume", "sample_indices", "two_views"
]

log = logging.getLogger("sarco_nn.pretraining")

#: Unreadable volumes one sample records (the loader keeps trying beyond, up to all volumes).
MAX_RECORDED_TRIES = 8
_DICOM_MAGIC_OFFSET = 128


# ----------------------------------------------------------------------------- discovery
def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def discover_volumes(root: Path) -> list[Path]:
    """Every CT below `root`: image files (NIfTI/MHA/NRRD) and folders holding DICOM files (one series each)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder of CT volumes", root, "give the folder holding the unlabeled CTs")
    found: list[Path] = []
    for folder in sorted([root] + [p for p in root.rglob("*") if p.is_dir()]):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
        found.extend(images)
        if any(_is_dicom_file(p) for p in files if p not in images):
            found.append(folder)
    if not found:
        raise InputError("no CT volumes found (NIfTI/MHA/NRRD files or DICOM series folders)", root,
                         "put the unlabeled CTs in this folder")
    return found


def file_list_sha256(paths: list[Path], root: Path) -> str:
    """SHA-256 of the sorted relative paths: which data a pretrained encoder saw, without listing it."""
    base = Path(root).absolute()  # not resolve(): symlinked volumes stay inside the folder
    names = sorted(Path(p).absolute().relative_to(base).as_posix() for p in paths)
    return sha256_text("\n".join(names))


# ----------------------------------------------------------------------------- one volume
@dataclass
class PreparedVolume:
    """A volume in window units [0, 1], (z, y, x), body-cropped; `slices`: 2D candidate indices."""

    array: np.ndarray
    slices: np.ndarray


def _resample(image, spacing_xyz: tuple[float, float, float]):
    import SimpleITK as sitk

    old_sp = np.array(image.GetSpacing(), dtype=float)
    new_sp = np.array(spacing_xyz, dtype=float)
    if np.allclose(old_sp, new_sp, rtol=1e-3):
        return image
    size = [max(int(round(n * o / s)), 1) for n, o, s in zip(image.GetSize(), old_sp, new_sp)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), tuple(new_sp),
                         image.GetDirection(), -1024.0, sitk.sitkFloat32)


def _bbox(mask: np.ndarray, axes: tuple[int, ...]) -> tuple[slice, ...]:
    out = [slice(None)] * mask.ndim
    for axis in axes:
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size:
            out[axis] = slice(int(hit[0]), int(hit[-1]) + 1)
    return tuple(out)


def prepare_volume(path: Path, dims: int, spacing_mm: float, min_body_area_cm2: float) -> PreparedVolume:
    """Read, reorient to LPS, resample, window to [0, 1] and crop to the body (see module doc)."""
    import SimpleITK as sitk

    from sarco_nn.image_io import check_ct_intensities, read_image, to_canonical

    image = read_image(path)
    check_ct_intensities(image, path)  # a label map or an MR in the folder is skipped, not learned from
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    image = to_canonical(image)
    sx, sy, sz = image.GetSpacing()
    target = (spacing_mm, spacing_mm, spacing_mm if dims == 3 else sz)
    image = _resample(image, target)
    array = apply_window(sitk.GetArrayFromImage(image))  # (z, y, x)
    body = array > 0.0
    array = array[_bbox(body, (0, 1, 2) if dims == 3 else (1, 2))]
    body = array > 0.0
    area_cm2 = body.reshape(len(body), -1).sum(1) * target[0] * target[1] / 100.0
    slices = np.flatnonzero(area_cm2 >= min_body_area_cm2)
    if slices.size == 0:
        slices = np.flatnonzero(area_cm2 >= 0.5 * area_cm2.max()) if area_cm2.max() > 0 else np.arange(len(array))
    return PreparedVolume(np.ascontiguousarray(array), slices)


# ----------------------------------------------------------------------------- crops
def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    pad = [(0, max(size - s, 0)) for s in a.shape]
    return np.pad(a, pad) if any(p[1] for p in pad) else a


def _random_crop(rng: np.random.Generator, a: np.ndarray, size: int) -> np.ndarray:
    starts = [int(rng.integers(0, s - size + 1)) for s in a.shape]
    return a[tuple(slice(st, st + size) for st in starts)]


def two_views(rng: np.random.Generator, vol: PreparedVolume, cfg: PretrainConfig) -> np.ndarray:
    """(2, *crop) float32: two crops of one region (2D: of one abdominal slice), intensity-jittered."""
    src = vol.array[int(rng.choice(vol.slices))] if cfg.dims == 2 else vol.array
    region_size = int(math.ceil(cfg.crop_size * 4 / 3))
    region = _random_crop(rng, _pad_to(src, region_size), region_size)
    views = []
    for _ in range(2):
        v = _random_crop(rng, region, cfg.crop_size).astype(np.float32)
        if cfg.intensity_jitter > 0:
            j = cfg.intensity_jitter
            v = np.clip(v * rng.uniform(1 - j, 1 + j) + rng.uniform(-j / 2, j / 2), 0.0, 1.0)
        views.append(v)
    return np.stack(views).astype(np.float32)


# ----------------------------------------------------------------------------- dataset
class UnlabeledCTDataset:
    """Map-style dataset over *global sample indices* (see module doc); torch Dataset protocol.

    item -> {"views": (2, 1, *crop) float32, "masks": (2, *grid) bool, "volume": int,
             "tried": (MAX_RECORDED_TRIES,) int64, unreadable volume indices, -1 padded}
    """

    def __init__(self, files: list[Path], cfg: PretrainConfig):
        if not files:
            raise SarcoError("no CT volumes to pretrain on")
        self.files = [Path(f) for f in files]
        self.cfg = cfg
        self._cache: OrderedDict[int, PreparedVolume] = OrderedDict()
        self._bad: dict[int, str] = {}

    def __len__(self) -> int:  # indices are unbounded; the sampler decides
        return 2**62

    def volume_order(self, group: int) -> list[int]:
        """Volumes to try for a read group: its place in a seeded shuffle of all volumes, then the next ones."""
        n = len(self.files)
        perm = np.random.default_rng([self.cfg.seed, 1, group // n]).permutation(n)
        start = group % n
        return [int(perm[(start + k) % n]) for k in range(n)]

    def _load(self, index: int) -> PreparedVolume | None:
        if index in self._bad:
            return None
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        path = self.files[index]
        try:
            vol = prepare_volume(path, self.cfg.dims, self.cfg.spacing, self.cfg.min_body_area_cm2)
        except (SarcoError, RuntimeError, OSError, ValueError, MemoryError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if reason.startswith(str(path)):
                reason = reason[len(str(path)):].lstrip(": ")
            self._bad[index] = reason
            log.warning(f"skipped unreadable volume {path}: {reason[:200]}")
            return None
        self._cache[index] = vol
        while len(self._cache) > max(self.cfg.cache_volumes, 1):
            self._cache.popitem(last=False)
        return vol

    def __getitem__(self, sample: int) -> dict:
        import torch

        group = int(sample) // self.cfg.samples_per_read
        tried: list[int] = []
        vol, chosen = None, -1
        for candidate in self.volume_order(group):
            vol = self._load(candidate)
            if vol is not None:
                chosen = candidate
                break
            tried.append(candidate)
        if vol is None:
            raise SarcoError(f"none of the {len(self.files)} CT volumes could be read",
                             self.files[0].parent, "check the warnings above; give readable CT files")
        rng = np.random.default_rng([self.cfg.seed, 2, int(sample)])
        views = two_views(rng, vol, self.cfg)
        masks = np.stack([random_block_mask(rng, self.cfg.crop_size, self.cfg.mask_block, self.cfg.dims,
                                            self.cfg.mask_ratio) for _ in range(2)])
        rec = np.full(MAX_RECORDED_TRIES, -1, dtype=np.int64)
        rec[: min(len(tried), MAX_RECORDED_TRIES)] = tried[:MAX_RECORDED_TRIES]
        return {"views": torch.from_numpy(views).unsqueeze(1), "masks": torch.from_numpy(masks),
                "volume": chosen, "tried": torch.from_numpy(rec)}


def sample_indices(step: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """Global sample indices of one step on one rank: rank r takes its own slice of the global batch."""
    first = (step * world_size + rank) * batch_size
    return list(range(first, first + batch_size))


class StepSampler:
    """Yields the sample indices of steps [start, stop) for one rank (a torch Sampler)."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield from sample_indices(step, self.batch_size, self.rank, self.world_size)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0) * self.batch_size
