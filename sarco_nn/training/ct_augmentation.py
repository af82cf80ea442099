"""CT-specific training augmentation on top of nnU-Net's: what differs between sites, not between patients.

Why: a model trained at one site learns that site's scanner ("muscle-like HU in familiar places").
Each transform below simulates one way another hospital's L3 slice differs, so the network cannot
lean on it. Preset field `training.ct_augmentation` (default off) switches them on; off, the
pipeline is nnU-Net's own object untouched (`add_ct_augmentation` is then never called).

All amounts are CT facts (HU, fractions of the field) converted to the network's normalised
space through `sarco_nn.windowing` (the study window -175..250 HU → [0, 1], baked into the plans):
0 is "at or below -175 HU" (fat's lower edge, air, padding) and 1 "at or above 250 HU" (bone).
A pixel at 0 or 1 was clipped, so it has no HU left to shift or to add noise to: noise and
contrast offsets act only strictly inside the window, as they would on the HU before windowing.

Transforms work on one sample, image (C, X, Y) and segmentation (1, X, Y) tensors, after nnU-Net's
spatial transform (the patch is final) and before its intensity transforms. Randomness comes from
torch's and NumPy's global generators (batchgeneratorsv2 samples its scalars with NumPy), both seeded
by the trainer (`seed_everything`), so a seed fixes the stream.
Labels stay consistent: transforms that remove anatomy (truncation, air) set the labels there to
background; the others change intensities only.

batchgeneratorsv2 has near-twins of three of them (blur/sharpening, Gaussian noise, low resolution).
Where its transform does the job it is used: `PartialVolumeTransform` is its
`SimulateLowResolutionTransform` (its sampling, its upsampling) with one hook changed. Where it cannot,
the class says exactly what the library's version does not do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.windowing import hu_difference_to_window_units, hu_to_window_units

__all__ = ["AirPaddingTransform", "ContrastPhaseTransform", "FOVTruncationTransform", "KernelTransform",
           "LowDoseNoiseTransform", "PartialVolumeTransform", "add_ct_augmentation", "ct_transforms"]

#: Value of air (and of anything below the window) in the normalised space.
AIR: float = 0.0


def _uniform(lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand(1).item())


def _in_window(img: torch.Tensor) -> torch.Tensor:
    """Pixels with HU left to change: strictly inside the window (0 and 1 were clipped)."""
    return (img > 0.0) & (img < 1.0)


def _blur(img: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian blur over every spatial axis of a (C, ...) tensor, channels apart.

    SciPy's filter (cut at 3 sigma, edges continued), not batchgeneratorsv2's `GaussianBlurTransform`:
    for a 256² patch at sigma 1.2 on one thread SciPy took 0.85 ms and the library 8.0 ms (13 and
    100 ms on 2 loaded cores). Three transforms here blur (kernel, correlated noise, organ edges),
    0.8 times per sample on average, and the augmentation runs in the training process
    (`deterministic_data`): nnU-Net's whole pipeline with these transforms took 8.6 ms per 256²
    sample (one thread, median of 4 x 60) and 14.8 ms with the library's blur put here. The results
    agree to 0.002 inside the patch; only the edge padding differs (continued here, mirrored there).
    """
    from scipy.ndimage import gaussian_filter

    sigma = (0.0,) + (float(sigma_px),) * (img.ndim - 1)
    out = gaussian_filter(img.detach().cpu().numpy().astype("float32", copy=False), sigma, mode="nearest", truncate=3.0)
    return torch.from_numpy(out).to(img.device, img.dtype)


