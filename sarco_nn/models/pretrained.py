"""Load SMIT encoder weights into `SMITSegNet` and say exactly what loaded.

The official fine-tuning code strips `module.` and calls `load_state_dict(strict=False)`, so a
wrong file silently trains from scratch. Here every encoder tensor is accounted for in a
`LoadReport` (matched / missing / unexpected / shape-mismatched / adapted); fewer than
`min_fraction` of the encoder tensors matched, or a shape mismatch no documented adaptation
covers, raises a one-line `SarcoError`.

Accepted files (read with `torch.load(weights_only=True)`, or safetensors for *.safetensors):
  * a plain state dict, optionally `module.`-prefixed (the official `pre_train_weight.pt`);
  * wrapped as {"state_dict": ...} (official SSL script), {"student": ...} (DINO/iBOT style,
    the student is taken), {"model": ...}, {"network_weights": ...} (nnU-Net checkpoints);
  * the sarco encoder format written by `export_encoder` / `sarco pretrain`:
      {"format": "sarco-smit-encoder-v1", "encoder": {official `model.transformer` keys:
       patch_embed.*, layers.{i}.*, norm{i}.*}, "config": {SMITConfig fields}, "dims": 2|3,
       "axes": array-axis orientation codes, e.g. "SPL" (3D) or "PL" (2D)}.
Keys may use the official names (`layers.{i}.blocks.{j}.mlp.fc1`) or this network's MONAI
names (`layers{i+1}.0.blocks.{j}.mlp.linear1`), behind `transformer.`, `encoder.`,
`backbone.`, `swinViT.` or `student.` prefixes.

Orientation. Convolution kernels, relative-position tables and patch-merging weights depend on
which array axis is which anatomical direction. The official loader reorients to RAS and
MONAI arrays are indexed (x, y, z), so official weights are taken as axes "RAS". sarco arrays
follow SimpleITK in `CANONICAL_ORIENTATION` (LPS), indexed (z, y, x) -> axes "SPL"; 2D slices
are (y, x) -> "PL". When source and network axes differ, those tensors are permuted/flipped so
the loaded network computes the same function on the reoriented image (tested exactly).

3D -> 2D adaptation (3D official weights for the 2D L3 configuration), each key listed in
`adapted`:
  * patch-embedding kernel: SUMMED over the cranio-caudal (slice) axis. Why sum and not mean:
    with the sum, the 2D embedding of a slice equals the 3D embedding of that slice repeated
    along depth (neighbouring 2 mm slices are nearly that), so the following LayerNorm and
    every later layer see the activation statistics they were pretrained on; the mean halves
    the kernel against an unchanged bias and shifts those statistics.
  * relative-position bias tables: the dz = 0 plane of the 3D table (in-plane offsets only).
  * relative-position index buffers: regenerated for the 2D window (never loaded).
  * patch merging: the two depth neighbours of each in-plane neighbour feed the same 2D
    input, so their `reduction` weight blocks are summed and their LayerNorm weight/bias
    averaged (exact for a depth-constant input whenever the two norm blocks agree).
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sarco_nn.atomic import write_bytes_atomic, write_json_atomic
from sarco_nn.constants import CANONICAL_ORIENTATION
from sarco_nn.hashing import sha256_file
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.models.smit import SMITConfig, SMITEncoder, SMITSegNet, merge_offsets

__all__ = [
    "AxisMap", "ENCODER_FORMAT", "LoadReport", "OFFICIAL_AXES_3D", "REPORT_NAME", "axis_mapping",
    "check_report", "config_from_checkpoint", "export_encoder", "inspect_pretrained_encoder",
    "load_pretrained_encoder", "map_to_encoder_keys", "network_axes", "official_to_ours",
    "ours_to_official", "read_checkpoint_state_dict", "reorient", "write_load_report"
]

ENCODER_FORMAT = "sarco-smit-encoder-v1"
REPORT_NAME = "pretrained_load_report.json"
#: Axis codes of official SMIT weights: MONAI LoadImage + Orientationd("RAS") -> (x, y, z).
OFFICIAL_AXES_3D = "RAS"
_WRAPPERS = ("student", "state_dict", "model", "network_weights", "teacher", "encoder")
_PREFIXES = ("transformer.", "encoder.", "backbone.", "swinViT.", "model.")
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def network_axes(spatial_dims: int) -> str:
    """Orientation codes of sarco's network input axes: 3D (z, y, x) -> "SPL", 2D (y, x) -> "PL"."""
    axes3 = CANONICAL_ORIENTATION[::-1]  # SimpleITK arrays index the image axes in reverse
    return axes3 if spatial_dims == 3 else axes3[1:]  # 2D drops the slice axis (array[z])


