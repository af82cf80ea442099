"""Skeletal muscle area (cm²), SMI and mean muscle HU from a mask and its geometry.

This is the ONE code path that turns a mask into an SMA: `sarco measure`, `sarco predict` and
`sarco evaluate` all call it, so an area can never be computed two different ways.

Area = number of muscle pixels × in-plane pixel spacing (row × column, mm²) / 100. The slice
thickness never enters (a pitfall seen in other tools). Images in any orientation are first
brought to the canonical orientation (`constants.CANONICAL_ORIENTATION`, LPS) so that axial
slices are `array[z]`; non-square pixels are handled because the row and column spacing are
kept apart.

Numbers: SMA is the correctly rounded float of the exact product n × row spacing × column spacing
/ 100 and SMI that of SMA / height² (exact decimal arithmetic, `thresholds.exact`), so an area or
index that is exactly at a cut-off in decimals is exactly at it here too (the flag rule is strict
`<`, see `sarco_nn.thresholds`).

Orientation: a volume goes through the same `image_io.to_canonical` as `sarco predict`, so a mask
whose slices are oblique (more than `image_io.AXIAL_TOLERANCE_DEG` from axial) is refused here
exactly as predict refuses the CT (its area would be inflated by 1/cos(angle)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.image_io import check_same_grid, to_canonical
from sarco_nn.thresholds import exact, smi_exact


@dataclass
class Measurement:
    """What one axial slice of a mask measures.

    `hu_gate` is the HU interval that restricted the counted pixels, or None when every mask
    pixel counted; `muscle_hu_mean` is None without a CT or when no pixel counted.
    `slice_index` is the index along the image's stored head–foot axis (see `measure_image`).
    """

    sma_cm2: float
    muscle_hu_mean: float | None
    slice_index: int | None
    hu_gate: tuple[float, float] | None
    n_pixels: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hu_gate"] = None if self.hu_gate is None else [float(v) for v in self.hu_gate]
        return out


@dataclass
class AxialStack:
    """An image as axial slices in canonical (LPS) orientation.

    array: (n_slices, rows, cols); rows run anterior→posterior, columns right→left.
    spacing_yx_mm: in-plane (row, column) spacing of every slice, in mm.
    stored_indices: stored_indices[z] is the index of canonical slice z along the image's own
    (stored) head–foot axis, i.e. the index a user sees in ITK-SNAP / 3D Slicer / nibabel.
    """

    array: np.ndarray
    spacing_yx_mm: tuple[float, float]
    stored_indices: list[int]
    spacing_z_mm: float | None = None  # distance between slices; None for a single 2-D slice

    def canonical_index(self, stored_index: int) -> int:
        return self.stored_indices.index(stored_index)


def sma_cm2(mask2d: np.ndarray, spacing_yx_mm: tuple[float, float], label: int = MUSCLE_LABEL) -> float:
    """Area of `label` in one 2-D slice: pixels × row spacing × column spacing (mm²) / 100."""
    return area_cm2(int(np.count_nonzero(_label_mask(mask2d, label))), spacing_yx_mm)


def area_cm2(n_pixels: int, spacing_yx_mm: tuple[float, float]) -> float:
    """n pixels × row spacing × column spacing / 100, in exact decimal arithmetic, rounded once."""
    return float(area_exact(n_pixels, spacing_yx_mm))


def area_exact(n_pixels: int, spacing_yx_mm: tuple[float, float]) -> Fraction:
    """The exact area (cm²) `area_cm2` rounds: sums and ratios of areas stay exact (body composition)."""
    sy, sx = (exact(float(v)) for v in spacing_yx_mm)
    return int(n_pixels) * sy * sx / 100


def measure_slice(
    mask2d: np.ndarray,
    spacing_yx_mm: tuple[float, float],
    ct2d_hu: np.ndarray | None = None,
    label: int = MUSCLE_LABEL,
    hu_gate: tuple[float, float] | None = None,
    slice_index: int | None = None,
) -> Measurement:
    """SMA (and mean HU when the CT slice is given) of one 2-D slice.

    With `hu_gate=(lo, hi)` only mask pixels whose CT value lies in [lo, hi] count (needs the
    CT); the HU mean is then taken over the counted pixels as well.
    """
    selected = _label_mask(mask2d, label)
    if ct2d_hu is not None and ct2d_hu.shape != selected.shape:
        raise InputError(f"CT slice shape {ct2d_hu.shape} differs from mask slice shape {selected.shape}")
    if hu_gate is not None:
        if ct2d_hu is None:
            raise SarcoError("the HU gate needs the CT image", fix="pass the CT with --image.")
        lo, hi = float(hu_gate[0]), float(hu_gate[1])
        selected = selected & (ct2d_hu >= lo) & (ct2d_hu <= hi)
        hu_gate = (lo, hi)
    n_pixels = int(np.count_nonzero(selected))
    hu_mean = None
    if ct2d_hu is not None and n_pixels:
        hu_mean = float(np.asarray(ct2d_hu, dtype=np.float64)[selected].mean())
    return Measurement(
        sma_cm2=area_cm2(n_pixels, spacing_yx_mm),
        muscle_hu_mean=hu_mean,
        slice_index=slice_index,
        hu_gate=hu_gate,
        n_pixels=n_pixels,
    )


def axial_stack(image: sitk.Image, name: str | None = None) -> AxialStack:
    """Bring a 2-D or 3-D image to LPS and return its axial slices with in-plane spacing.

    A 2-D image is one slice (stored index 0). A 3-D image may be stored in any axis order
    and direction (RAS, LPS, coronal-stored, …) as long as one stored axis runs head–foot.
    """
    dim = image.GetDimension()
    if dim == 2:
        sx, sy = image.GetSpacing()
        return AxialStack(sitk.GetArrayFromImage(image)[None], (float(sy), float(sx)), [0])
    if dim != 3:
        raise InputError(f"a {dim}-D image cannot be measured; give a 2-D slice or a 3-D volume", path=name)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("multi-component (vector/RGB) image cannot be measured", path=name)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    dominant = np.argmax(np.abs(direction), axis=0)  # physical axis each stored axis runs along
    head_foot = [axis for axis in range(3) if dominant[axis] == 2]
    if len(head_foot) != 1 or sorted(dominant.tolist()) != [0, 1, 2]:
        raise InputError(
            "image orientation is oblique or degenerate: no single stored axis runs head–foot",
            path=name,
            fix="resample the image to an axial grid first.",
        )
    stored_axis = head_foot[0]
    n_slices = image.GetSize()[stored_axis]
    runs_inferior = direction[2, stored_axis] < 0  # LPS: canonical z increases towards superior
    try:  # predict's own reorientation and obliquity check (permutations/flips only, never resampling)
        canonical = to_canonical(image)
    except InputError as exc:
        raise InputError(str(exc).split(" Fix: ")[0], path=name, fix=exc.fix) from None
    if canonical.GetSize()[2] != n_slices:  # would mean our axis bookkeeping disagrees with ITK
        raise SarcoError(f"internal: reorientation changed the slice count of {name or 'image'}")
    sx, sy, sz = canonical.GetSpacing()
    stored = [n_slices - 1 - z for z in range(n_slices)] if runs_inferior else list(range(n_slices))
    return AxialStack(sitk.GetArrayFromImage(canonical), (float(sy), float(sx)), stored, float(sz))


def measure_image(
    mask: sitk.Image,
    ct: sitk.Image | None = None,
    label: int = MUSCLE_LABEL,
    slice_index: int | None = None,
    hu_gate: tuple[float, float] | None = None,
    *,
    mask_name: str | None = None,
    ct_name: str | None = None,
) -> list[Measurement]:
    """Measure a mask (2-D slice or 3-D volume, any orientation and spacing).

    slice_index: index along the image's OWN stored head–foot axis — for an axial volume the
      third voxel index k (what ITK-SNAP, 3D Slicer and nibabel's `img[..., k]` call slice k),
      counted in the file's storage order, not after reorientation. Reorienting to LPS may
      reverse that axis (RAS-style storage running feet→head is kept, head→feet is flipped);
      the mapping is done here so the user's index always means the stored slice.
    Returns one Measurement for a 2-D mask, a single-slice volume or a given slice_index;
    otherwise one per slice that contains `label`, in stored-index order (empty list if none).
    """
    stack = axial_stack(mask, mask_name)
    ct_stack = None
    if ct is not None:
        check_same_grid(ct, mask, mask_name or "mask", ct_name)
        ct_stack = axial_stack(ct, ct_name)
    if hu_gate is not None and ct_stack is None:
        raise SarcoError("the HU gate needs the CT image", fix="pass the CT with --image.")
    n_slices = stack.array.shape[0]
    if slice_index is not None:
        if not 0 <= slice_index < n_slices:
            raise InputError(
                f"slice {slice_index} is outside the mask's {n_slices} slice(s) (valid: 0..{n_slices - 1})",
                path=mask_name,
                fix="give --slice as an index along the image's own slice axis.",
            )
        chosen = [stack.canonical_index(slice_index)]
    elif n_slices == 1:
        chosen = [0]
    else:
        labelled = _label_mask(stack.array, label).any(axis=(1, 2))
        chosen = sorted(np.flatnonzero(labelled).tolist(), key=lambda z: stack.stored_indices[z])
    return [
        measure_slice(
            stack.array[z],
            stack.spacing_yx_mm,
            None if ct_stack is None else ct_stack.array[z],
            label=label,
            hu_gate=hu_gate,
            slice_index=stack.stored_indices[z],
        )
        for z in chosen
    ]


def smi(sma_cm2: float | None, height_m: float | None) -> float | None:
    """Skeletal muscle index SMA / height² (cm²/m²); None when the height (or SMA) is unknown."""
    if sma_cm2 is None or height_m is None or _is_nan(height_m) or _is_nan(sma_cm2):
        return None
    if height_m <= 0:
        raise SarcoError(f"height {height_m} m is not positive", fix="give the height in metres, e.g. 1.62.")
    return float(smi_exact(sma_cm2, height_m))


def label_mask(mask: np.ndarray, label: int) -> np.ndarray:
    """Boolean mask of `label`; float masks (some tools save 0.0/1.0) are rounded first."""
    mask = np.asarray(mask)
    if np.issubdtype(mask.dtype, np.floating):
        mask = np.rint(mask)
    return mask == label


_label_mask = label_mask  # the name this module's own functions use


def _is_nan(value: float) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return False