class KernelTransform(ImageOnlyTransform):
    """Reconstruction kernel: smooth (Gaussian blur) or sharp (unsharp mask, edge overshoot).

    Why: sites reconstruct L3 with soft-tissue kernels of very different sharpness; a sharp kernel
    rings at fat/muscle edges, a smooth one blurs thin wall muscles into the fat around them.

    Not batchgeneratorsv2's `SharpeningTransform`: that adds a 3x3 Laplacian, whose gain grows to
    1 + 8 x strength at the pixel (Nyquist) frequency, so it mostly amplifies pixel noise, with a
    fixed 1-pixel overshoot. A CT kernel lifts mid frequencies with a bounded gain; the unsharp mask
    here does that (gain at most 1 + amount, overshoot about `sigma` pixels wide, as kernels differ).
    Its clamp is the window's [0, 1], not the patch's own min/max. The smooth branch is what the
    library's `GaussianBlurTransform` does, run through `_blur` for speed (see there).
    """

    def __init__(self, blur_sigma_px: tuple[float, float] = (0.5, 1.5), sharpen_amount: tuple[float, float] = (0.4, 1.5),
                 sharpen_sigma_px: tuple[float, float] = (0.7, 1.5), p_sharpen: float = 0.5):
        super().__init__()
        self.blur_sigma_px, self.sharpen_amount, self.sharpen_sigma_px = blur_sigma_px, sharpen_amount, sharpen_sigma_px
        self.p_sharpen = p_sharpen

    def get_parameters(self, **data_dict) -> dict:
        if torch.rand(1).item() < self.p_sharpen:
            return {"sharpen": True, "sigma": _uniform(*self.sharpen_sigma_px), "amount": _uniform(*self.sharpen_amount)}
        return {"sharpen": False, "sigma": _uniform(*self.blur_sigma_px), "amount": 0.0}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        smooth = _blur(img, params["sigma"])
        out = img + params["amount"] * (img - smooth) if params["sharpen"] else smooth
        return out.clamp_(0.0, 1.0)  # the window clips what the kernel pushes past it