# ----------------------------------------------------------------------------- report
@dataclass
class LoadReport:
    source: str
    sha256: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    non_finite: list[str] = field(default_factory=list)  # matched tensors holding NaN or inf
    fraction_matched: float = 0.0
    source_format: str = ""
    source_dims: int = 0
    target_dims: int = 0
    source_axes: str = ""
    target_axes: str = ""
    total: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        adapt = f", {len(self.adapted)} adapted" if self.adapted else ""
        orient = (f" [{self.source_dims}D {self.source_axes} -> {self.target_dims}D {self.target_axes}]"
                  if self.source_axes else "")
        return (f"pretrained {self.source} (sha256 {self.sha256[:12]}, {self.source_format}){orient}: "
                f"{len(self.matched)}/{self.total} encoder tensors matched ({100 * self.fraction_matched:.1f} %)"
                f"{adapt}, {len(self.missing)} missing, {len(self.shape_mismatched)} shape-mismatched, "
                f"{len(self.unexpected)} unexpected (ignored)")


def write_load_report(report: LoadReport, out_dir: Path) -> Path:
    """Write `pretrained_load_report.json` into out_dir atomically (temp file + rename)."""
    target = Path(out_dir) / REPORT_NAME
    write_json_atomic(target, report.to_json(), newline=True)
    return target


# ----------------------------------------------------------------------------- reading
@dataclass
class _Checkpoint:
    state: dict[str, torch.Tensor]
    fmt: str
    dims: int | None = None
    axes: str | None = None


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:160]}"


#: A PyTorch checkpoint is a zip archive of stored (uncompressed) tensors, so its members add up to
#: about its own size. Far more is a "zip bomb" that would fill memory before any check could refuse it.
MAX_UNPACKED_RATIO = 4.0
MAX_UNPACKED_SLACK_BYTES = 64 << 20


def _refuse_zip_bomb(path: Path) -> None:
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load gives its own one-line error for a damaged archive
    if unpacked > MAX_UNPACKED_RATIO * path.stat().st_size + MAX_UNPACKED_SLACK_BYTES:
        raise InputError(f"refused: the archive unpacks to {unpacked / 2**30:.1f} GiB from "
                         f"{path.stat().st_size / 2**20:.1f} MiB (a compressed 'zip bomb', not a checkpoint)", path,
                         "use a checkpoint saved by torch.save from a source you trust")


def _load_raw(path: Path) -> Any:
    if not path.is_file():
        raise InputError("pretrained weights file not found", path, "give the path of a downloaded .pt/.pth file")
    if path.stat().st_size == 0:
        raise InputError("pretrained weights file is empty", path, "download it again")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors ships with the venv
            raise InputError("reading .safetensors needs the safetensors package", path, "pip install safetensors") from exc
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise InputError(f"not a readable safetensors file ({_first_line(exc)})", path,
                             "download it again; the file is corrupt or truncated") from exc
    _refuse_zip_bomb(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        blocked = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln]
        if blocked and all("numpy" in ln or "torch.device" in ln for ln in blocked):
            # an nnU-Net/sarco training checkpoint: numpy scalars in its log, allow-listed by the
            # trainer-checkpoint loader (still weights_only, never arbitrary code)
            from sarco_nn.models.checkpoints import load_trainer_checkpoint

            return load_trainer_checkpoint(path)
        if blocked:  # weights_only refused to import/call something: pickled code or custom classes
            raise InputError(f"refused: the file holds pickled Python objects, not only tensors ({blocked[0][:120]})",
                             path, "use a plain state-dict checkpoint from a source you trust") from exc
        detail = _first_line(exc) if "Weights only load failed" not in str(exc) else "unreadable pickle data"
        raise InputError(f"not a readable PyTorch checkpoint ({detail})", path,
                         "download it again; the file is corrupt or truncated") from exc


