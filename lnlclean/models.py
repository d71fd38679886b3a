"""Backbone registry: one registered builder per network family.

Adding a backbone is one decorated function::

    @register_backbone("my-net", description="...")
    def my_net(n_classes: int, in_channels: int) -> nn.Module: ...

Torchvision's ImageNet models are reached as ``tv:<name>`` (for example ``tv:resnet50``);
their ImageNet weights load from a local state dict (``weights``) or, when the user asks
for ``weights="imagenet"`` and has internet, through torchvision's download.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import efficientnet_lite
from .errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its builder, the image size it is made for, and the input statistics its weights expect.

    `input_stats` is (mean, std) per RGB channel on [0, 1] images for pretrained weights; None
    standardises by the dataset's own statistics.
    """

    name: str
    builder: Callable[[int, int], nn.Module]
    description: str
    default_image_size: int
    input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    description: str,
    default_image_size: int = 64,
    input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
):
    """Decorator that registers `builder(n_classes, in_channels) -> nn.Module` under `name`.

    Returns the decorator; the decorated builder is returned unchanged.
    """

    def decorate(builder):
        BACKBONES[name] = BackboneSpec(name, builder, description, default_image_size, input_stats)
        return builder

    return decorate


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """Returns a 3×3 convolution followed by batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@register_backbone("small-cnn", "4 conv blocks, ~0.3M parameters; the fast CPU default")
def small_cnn(n_classes: int, in_channels: int) -> nn.Module:
    """Returns a four-block CNN (widths 32-64-128-192) with global average pooling and a linear head.

    Average, not max, pooling: at 32 px the max over a 4×4 map of fresh BN-ReLU features made
    the first few steps produce logits in the hundreds, which two-network methods (PMNAR) did
    not recover from; the average keeps the head's input at unit scale.
    """
    widths = (32, 64, 128, 192)
    layers: list[nn.Module] = [conv_bn(in_channels, widths[0])]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.MaxPool2d(2, ceil_mode=True), conv_bn(c_in, c_out)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], n_classes)]
    return nn.Sequential(*layers)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class BasicBlock(nn.Module):
    """Post-activation basic block, as in the original ResNet-18/34."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3×3 stem, four stages (64-512), global average pooling."""

    def __init__(self, block: type[nn.Module], depths: tuple[int, ...], n_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.preact = block is PreActBlock
        self.stem_bn = nn.Identity() if self.preact else nn.BatchNorm2d(64)
        stages, c_in = [], 64
        for stage, depth in enumerate(depths):
            c_out = 64 * 2**stage
            for i in range(depth):
                stages.append(block(c_in, c_out, 2 if (i == 0 and stage > 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(c_in) if self.preact else nn.Identity()
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_bn(self.stem(x))
        if not self.preact:
            out = torch.relu(out)
        out = self.stages(out)
        out = torch.relu(self.final_bn(out)) if self.preact else out
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_backbone("preact-resnet18", "PreAct ResNet-18 for 32 px images, the papers' CIFAR network")
def preact_resnet18(n_classes: int, in_channels: int) -> nn.Module:
    """Returns a PreAct ResNet-18 with a 3×3 stem (11M parameters)."""
    return CifarResNet(PreActBlock, (2, 2, 2, 2), n_classes, in_channels)


@register_backbone("resnet34", "ResNet-34 with a 3×3 stem for small images (ALR's network)")
def resnet34(n_classes: int, in_channels: int) -> nn.Module:
    """Returns a ResNet-34 with a 3×3 stem (21M parameters)."""
    return CifarResNet(BasicBlock, (3, 4, 6, 3), n_classes, in_channels)


@register_backbone(
    "efficientnet-lite0",
    "EfficientNet-Lite0 with ImageNet weights (4.7M parameters; the weights ship with the package)",
    default_image_size=128,
    input_stats=(efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD),
)
def efficientnet_lite0(n_classes: int, in_channels: int) -> nn.Module:
    """Returns EfficientNet-Lite0 with its ImageNet weights and a new `n_classes`-way classifier.

    See :mod:`lnlclean.efficientnet_lite`.
    """
    if in_channels != 3:
        raise UserError(f"--backbone efficientnet-lite0: needs RGB images, these have {in_channels} channel(s)")
    return efficientnet_lite.pretrained_lite0(n_classes)


def feature_head(dim: int, n_classes: int) -> nn.Module:
    """Returns the network ``--features frozen`` trains on `dim`-d embeddings: batch norm, then a linear classifier.

    A linear head: with a hidden layer of 256 the head memorised the wrong labels of 5,000
    CIFAR-10 images (at 20 epochs the ce, alr and alim audits flagged nothing, docs/training.md).
    """
    return nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, n_classes))


def input_stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Returns the (mean, std) per RGB channel that `backbone`'s pretrained weights expect.

    None means: standardise by the dataset's own statistics.
    """
    if backbone.startswith("tv:"):
        return None
    return _spec(backbone).input_stats


class TwoHeadNetwork(nn.Module):
    """A backbone with a second, auxiliary linear head on the features its own head reads.

    Calling it returns the main head's logits, so it stands wherever the backbone does;
    :meth:`both` returns (main, auxiliary) outputs from one forward pass; the auxiliary head
    has `aux_outputs` outputs (class logits, or a projection for a contrastive loss). The features are
    taken from the input of the backbone's last ``nn.Linear``, which every registered backbone
    and torchvision classifier ends in.
    """

    def __init__(self, backbone: nn.Module, aux_outputs: int):
        super().__init__()
        self.backbone = backbone
        head = last_linear(backbone)
        self.aux_head = nn.Linear(head.in_features, aux_outputs).to(head.weight.device)
        self._features: torch.Tensor | None = None
        head.register_forward_pre_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, inputs: tuple) -> None:
        self._features = inputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the main logits (B×K) and the auxiliary outputs (B×aux_outputs) of `x` from one forward pass."""
        main = self.backbone(x)
        return main, self.aux_head(self._features)


def last_linear(net: nn.Module) -> nn.Linear:
    """Returns the last ``nn.Linear`` registered in `net` (its classification head).

    Raises ValueError when `net` has none.
    """
    linears = [module for module in net.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no linear head")
    return linears[-1]


def backbone_names() -> list[str]:
    """Returns the registered backbone names (torchvision models are `tv:<name>` on top)."""
    return sorted(BACKBONES)


def default_image_size(backbone: str) -> int:
    """Returns the side length, in pixels, that `backbone` is built for."""
    if backbone.startswith("tv:"):
        return 224
    return _spec(backbone).default_image_size


def build_backbone(backbone: str, n_classes: int, in_channels: int, weights: str | None = None) -> nn.Module:
    """Returns a freshly initialised network `backbone` with `n_classes` outputs.

    `weights` is a path to a local state dict (any backbone) or, for ``tv:`` models only,
    ``"imagenet"`` for torchvision's default pretrained weights (needs internet).
    Raises UserError for an unknown backbone or unusable weights.
    """
    if backbone.startswith("tv:"):
        net = _torchvision_model(backbone[3:], n_classes, in_channels, weights)
    else:
        net = _spec(backbone).builder(n_classes, in_channels)
    if weights and weights != "imagenet":
        _load_local_weights(net, Path(weights))
    return net


def _spec(backbone: str) -> BackboneSpec:
    if backbone not in BACKBONES:
        raise UserError(
            f"--backbone {backbone!r}: unknown; choose one of {', '.join(backbone_names())} or tv:<torchvision model>"
        )
    return BACKBONES[backbone]


def _torchvision_model(name: str, n_classes: int, in_channels: int, weights: str | None) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"--backbone tv:{name}: torchvision has no such classification model")
    if in_channels != 3:
        raise UserError(f"--backbone tv:{name}: torchvision models need 3-channel images, these have {in_channels}")
    if weights == "imagenet":
        net = torchvision.models.get_model(name, weights="DEFAULT")
        _replace_head(net, n_classes)
        return net
    return torchvision.models.get_model(name, weights=None, num_classes=n_classes)


def _replace_head(net: nn.Module, n_classes: int) -> None:
    """Swap the last linear layer of a pretrained torchvision model for one with `n_classes` outputs."""
    for parent in reversed(list(net.modules())):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                setattr(parent, child_name, nn.Linear(child.in_features, n_classes))
                return
    raise UserError("--weights imagenet: could not find the classification head to replace")


def _load_local_weights(net: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means the file is not a state dict
        raise UserError(f"--weights {path}: not a readable PyTorch state dict ({type(err).__name__})") from err
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(f"--weights {path}: no tensor matches the backbone's layers")
    net.load_state_dict(usable, strict=False)