class LowDoseNoiseTransform(ImageOnlyTransform):
    """Extra quantum noise of a low-dose protocol: `sigma_hu` HU, slightly correlated like CT noise.

    Why: noise differs several-fold between protocols; muscle at 40 HU with 40 HU noise overlaps
    fat-infiltrated muscle and organs. Added only inside the window: air stays clean air.

    Not batchgeneratorsv2's `GaussianNoiseTransform` (nnU-Net's pipeline runs it afterwards anyway):
    that adds white noise to every pixel, so clipped air and bone (0 and 1, which have no HU left to
    vary) would get texture no scanner gives them, and white noise lacks the pixel-to-pixel
    correlation of CT noise (`correlation_px`). Its amount is in HU, converted by `sarco_nn.windowing`.
    """

    def __init__(self, sigma_hu: tuple[float, float] = (5.0, 40.0), correlation_px: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.sigma_hu, self.correlation_px = sigma_hu, correlation_px

    def get_parameters(self, image: torch.Tensor, **data_dict) -> dict:
        noise = torch.randn(image.shape, dtype=torch.float32)
        corr = _uniform(*self.correlation_px)
        if corr > 0.3:
            noise = _blur(noise, corr)
        noise = noise / noise.std().clamp_min(1e-6)
        return {"noise": noise * hu_difference_to_window_units(_uniform(*self.sigma_hu))}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        inside = _in_window(img)
        return torch.where(inside, (img + params["noise"].to(img.dtype)).clamp(0.0, 1.0), img)


class ContrastPhaseTransform(BasicTransform):
    """HU of soft tissue: a scanner's calibration (all tissue, a few HU) and a contrast phase (organs).

    Why: enhancement lifts liver, kidneys, vessels and bowel wall by tens to 150 HU while muscle
    changes little; without contrast, organs and bowel sit at muscle HU against psoas and the wall.
    The model must tell them apart by place and shape, so non-muscle soft tissue (HU from
    `soft_tissue_hu` up; fat below stays) is shifted by `organ_shift_hu`, down as well as up.
    Intensities only; the labels say which pixels are muscle and are returned unchanged.
    (batchgeneratorsv2's brightness/contrast transforms scale about the patch mean and know no labels:
    a scanner's calibration scales HU about water, and the organ shift needs the labels.)
    """

    def __init__(self, offset_hu: tuple[float, float] = (-15.0, 15.0), scale: tuple[float, float] = (0.93, 1.07),
                 organ_shift_hu: tuple[float, float] = (-40.0, 120.0), soft_tissue_hu: float = -30.0,
                 muscle_label: int = MUSCLE_LABEL):
        super().__init__()
        self.offset_hu, self.scale, self.organ_shift_hu = offset_hu, scale, organ_shift_hu
        self.soft_tissue_hu, self.muscle_label = soft_tissue_hu, muscle_label

    def get_parameters(self, **data_dict) -> dict:
        return {"offset_hu": _uniform(*self.offset_hu), "scale": _uniform(*self.scale),
                "organ_shift_hu": _uniform(*self.organ_shift_hu)}

    def apply(self, data_dict: dict, **params) -> dict:
        img, seg = data_dict["image"], data_dict["segmentation"]
        inside = _in_window(img)
        water = hu_to_window_units(0.0)
        # calibration: HU' = scale * HU + offset about water (0 HU), in window units
        shifted = water + (img - water) * params["scale"] + hu_difference_to_window_units(params["offset_hu"])
        organ = (seg != self.muscle_label) & (seg >= 0) & (img >= hu_to_window_units(self.soft_tissue_hu))
        # a 1-pixel soft edge: partial volume at organ borders, not a step that marks the label boundary
        weight = _blur(organ.to(img.dtype), 1.0) * inside
        shifted = shifted + weight * hu_difference_to_window_units(params["organ_shift_hu"])
        data_dict["image"] = torch.where(inside, shifted.clamp(0.0, 1.0), img)
        return data_dict


class PartialVolumeTransform(SimulateLowResolutionTransform):
    """Coarser, possibly non-square pixels and thick-slice partial volume: area-average down, linear up.

    Why: sites use 0.5-1 mm pixels (not always square) and 1-5 mm slices; averaging mixes thin
    muscles and fat planes. batchgeneratorsv2's `SimulateLowResolutionTransform`, as configured here
    (a factor per axis, the same for all channels), with its one image hook changed: it samples down
    by nearest neighbour, which keeps or drops a 1-pixel fat plane whole (aliasing), where a coarse
    pixel averages it with its neighbours (partial volume); so down here is an area average.
    """

    def __init__(self, factor: tuple[float, float] = (0.35, 0.8)):
        super().__init__(scale=factor, synchronize_channels=True, synchronize_axes=False, ignore_axes=None)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        shape = img.shape[1:]
        for c, scales in zip(params["apply_to_channel"], params["scales"]):
            small = [max(1, round(n * float(f))) for n, f in zip(shape, scales)]
            down = F.interpolate(img[c][None, None].float(), size=small, mode="area")
            img[c] = F.interpolate(down, size=list(shape), mode=self.upmodes[len(shape)])[0, 0].to(img.dtype)
        return img


def _fov_outside(shape: tuple[int, ...], params: dict) -> torch.Tensor:
    """Boolean (X, Y) map of the pixels outside the simulated reconstruction field."""
    nx, ny = shape[-2], shape[-1]
    if params["mode"] == "band":
        out = torch.zeros((nx, ny), dtype=torch.bool)
        w = params["width"]
        edge = params["edge"]
        if edge == 0:
            out[: max(1, round(w * nx))] = True
        elif edge == 1:
            out[nx - max(1, round(w * nx)):] = True
        elif edge == 2:
            out[:, : max(1, round(w * ny))] = True
        else:
            out[:, ny - max(1, round(w * ny)):] = True
        return out
    xs = torch.arange(nx, dtype=torch.float32)[:, None] - params["cx"] * (nx - 1)
    ys = torch.arange(ny, dtype=torch.float32)[None, :] - params["cy"] * (ny - 1)
    return xs ** 2 + ys ** 2 > (params["radius"] * min(nx, ny)) ** 2


class FOVTruncationTransform(BasicTransform):
    """Field-of-view truncation: a band at one edge, or the outside of a reconstruction circle, becomes air.

    Why: large patients exceed the scan field; scanners store padding (air) outside the circle.
    The cut anatomy is gone, so its labels become background: the model must not extrapolate
    muscle into the padding, nor be confused by body that ends in a straight or circular edge.
    """

    def __init__(self, band_width: tuple[float, float] = (0.05, 0.3), radius: tuple[float, float] = (0.35, 0.55),
                 p_circle: float = 0.5):
        super().__init__()
        self.band_width, self.radius, self.p_circle = band_width, radius, p_circle

    def get_parameters(self, **data_dict) -> dict:
        if torch.rand(1).item() < self.p_circle:
            return {"mode": "circle", "radius": _uniform(*self.radius), "cx": _uniform(0.4, 0.6), "cy": _uniform(0.4, 0.6)}
        return {"mode": "band", "edge": int(torch.randint(4, (1,)).item()), "width": _uniform(*self.band_width)}

    def apply(self, data_dict: dict, **params) -> dict:
        img, seg = data_dict["image"], data_dict["segmentation"]
        outside = _fov_outside(tuple(img.shape), params)
        data_dict["image"] = img.masked_fill(outside, AIR)
        data_dict["segmentation"] = seg.masked_fill(outside, 0)
        return data_dict


class AirPaddingTransform(BasicTransform):
    """A small body in a wide field: the patch shrunk by `zoom` and placed in uniform air (label 0).

    Why: the model tiled pure air (-1000 HU below the table, around a thin patient, an all-air
    slice) with muscle, never having seen a wide uniform region that had to be background.
    With probability `p_all_air` the whole patch is air, the extreme of the same lesson.
    """

    def __init__(self, zoom: tuple[float, float] = (0.45, 0.85), p_all_air: float = 0.1):
        super().__init__()
        self.zoom, self.p_all_air = zoom, p_all_air

    def get_parameters(self, image: torch.Tensor, **data_dict) -> dict:
        if torch.rand(1).item() < self.p_all_air:
            return {"zoom": 0.0, "offset": [0.0] * (image.ndim - 1)}
        return {"zoom": _uniform(*self.zoom), "offset": [torch.rand(1).item() for _ in image.shape[1:]]}

    def apply(self, data_dict: dict, **params) -> dict:
        img, seg = data_dict["image"], data_dict["segmentation"]
        shape = img.shape[1:]
        canvas_img = torch.full_like(img, AIR)
        canvas_seg = torch.zeros_like(seg)
        if params["zoom"] > 0:
            small = [max(1, int(math.floor(n * params["zoom"]))) for n in shape]
            mode = "bilinear" if len(shape) == 2 else "trilinear"
            img_s = F.interpolate(img[None].float(), size=small, mode=mode, align_corners=False)[0].to(img.dtype)
            seg_s = F.interpolate(seg[None].float(), size=small, mode="nearest")[0].round().to(seg.dtype)
            starts = [int(o * (n - s)) for o, n, s in zip(params["offset"], shape, small)]
            region = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(starts, small))
            canvas_img[region] = img_s
            # padding outside the sampled image (label -1 in nnU-Net's patch) is outside the body: air, background
            canvas_seg[region] = seg_s.clamp_min(0)
        data_dict["image"], data_dict["segmentation"] = canvas_img, canvas_seg
        return data_dict