def _tensors_only(obj: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _read_checkpoint(path: Path) -> _Checkpoint:
    path = Path(path)
    raw = _load_raw(path)
    if isinstance(raw, dict) and raw.get("format") == ENCODER_FORMAT:
        state = _tensors_only(raw.get("encoder"))
        dims = raw.get("dims")
        if not state or dims not in (2, 3):
            raise InputError(f"{ENCODER_FORMAT} file without encoder tensors or dims", path,
                             "re-export it with `sarco pretrain`")
        return _Checkpoint(state, ENCODER_FORMAT, int(dims), str(raw.get("axes") or network_axes(int(dims))))
    obj, fmt = raw, "state dict"
    for _ in range(3):  # unwrap e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, dict) or _tensors_only(obj):
            break
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj, fmt = obj[key], f"{{'{key}': ...}}"
    state = _tensors_only(obj)
    if not state:
        raise InputError("no tensors found: not a model checkpoint", path,
                         "give an SMIT state dict, an nnU-Net checkpoint or a `sarco pretrain` encoder.pt")
    return _Checkpoint(state, fmt)


def read_checkpoint_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat name -> tensor mapping inside any accepted checkpoint file (see module doc)."""
    return _read_checkpoint(Path(path)).state


# ----------------------------------------------------------------------------- key names
_OFFICIAL_LAYER = re.compile(r"^layers\.(\d+)\.(.*)$")
_OURS = re.compile(r"^(patch_embed\.|layers\d+\.0\.|norm\d+\.)")


def official_to_ours(key: str) -> str | None:
    """Official `transformer` key -> SMITEncoder key (None when it is not an encoder tensor)."""
    m = _OFFICIAL_LAYER.match(key)
    if m:
        rest = m.group(2).replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
        return f"layers{int(m.group(1)) + 1}.0.{rest}"
    return key if _OURS.match(key) else None


def ours_to_official(key: str) -> str:
    """SMITEncoder key -> official `model.transformer` key (inverse of `official_to_ours`)."""
    m = re.match(r"^layers(\d+)\.0\.(.*)$", key)
    if not m:
        return key
    rest = m.group(2).replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
    return f"layers.{int(m.group(1)) - 1}.{rest}"


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in ("module.", "_orig_mod.") + _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _map_keys(state: dict) -> tuple[dict[str, tuple[str, torch.Tensor]], list[str], bool]:
    """-> ({our key: (source key, tensor)}, unexpected source keys, whether names were official)."""
    keys = list(state)
    has_student = any(_strip_ddp(k).startswith("student.") for k in keys)
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    unexpected: list[str] = []
    official = False
    for k in keys:
        base = _strip_ddp(k)
        if has_student and base.startswith("teacher."):
            unexpected.append(k)
            continue
        for p in ("student.", "teacher."):
            if base.startswith(p):
                base = base[len(p):]
        stripped = _strip(base)
        ours = official_to_ours(stripped)
        if ours is None or ours in mapped:
            unexpected.append(k)
            continue
        official |= bool(_OFFICIAL_LAYER.match(stripped))
        mapped[ours] = (k, state[k])
    return mapped, unexpected, official


def _strip_ddp(key: str) -> str:
    while key.startswith(("module.", "_orig_mod.")):
        key = key.split(".", 1)[1]
    return key


def map_to_encoder_keys(state: dict) -> dict:
    """Strip `module.`/wrapper prefixes, keep the student, rename official -> SMITEncoder keys."""
    return {ours: t for ours, (_, t) in _map_keys(state)[0].items()}


# ----------------------------------------------------------------------------- orientation
@dataclass(frozen=True)
class AxisMap:
    """For each target axis: the source axis it comes from and whether it is reversed."""

    order: tuple[int, ...]
    flips: tuple[bool, ...]
    dropped: tuple[int, ...]  # source axes absent from the target (3D -> 2D)

    @property
    def identity(self) -> bool:
        return self.order == tuple(range(len(self.order))) and not any(self.flips) and not self.dropped


def axis_mapping(source: str, target: str) -> AxisMap:
    """Axis map between orientation codes, e.g. ("RAS", "SPL") or ("RAS", "PL")."""
    order, flips = [], []
    for code in target.upper():
        if code in source.upper():
            order.append(source.upper().index(code))
            flips.append(False)
        elif _OPPOSITE.get(code, "?") in source.upper():
            order.append(source.upper().index(_OPPOSITE[code]))
            flips.append(True)
        else:
            raise SarcoError(f"weights with axes {source!r} have no axis for direction {code!r} of the network")
    dropped = tuple(i for i in range(len(source)) if i not in order)
    return AxisMap(tuple(order), tuple(flips), dropped)


def reorient(x: torch.Tensor, amap: AxisMap, first_spatial: int = 2) -> torch.Tensor:
    """Re-index an array with source axes into target axes (no dropped axes): images in tests."""
    lead = list(range(first_spatial))
    x = x.permute(lead + [first_spatial + i for i in amap.order])
    flip = [first_spatial + t for t, f in enumerate(amap.flips) if f]
    return x.flip(flip) if flip else x


def _adapt_patch_kernel(w: torch.Tensor, amap: AxisMap) -> torch.Tensor:
    n_kept = len(amap.order)
    w = w.permute([0, 1] + [2 + i for i in amap.order] + [2 + i for i in amap.dropped])
    if amap.dropped:
        w = w.sum(dim=tuple(range(2 + n_kept, w.ndim)))  # see module doc: sum, not mean
    flip = [2 + t for t, f in enumerate(amap.flips) if f]
    return (w.flip(flip) if flip else w).contiguous()


def _adapt_bias_table(table: torch.Tensor, amap: AxisMap) -> torch.Tensor | None:
    n_src = len(amap.order) + len(amap.dropped)
    side = round(table.shape[0] ** (1.0 / n_src))
    if side ** n_src != table.shape[0] or side % 2 == 0:
        return None  # not an isotropic window table: report as shape mismatch
    t = table.reshape(*([side] * n_src), table.shape[1])
    t = t.permute(list(amap.order) + list(amap.dropped) + [n_src])
    for _ in amap.dropped:
        t = t.select(len(amap.order), side // 2)  # relative offset 0 along the dropped axis
    flip = [i for i, f in enumerate(amap.flips) if f]
    t = t.flip(flip) if flip else t
    return t.reshape(-1, table.shape[1]).contiguous()


def _merge_sources(amap: AxisMap) -> list[list[int]]:
    """For each target merging neighbour, the source neighbours that land on it."""
    src = merge_offsets(len(amap.order) + len(amap.dropped))
    out = []
    for t_off in merge_offsets(len(amap.order)):
        out.append([i for i, s_off in enumerate(src)
                    if all((s_off[amap.order[k]] ^ amap.flips[k]) == t_off[k] for k in range(len(t_off)))])
    return out


def _adapt_merging(t: torch.Tensor, amap: AxisMap, reduce: str) -> torch.Tensor | None:
    n_src = 2 ** (len(amap.order) + len(amap.dropped))
    cols = t.shape[-1]
    if cols % n_src:
        return None
    chunks = t.split(cols // n_src, dim=-1)
    groups = [torch.stack([chunks[i] for i in idx]) for idx in _merge_sources(amap)]
    parts = [g.sum(0) if reduce == "sum" else g.mean(0) for g in groups]
    return torch.cat(parts, dim=-1).contiguous()


def _adapt(key: str, tensor: torch.Tensor, amap: AxisMap) -> torch.Tensor | None:
    """Tensor as the target network needs it; None when no adaptation applies."""
    if key == "patch_embed.proj.weight":
        return _adapt_patch_kernel(tensor, amap) if tensor.ndim == 2 + len(amap.order) + len(amap.dropped) else None
    if key.endswith("attn.relative_position_bias_table"):
        return _adapt_bias_table(tensor, amap)
    if key.endswith("downsample.reduction.weight"):
        return _adapt_merging(tensor, amap, "sum")
    if key.endswith(("downsample.norm.weight", "downsample.norm.bias")):
        return _adapt_merging(tensor, amap, "mean")
    return tensor


# ----------------------------------------------------------------------------- loading
def _encoder_of(network: nn.Module) -> SMITEncoder:
    enc = network.encoder if isinstance(network, SMITSegNet) else network
    if not isinstance(enc, SMITEncoder):
        raise TypeError(f"expected SMITSegNet or SMITEncoder, got {type(network).__name__}")
    return enc


def _source_dims(mapped: dict[str, tuple[str, torch.Tensor]], ckpt: _Checkpoint) -> int | None:
    if ckpt.dims:
        return ckpt.dims
    kernel = mapped.get("patch_embed.proj.weight")
    return None if kernel is None else kernel[1].ndim - 2


def inspect_pretrained_encoder(network: nn.Module, path: Path, source_axes: str | None = None
                               ) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Match a checkpoint against the network's encoder without loading or judging it.

    Returns the report and the new encoder state (network tensors where nothing matched).
    `source_axes` overrides the orientation assumed for the file (see module doc).
    """
    path = Path(path)
    encoder = _encoder_of(network)
    ckpt = _read_checkpoint(path)
    mapped, unexpected, official_names = _map_keys(ckpt.state)
    target_dims = encoder.spatial_dims
    src_dims = _source_dims(mapped, ckpt) or target_dims
    if src_dims < target_dims:
        raise SarcoError(f"{src_dims}D encoder weights cannot initialise a {target_dims}D network", path,
                         "use 3D weights (official SMIT or `sarco pretrain` in 3D)")
    if source_axes is None:
        source_axes = ckpt.axes or (OFFICIAL_AXES_3D if official_names and src_dims == 3 else network_axes(src_dims))
    if len(source_axes) != src_dims:
        raise SarcoError(f"source axes {source_axes!r} do not fit {src_dims}D weights", path)
    target_axes = network_axes(target_dims)
    amap = axis_mapping(source_axes, target_axes)

    own = encoder.state_dict()
    new_state = {k: v.clone() for k, v in own.items()}
    report = LoadReport(source=str(path.resolve()), sha256=sha256_file(path), unexpected=list(unexpected),
                        source_format=ckpt.fmt, source_dims=src_dims, target_dims=target_dims,
                        source_axes=source_axes, target_axes=target_axes, total=len(own))
    for key, ref in own.items():
        if key.endswith("relative_position_index"):
            # a pure function of the window size: always our own buffer, never loaded
            src = mapped.get(key)
            report.matched.append(key)
            if src is None or src[1].shape != ref.shape or not torch.equal(src[1].to(ref.dtype), ref):
                report.adapted.append(key)  # regenerated for this network's window
            continue
        if key not in mapped:
            report.missing.append(key)
            continue
        src_key, tensor = mapped[key]
        value = tensor if amap.identity else _adapt(key, tensor, amap)
        if value is None or tuple(value.shape) != tuple(ref.shape):
            shown = tuple(tensor.shape)
            report.shape_mismatched.append(f"{src_key} {list(shown)} -> {key} {list(ref.shape)}")
            continue
        new_state[key] = value.to(dtype=ref.dtype)
        report.matched.append(key)
        if new_state[key].is_floating_point() and not bool(torch.isfinite(new_state[key]).all()):
            report.non_finite.append(key)
        if value is not tensor:
            report.adapted.append(key)
    for key in set(mapped) - set(own):
        report.unexpected.append(mapped[key][0])
    report.fraction_matched = len(report.matched) / max(report.total, 1)
    return report, new_state


def check_report(report: LoadReport, min_fraction: float = 0.9) -> None:
    """Raise a one-line SarcoError when the weights must not be used: a shape mismatch, a NaN or
    infinite value in a tensor that would load (a diverged run's weights "matched 100 %"), too few matched."""
    if report.shape_mismatched:
        raise SarcoError(f"{report.summary_line()}; first mismatch: {report.shape_mismatched[0]}",
                         fix="use weights of the same SMIT configuration (Trans-Small: embed 48, depths 2-2-4-2; "
                             "`sarco pretrain --preset P` gives P's, with `--tissues 4` for a four-tissue dataset)")
    if report.non_finite:
        raise SarcoError(f"{report.summary_line()}; {len(report.non_finite)} tensor(s) hold NaN or infinite values "
                         f"(first: {report.non_finite[0]}), which would train only NaN",
                         fix="use the weights of a run that did not diverge (an earlier checkpoint), or download "
                             "them again")
    if report.fraction_matched < min_fraction:
        raise SarcoError(f"{report.summary_line()}; below the required {100 * min_fraction:.0f} %",
                         fix="check that the file holds SMIT encoder weights (see pretrained_load_report.json)")


def load_pretrained_encoder(network: nn.Module, path: Path, min_fraction: float = 0.9,
                            source_axes: str | None = None) -> LoadReport:
    """Load encoder weights into `network` (SMITSegNet or SMITEncoder) or raise; returns the report."""
    report, new_state = inspect_pretrained_encoder(network, path, source_axes)
    check_report(report, min_fraction)
    _encoder_of(network).load_state_dict(new_state, strict=True)
    return report


def export_encoder(network: nn.Module, path: Path, dims: int) -> None:
    """Write the encoder in the sarco format (official key names, config, dims, axes); atomic.

    Serialised in memory first: torch.save names its zip records after the file it writes, so
    saving to a temporary name would make the same weights hash differently; this way the file's
    SHA-256 (recorded in cards and load reports) identifies the weights."""
    encoder = _encoder_of(network)
    if dims != encoder.spatial_dims:
        raise ValueError(f"dims={dims} but the encoder is {encoder.spatial_dims}D")
    payload = {
        "format": ENCODER_FORMAT,
        "encoder": {ours_to_official(k): v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(encoder.config).items()},
        "dims": int(dims),
        "axes": network_axes(dims),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def config_from_checkpoint(path: Path) -> SMITConfig | None:
    """The SMITConfig stored in a sarco encoder file (None for other formats)."""
    raw = _load_raw(Path(path))
    if isinstance(raw, dict) and raw.get("format") == ENCODER_FORMAT and isinstance(raw.get("config"), dict):
        return SMITConfig.from_dict({k: v for k, v in raw["config"].items() if k in SMITConfig.__dataclass_fields__})
    return None
