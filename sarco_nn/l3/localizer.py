"""A learned L3 localizer that trains on tens of cases on CPU (the Sarcopenia-AI approach, made FOV-aware).

Why this design: a volume is reduced to two bone-window maximum-intensity projections (sagittal and
coronal) resampled to a fixed 4 mm grid, so every scanner, matrix and slice spacing looks alike and a
whole CT becomes a small 2-D image. A small CNN (`network.MipLocalizerNet`) scores every z row as "the
L3 level" and also scores "L3 is not in the field of view"; one softmax over [rows..., absent] makes the
out-of-field answer a learned output trained on crops that exclude L3 (chest-only, pelvis-only), not a
special case. Labels come for free: a drop-in volume whose muscle mask lies on one axial slice says
where L3 is, and phantom volumes know it exactly. A nnU-Net vertebra segmentation would be more exact,
but needs voxel-wise vertebra labels and hours of training; this needs one number per case.

Besides the heatmap, every row regresses its offset to L3; rows near L3 "vote" for its position.
Training also shows anatomy that is no lumbar spine: projections squeezed to half height or less
(vertebrae 10-17 mm tall, cervical/upper-thoracic size) and upside-down ones, labelled "not in view".

Decision: L3 is reported when the probability mass within ±8 mm of the best row is at least
MIN_CONFIDENCE and larger than the "absent" probability, at least MIN_VOTES rows vote and their votes
agree with each other and with the heatmap within VOTE_TOLERANCE_MM, and the level lies at least
EDGE_MARGIN_MM inside the scan; otherwise `L3NotFound` with the failed condition in its message. Checkpoints hold only tensors and plain values and are
loaded with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarco_nn.constants import LOCALIZER_BODY_HU
from sarco_nn.errors import SarcoError
from sarco_nn.l3.result import L3Location, L3NotFound
from sarco_nn.windowing import apply_window

__all__ = [
    "ABSENT_MARGIN_MM", "BONE_WINDOW_HU", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT",
    "CONFIDENCE_HALF_WINDOW_MM", "EDGE_MARGIN_MM", "L3Localizer", "MAX_OFFSET_MM", "MIN_CONFIDENCE",
    "MIN_VOTES", "MIP_COLUMN_MM", "MIP_SPACING_MM", "MIP_WIDTH", "MipInput", "PRESENT_MARGIN_MM",
    "Prediction", "REPORT_FILE", "VOTE_RADIUS_MM", "VOTE_TOLERANCE_MM", "default_model_dir",
    "has_model", "projection_input", "resample_axis"
]

#: Row spacing (mm) of the projections along z: about 7 rows per lumbar vertebra.
MIP_SPACING_MM: float = 4.0
#: Column spacing (mm) across the body: coarser, vertebrae are counted along z, not across.
MIP_COLUMN_MM: float = 8.0
#: Columns of each projection after resampling (MIP_WIDTH * MIP_COLUMN_MM = 512 mm: any body fits).
MIP_WIDTH: int = 64
#: Bone window (level 400 / width 1800 HU) mapped to [0, 1] before projecting.
BONE_WINDOW_HU: tuple[float, float] = (-500.0, 1300.0)

#: Training label: L3 "in view" when its level lies at least this far inside both scan ends...
PRESENT_MARGIN_MM: float = 16.0
#: ...and "not in view" when it lies outside the scan or closer than this to an end (cut vertebra).
ABSENT_MARGIN_MM: float = 4.0
#: At inference a level closer than this to a scan end is reported as not in view.
EDGE_MARGIN_MM: float = 8.0
#: Half-width (mm) of the window around the best row whose probability mass is the confidence.
CONFIDENCE_HALF_WINDOW_MM: float = 8.0
#: Smallest confidence reported as a location.
MIN_CONFIDENCE: float = 0.35
#: Row offsets are learned up to this distance (mm); farther rows only say "far above/below".
MAX_OFFSET_MM: float = 64.0
#: Rows that place L3 within this distance of themselves vote for its position...
VOTE_RADIUS_MM: float = 40.0
#: ...at least this many of them (a real L3 has about 2 * VOTE_RADIUS_MM / 4 mm = 20 near rows)...
MIN_VOTES: int = 5
#: ...and their votes must agree with each other (median abs. deviation) and with the heatmap peak within this.
VOTE_TOLERANCE_MM: float = 12.0

CHECKPOINT_FILE = "l3_localizer.pt"
REPORT_FILE = "l3_localizer.json"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class MipInput:
    """Projections of one volume and the geometry that maps a projection row back to a slice."""

    array: np.ndarray  # float32 (2, Z, MIP_WIDTH): sagittal, coronal; row 0 = first (most inferior) slice
    row_mm: float  # exact row spacing (the z extent divided into whole rows)
    origin_z_mm: float  # world z of canonical slice 0 (= row 0)
    slice_spacing_mm: float
    n_slices: int

    @property
    def n_rows(self) -> int:
        return int(self.array.shape[1])

    def row_of_slice(self, index: float) -> float:
        return index * self.slice_spacing_mm / self.row_mm

    def slice_of_row(self, row: float) -> int:
        return int(np.clip(np.floor(row * self.row_mm / self.slice_spacing_mm + 0.5), 0, self.n_slices - 1))

    def crop_rows(self, start: int, stop: int) -> "MipInput":
        """Rows start..stop-1, as if the scan had been cut there; its "slices" are then the rows."""
        return MipInput(np.ascontiguousarray(self.array[:, start:stop]), self.row_mm,
                        self.origin_z_mm + start * self.row_mm, self.row_mm, stop - start)


def resample_axis(a: np.ndarray, axis: int, n_out: int, step: float) -> np.ndarray:
    """Linear resampling of `a` along `axis` at input positions 0, step, 2 step, ... (n_out samples)."""
    pos = np.clip(np.arange(n_out) * step, 0, a.shape[axis] - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
    w = (pos - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = w.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def _centre_width(profile: np.ndarray, body: np.ndarray, spacing: float) -> np.ndarray:
    """Resample (Z, n) to MIP_COLUMN_MM columns (box-averaged) and centre it on the body in a MIP_WIDTH canvas."""
    from scipy.ndimage import uniform_filter1d

    step = MIP_COLUMN_MM / spacing
    if step > 1.5:  # average before subsampling, so thin bright structures are not skipped
        profile = uniform_filter1d(profile, size=int(round(step)), axis=1, mode="nearest")
    n_out = max(1, int(np.floor((profile.shape[1] - 1) / step)) + 1)
    out = resample_axis(profile, 1, n_out, step)
    weight = resample_axis(body.astype(np.float32), 1, n_out, step).sum(axis=0)
    centre = float(np.sum(np.arange(n_out) * weight) / weight.sum()) if weight.sum() > 0 else (n_out - 1) / 2
    canvas = np.zeros((profile.shape[0], MIP_WIDTH), np.float32)
    shift = int(round(MIP_WIDTH / 2 - centre))
    src_lo, dst_lo = max(0, -shift), max(0, shift)
    length = min(n_out - src_lo, MIP_WIDTH - dst_lo)
    if length > 0:
        canvas[:, dst_lo:dst_lo + length] = out[:, src_lo:src_lo + length]
    return canvas


def projection_input(canonical: sitk.Image) -> MipInput:
    """Sagittal and coronal bone-window MIPs of a canonical (LPS, identity) volume on the 4 mm grid."""
    hu = sitk.GetArrayViewFromImage(canonical)  # (z, y, x)
    if hu.ndim != 3 or hu.shape[0] < 2:
        raise SarcoError("the L3 localizer needs a volume (several axial slices), not one slice")
    sx, sy, sz = canonical.GetSpacing()
    sagittal = hu.max(axis=2).astype(np.float32)  # (z, y)
    coronal = hu.max(axis=1).astype(np.float32)  # (z, x)
    extent = (hu.shape[0] - 1) * sz
    n_rows = max(2, int(round(extent / MIP_SPACING_MM)) + 1)
    row_mm = extent / (n_rows - 1)
    channels = []
    for mip, spacing in ((sagittal, sy), (coronal, sx)):
        windowed = apply_window(mip, BONE_WINDOW_HU)
        body = mip > LOCALIZER_BODY_HU  # constants.py: why not BODY_HU
        rows = resample_axis(windowed, 0, n_rows, row_mm / sz)
        body_rows = resample_axis(body.astype(np.float32), 0, n_rows, row_mm / sz)
        channels.append(_centre_width(rows, body_rows > 0.5, spacing))
    return MipInput(np.stack(channels).astype(np.float32), float(row_mm), float(canonical.GetOrigin()[2]),
                    float(sz), int(hu.shape[0]))


@dataclass(frozen=True)
class Prediction:
    """Raw localizer answer on one projection input (rows in MIP grid units)."""

    row: float  # probability-weighted row around the best row
    confidence: float  # probability mass within ±CONFIDENCE_HALF_WINDOW_MM of the best row
    p_absent: float
    n_votes: int  # rows that place L3 within VOTE_RADIUS_MM of themselves
    vote_spread_mm: float  # max(median abs. deviation of the votes, |median vote - heatmap row|), mm
    found: bool
    reason: str


class L3Localizer:
    """A trained MipLocalizerNet plus the decision rule; `locate` answers an L3Location or raises L3NotFound."""

    def __init__(self, network, config: dict | None = None):
        self.network = network.eval()
        self.config = dict(config or {})

    @property
    def level(self) -> str:
        """The vertebral level this localizer was trained for (`sarco train-l3 --level`; older checkpoints: L3)."""
        return str(self.config.get("level", "L3"))

    # ------------------------------------------------------------------------------ prediction
    def predict(self, mip: MipInput) -> Prediction:
        import torch

        from sarco_nn.l3.network import OFFSET_SCALE_ROWS

        with torch.no_grad():
            rows, absent, offsets = self.network(torch.from_numpy(mip.array)[None])
            probs = torch.softmax(torch.cat([rows[0], absent]), dim=0).numpy().astype(np.float64)
            offsets_rows = offsets[0].numpy().astype(np.float64) * OFFSET_SCALE_ROWS
        row_p, p_absent = probs[:-1], float(probs[-1])
        best = int(np.argmax(row_p))
        half = max(1, int(round(CONFIDENCE_HALF_WINDOW_MM / mip.row_mm)))
        lo, hi = max(0, best - half), min(len(row_p), best + half + 1)
        window = row_p[lo:hi]
        confidence = float(window.sum())
        row = float(np.sum(np.arange(lo, hi) * window) / max(confidence, 1e-12))
        edge_mm = min(row, mip.n_rows - 1 - row) * mip.row_mm
        near = np.abs(offsets_rows) * mip.row_mm <= VOTE_RADIUS_MM
        votes = (np.arange(len(offsets_rows)) + offsets_rows)[near]
        centre = float(np.median(votes)) if votes.size else float("nan")
        spread = float(max(np.median(np.abs(votes - centre)), abs(centre - row)) * mip.row_mm) if votes.size \
            else float("inf")

        def answer(found: bool, reason: str = "") -> Prediction:
            return Prediction(row, confidence, p_absent, int(votes.size), spread, found, reason)

        if p_absent >= confidence:
            return answer(False, f"the localizer finds no {self.level} level (P(not in view) {p_absent:.2f} >= P(level) "
                                 f"{confidence:.2f})")
        if confidence < MIN_CONFIDENCE:
            return answer(False, f"the localizer is not confident (P(level) {confidence:.2f} < {MIN_CONFIDENCE})")
        if votes.size < MIN_VOTES or spread > VOTE_TOLERANCE_MM:
            return answer(False, f"the rows of the scan do not agree on an {self.level} level ({votes.size} votes, spread "
                                 f"{spread:.0f} mm): anatomy unlike a lumbar spine")
        if edge_mm < EDGE_MARGIN_MM:
            return answer(False, f"the predicted level lies {edge_mm:.0f} mm from the end of the scan (vertebra cut)")
        return answer(True)

    def locate_mip(self, mip: MipInput, where: str | Path | None = None) -> L3Location:
        pred = self.predict(mip)
        if not pred.found:
            if self.level != "L3":
                from sarco_nn.l3.result import LevelNotFound

                raise LevelNotFound(self.level, pred.reason, where)
            raise L3NotFound(pred.reason, where)
        index = mip.slice_of_row(pred.row)
        return L3Location(slice_index=index, z_mm=float(mip.origin_z_mm + index * mip.slice_spacing_mm),
                          method="model", rule="", confidence=round(pred.confidence, 4))

    def locate(self, canonical: sitk.Image, where: str | Path | None = None) -> L3Location:
        return self.locate_mip(projection_input(canonical), where)

    # ------------------------------------------------------------------------------ storage
    def save(self, model_dir: Path | str, report: dict | None = None) -> Path:
        """Write the checkpoint (tensors + plain config) and a readable JSON report, atomically."""
        import torch

        from sarco_nn.atomic import atomic_path, write_text_atomic

        model_dir = Path(model_dir)
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        payload = {"format": CHECKPOINT_FORMAT, "config": self.config, "state_dict": state}
        with atomic_path(model_dir / CHECKPOINT_FILE) as tmp:
            torch.save(payload, tmp)
        write_text_atomic(model_dir / REPORT_FILE, json.dumps({"config": self.config, **(report or {})}, indent=2))
        return model_dir / CHECKPOINT_FILE

    @classmethod
    def load(cls, model_dir: Path | str, level: str | None = "L3") -> "L3Localizer":
        """The localizer in `model_dir`; refused when it was trained for another level than `level`
        (None: any level), so an L1 localizer never answers where predict asks for L3."""
        import torch

        from sarco_nn.l3.network import MipLocalizerNet

        path = Path(model_dir) / CHECKPOINT_FILE
        if not path.is_file():
            raise SarcoError("no trained L3 localizer here", path.parent,
                             "train one with `sarco train-l3 DROP_FOLDER`, or pass --l3-slice / --l3-from")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling refused or corrupt file
            raise SarcoError(f"cannot load the L3 localizer checkpoint ({type(exc).__name__})", path,
                             "retrain it with `sarco train-l3`") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise SarcoError("not an L3 localizer checkpoint of this sarco version", path, "retrain it with `sarco train-l3`")
        config = payload.get("config", {})
        network = MipLocalizerNet(**config.get("network", {}))
        network.load_state_dict(payload["state_dict"])
        localizer = cls(network, config)
        if level is not None and localizer.level != level:
            raise SarcoError(f"this localizer was trained for {localizer.level}, not {level}", path.parent,
                             f"point --model-dir at a localizer trained with `sarco train-l3 --level {level}`")
        return localizer


def default_model_dir(workspace_root: Path | str | None = None, level: str = "L3") -> Path:
    """Where `sarco train-l3` writes and `sarco predict` looks: <workspace>/l3_localizer; a localizer
    for another level (`sarco train-l3 --level L1`) goes to <workspace>/localizer_L1 beside it."""
    from sarco_nn.workspace import Workspace

    root = Workspace.resolve(workspace_root).root
    return root / "l3_localizer" if level == "L3" else root / f"localizer_{level}"


def has_model(model_dir: Path | str | None) -> bool:
    return model_dir is not None and (Path(model_dir) / CHECKPOINT_FILE).is_file()