def ct_transforms(muscle_label: int = MUSCLE_LABEL) -> list[BasicTransform]:
    """The CT site-shift transforms, each with its own probability (see each class for why), in the order
    applied: geometry first (air, truncation), then tissue HU (contrast), then the scanner (resolution,
    kernel, noise)."""
    return [
        RandomTransform(AirPaddingTransform(), apply_probability=0.2),
        RandomTransform(FOVTruncationTransform(), apply_probability=0.15),
        RandomTransform(ContrastPhaseTransform(muscle_label=muscle_label), apply_probability=0.3),
        RandomTransform(PartialVolumeTransform(), apply_probability=0.2),
        RandomTransform(KernelTransform(), apply_probability=0.3),
        RandomTransform(LowDoseNoiseTransform(), apply_probability=0.25),
    ]


def add_ct_augmentation(pipeline: ComposeTransforms, muscle_label: int = MUSCLE_LABEL) -> ComposeTransforms:
    """nnU-Net's training pipeline with `ct_transforms` inserted right after its spatial transform.

    There the patch has its final size and the labels their final place, and nnU-Net's own
    intensity transforms (noise, blur, brightness, gamma) still follow, as they would on real
    scans of another site. nnU-Net's transforms are kept as they are, in their order.
    """
    transforms = list(pipeline.transforms)
    spatial = next((i for i, t in enumerate(transforms) if isinstance(t, SpatialTransform)), None)
    if spatial is None:
        raise ValueError("nnU-Net's training pipeline has no SpatialTransform to insert the CT augmentation after")
    at = spatial + 1
    if at < len(transforms) and isinstance(transforms[at], Convert2DTo3DTransform):
        at += 1
    return ComposeTransforms(transforms[:at] + ct_transforms(muscle_label) + transforms[at:])
