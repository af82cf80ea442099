"""The study's classifier architectures, their block structure for unfreezing, and local weights.

Networks are built with random weights (`weights=None`: never a download). `load_weights` takes a
local state dict — an ImageNet torchvision file, or a RadImageNet PyTorch release — and accounts
for every tensor in a `WeightsReport`, because `load_state_dict(strict=False)` alone would let a
wrong file silently train from scratch. InceptionResNetV2 is not in torchvision; it comes from
timm when timm is installed (an optional dependency).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sarco_nn.errors import InputError, SarcoError
from sarco_nn.hashing import sha256_file

__all__ = [
    "ARCHITECTURES", "ArchSpec", "INCEPTION_AUX_MIN_SIZE", "MIN_MATCHED_FRACTION", "NUM_CLASSES",
    "WeightsReport", "arch_spec", "build_model", "check_input_size", "load_weights", "parameter_groups",
    "read_state_dict", "split_outputs"
]

NUM_CLASSES = 2  # logits for (not sarcopenic, sarcopenic)

#: Input edge below which torchvision's InceptionV3 auxiliary head cannot run (its 5×5 pooling
#: needs the 17×17 Mixed_6e map of a 299-pixel input); below it the auxiliary head is left out.
INCEPTION_AUX_MIN_SIZE = 299

#: Fewer backbone tensors matched than this fraction means the file is for another network.
MIN_MATCHED_FRACTION = 0.5

#: Wrappers that checkpoints put around the state dict.
_WRAPPERS = ("state_dict", "model_state_dict", "model", "network_weights", "net", "weights")
#: Prefixes that training wrappers put in front of the keys (DataParallel, RadImageNet backbones).
_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "base_model.")
#: Old torchvision DenseNet names (`denselayer1.norm.1.weight`), as torchvision itself renames them.
_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: default/minimum input edge, classifier head and blocks (input → output)."""

    name: str
    input_size: int
    min_input_size: int
    head: tuple[str, ...]  # parameter-name prefixes of the classifier (new, never loaded)
    blocks: tuple[tuple[str, tuple[str, ...]], ...]  # (block name, prefixes), bottom (stem) to top

    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every parameter group, bottom to top, the head last."""
        return [*self.blocks, ("head", self.head)]


ARCHITECTURES: dict[str, ArchSpec] = {
    "densenet121": ArchSpec(
        "densenet121", 224, 32, ("classifier.",),
        (("stem", ("features.conv0.", "features.norm0.")),
         ("denseblock1", ("features.denseblock1.", "features.transition1.")),
         ("denseblock2", ("features.denseblock2.", "features.transition2.")),
         ("denseblock3", ("features.denseblock3.", "features.transition3.")),
         ("denseblock4", ("features.denseblock4.", "features.norm5.")))),
    "resnet50": ArchSpec(
        "resnet50", 224, 32, ("fc.",),
        (("stem", ("conv1.", "bn1.")), ("layer1", ("layer1.",)), ("layer2", ("layer2.",)),
         ("layer3", ("layer3.",)), ("layer4", ("layer4.",)))),
    "inception_v3": ArchSpec(
        "inception_v3", 299, 75, ("fc.", "AuxLogits.fc."),
        (("stem", ("Conv2d_1a_3x3.", "Conv2d_2a_3x3.", "Conv2d_2b_3x3.", "Conv2d_3b_1x1.", "Conv2d_4a_3x3.")),
         ("mixed5", ("Mixed_5b.", "Mixed_5c.", "Mixed_5d.")),
         ("mixed6", ("Mixed_6a.", "Mixed_6b.", "Mixed_6c.", "Mixed_6d.", "Mixed_6e.", "AuxLogits.conv0.",
                     "AuxLogits.conv1.")),
         ("mixed7", ("Mixed_7a.", "Mixed_7b.", "Mixed_7c.")))),
    "inception_resnet_v2": ArchSpec(
        "inception_resnet_v2", 299, 75, ("classif.",),
        (("stem", ("conv2d_1a.", "conv2d_2a.", "conv2d_2b.", "conv2d_3b.", "conv2d_4a.")),
         ("block35", ("mixed_5b.", "repeat.")),
         ("block17", ("mixed_6a.", "repeat_1.")),
         ("block8", ("mixed_7a.", "repeat_2.", "block8.", "conv2d_7b.")))),
}


def arch_spec(arch: str) -> ArchSpec:
    if arch not in ARCHITECTURES:
        raise SarcoError(f"unknown architecture {arch!r}", fix=f"use one of: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[arch]


def check_input_size(arch: str, size: int | None) -> int:
    """The input edge to use: the architecture's default, or `size` if it is large enough."""
    spec = arch_spec(arch)
    if size is None:
        return spec.input_size
    if size < spec.min_input_size:
        raise SarcoError(f"input size {size} is too small for {arch}",
                         fix=f"use at least {spec.min_input_size} pixels (default {spec.input_size}).")
    return int(size)


def build_model(arch: str, input_size: int | None = None):
    """A randomly initialised network with a 2-class head (nothing is downloaded)."""
    size = check_input_size(arch, input_size)
    if arch == "inception_resnet_v2":
        try:
            import timm
        except ImportError:
            raise SarcoError("inception_resnet_v2 needs the optional package timm",
                             fix="`pip install timm`, or choose densenet121, resnet50 or inception_v3.") from None
        return timm.create_model("inception_resnet_v2", pretrained=False, num_classes=NUM_CLASSES)
    from torchvision import models

    if arch == "inception_v3":
        return models.inception_v3(weights=None, aux_logits=size >= INCEPTION_AUX_MIN_SIZE, init_weights=True,
                                   num_classes=NUM_CLASSES)
    return getattr(models, arch)(weights=None, num_classes=NUM_CLASSES)


