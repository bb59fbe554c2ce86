"""Small classifiers of common families, in torch (the ``train`` extra), for the generality table.

- ``mnv3``: MobileNetV3-style: inverted residuals with depthwise Convs, HardSwish, and
  squeeze-excitation (global pool -> 1x1 Conv -> ReLU -> 1x1 Conv -> HardSigmoid -> Mul).
- ``resnet``: ResNet-style basic blocks (Conv-BN-ReLU-Conv-BN + identity or 1x1 projection).
- ``shared``: one Conv-BN-ReLU block applied three times with the same weights (weight tying),
  so the exported graph has initializers read by several nodes.
- ``dwsep``: MobileNetV1-style depthwise-separable stack with ReLU6 and a max-pool stem.

Every network ends in global average pooling and a linear layer giving logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            act: Callable[[], nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Head(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int, se: bool, hswish: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_bn(cin, hidden, 1, act=act))
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV3Style(nn.Module):
    # (kernel, expansion, out, squeeze-excite, hardswish, stride): MobileNetV3-Small's pattern, narrower
    CONFIG = ((3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
              (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 120, 48, True, True, 1),
              (5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1))

    def __init__(self, classes: int, width: float = 1.0) -> None:
        super().__init__()

        def w(c: int) -> int:
            return max(8, int(c * width + 4) // 8 * 8)

        layers: list[nn.Module] = [conv_bn(3, w(16), 3, 2, act=nn.Hardswish)]
        cin = w(16)
        for k, hidden, cout, se, hs, stride in self.CONFIG:
            layers.append(InvertedResidual(cin, w(hidden), w(cout), k, stride, se, hs))
            cin = w(cout)
        layers.append(conv_bn(cin, w(288), 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = Head(w(288), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.skip = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


class ResNetStyle(nn.Module):
    def __init__(self, classes: int, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, int(v * width)) for v in (16, 32, 64, 128)]
        self.stem = nn.Sequential(conv_bn(3, c[0], 3, 2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = c[0]
        for i, cout in enumerate(c):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class SharedBlocks(nn.Module):
    """Each stage applies one 3x3 Conv ``repeats`` times with the same weights (weight tying), each
    application with its own BatchNorm: the statistics differ per application, so one shared
    BatchNorm's running averages would fit none of them."""

    def __init__(self, classes: int, width: float = 1.0, repeats: int = 3) -> None:
        super().__init__()
        c = [max(8, int(v * width)) for v in (24, 48, 96)]
        self.downs = nn.ModuleList()
        self.shared = nn.ModuleList()
        self.norms = nn.ModuleList()
        cin = 3
        for cout in c:
            self.downs.append(conv_bn(cin, cout, 3, 2))
            self.shared.append(nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
            self.norms.append(nn.ModuleList(nn.BatchNorm2d(cout) for _ in range(repeats)))
            cin = cout
        self.relu = nn.ReLU()
        self.head = Head(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, conv, norms in zip(self.downs, self.shared, self.norms, strict=True):
            x = down(x)
            for norm in norms:
                x = x + self.relu(norm(conv(x)))
        return self.head(x)


class DepthwiseSeparable(nn.Module):
    def __init__(self, classes: int, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, int(v * width)) for v in (32, 64, 128, 128, 256, 256)]
        strides = (1, 2, 1, 2, 1)
        layers: list[nn.Module] = [conv_bn(3, c[0], 3, 2, act=nn.ReLU6), nn.MaxPool2d(2)]
        for cin, cout, stride in zip(c[:-1], c[1:], strides, strict=True):
            layers += [conv_bn(cin, cin, 3, stride, groups=cin, act=nn.ReLU6), conv_bn(cin, cout, 1, act=nn.ReLU6)]
        self.features = nn.Sequential(*layers)
        self.head = Head(c[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


NETS: dict[str, Callable[..., nn.Module]] = {
    "mnv3": MobileNetV3Style,
    "resnet": ResNetStyle,
    "shared": SharedBlocks,
    "dwsep": DepthwiseSeparable,
}
SUMMARIES = {
    "mnv3": "MobileNetV3-style: inverted residuals, depthwise Convs, HardSwish, squeeze-excitation (HardSigmoid gate)",
    "resnet": "ResNet-style: basic residual blocks with BatchNorm, max-pool stem",
    "shared": "weight-tied: one 3x3 Conv per stage applied three times, a BatchNorm per application "
              "(shared initializers)",
    "dwsep": "MobileNetV1-style depthwise-separable stack with ReLU6",
}