def split_outputs(output):
    """(main logits, auxiliary logits or None): InceptionV3 returns both while training."""
    aux = getattr(output, "aux_logits", None)
    logits = getattr(output, "logits", output)
    return logits, aux


def parameter_groups(model, arch: str) -> dict[str, list[str]]:
    """{group: parameter names}, bottom to top then head; every parameter in exactly one group."""
    spec = arch_spec(arch)
    groups: dict[str, list[str]] = {name: [] for name, _ in spec.groups()}
    orphans = []
    for name, _ in model.named_parameters():
        owner = [g for g, prefixes in spec.groups() if name.startswith(prefixes)]
        if len(owner) != 1:
            orphans.append(name)
        else:
            groups[owner[0]].append(name)
    if orphans:  # a torchvision/timm change would land here: fail loudly, never freeze silently
        raise SarcoError(f"internal: {len(orphans)} {arch} parameter(s) in no (or several) unfreezing group(s), "
                         f"e.g. {orphans[:3]}")
    return groups


# ------------------------------------------------------------------------------ weights


@dataclass
class WeightsReport:
    """What a local weights file contributed to the network."""

    source: str
    sha256: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # backbone tensors the file lacks (kept random)
    unexpected: list[str] = field(default_factory=list)  # file tensors the network has no place for
    shape_mismatched: list[str] = field(default_factory=list)
    head_skipped: list[str] = field(default_factory=list)  # the file's classifier (other classes)
    renamed: int = 0  # keys whose prefix or layout was translated
    fraction_matched: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        return (f"weights {self.source} (sha256 {self.sha256[:12]}): {len(self.matched)} backbone tensors matched "
                f"({100 * self.fraction_matched:.1f} %), {len(self.missing)} missing, "
                f"{len(self.shape_mismatched)} shape-mismatched, {len(self.unexpected)} unexpected, "
                f"{len(self.head_skipped)} head tensors skipped (new 2-class head)")


def read_state_dict(path: Path) -> dict:
    """The tensors of a local weights file (torch.load with weights_only=True; common wrappers removed)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path, "give a local .pt/.pth state dict with --weights.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code objects, truncated file, Keras .h5 ...
        raise InputError(f"cannot read as a PyTorch state dict ({str(exc).splitlines()[0][:120]})", path,
                         "give a PyTorch state dict (.pt/.pth); convert Keras .h5 RadImageNet files first.") from None
    for _ in range(3):
        if isinstance(data, dict):
            inner = next((data[k] for k in _WRAPPERS if isinstance(data.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in data.values()):
                data = inner
                continue
        break
    if isinstance(data, torch.nn.Module):  # weights_only never yields one, kept for clarity
        data = data.state_dict()
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)} if isinstance(data, dict) else {}
    if not tensors:
        raise InputError("no tensors found in the weights file", path, "give a state dict of the chosen architecture.")
    return tensors


def _translate(key: str, target: set[str], children: list[str]) -> str:
    """Map a file key onto this network's naming: strip wrapper prefixes, nn.Sequential indices of a
    backbone (`0.weight` → `conv1.weight`), and legacy DenseNet names."""
    changed = True
    while key not in target and changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    head, _, rest = key.partition(".")
    if key not in target and head.isdigit() and int(head) < len(children) and rest:
        key = f"{children[int(head)]}.{rest}"
    match = _DENSENET_LEGACY.match(key)
    if key not in target and match:
        key = match.group(1) + match.group(2)
    return key


def load_weights(model, arch: str, path: Path | str) -> WeightsReport:
    """Load a local state dict into the backbone (never the head); raise if it clearly does not fit."""
    path = Path(path)
    spec = arch_spec(arch)
    source = read_state_dict(path)
    own = model.state_dict()
    target = set(own)
    children = [name for name, _ in model.named_children()]
    report = WeightsReport(source=str(path), sha256=sha256_file(path))
    loadable = {}
    for key, tensor in source.items():
        name = _translate(key, target, children)
        report.renamed += name != key
        if name.startswith(spec.head):
            report.head_skipped.append(name)
        elif name not in target:
            report.unexpected.append(key)
        elif tuple(own[name].shape) != tuple(tensor.shape):
            report.shape_mismatched.append(f"{name} {tuple(tensor.shape)} vs {tuple(own[name].shape)}")
        else:
            loadable[name] = tensor
    report.matched = sorted(loadable)
    backbone = sorted(k for k in target if not k.startswith(spec.head))
    report.missing = [k for k in backbone if k not in loadable]
    report.fraction_matched = len(loadable) / max(1, len(backbone))
    if report.fraction_matched < MIN_MATCHED_FRACTION:
        example = (report.unexpected or report.shape_mismatched or ["none"])[0]
        raise InputError(f"only {len(loadable)}/{len(backbone)} {arch} backbone tensors match this file "
                         f"(e.g. unexpected key {example!r})", path,
                         f"give weights for {arch}, or choose the --arch they were trained for.")
    model.load_state_dict(loadable, strict=False)
    return report
