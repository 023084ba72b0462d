"""iResNet face-recognition backbones with the insightface / official GraFIQs state-dict layout.

The module and parameter names (`conv1`, `bn1`, `prelu`, `layer1.0.bn1`, ...,
`layerK.0.downsample.0/1`, `bn2`, `fc`, `features`) are exactly those of
insightface's arcface_torch and of the GraFIQs release, so their `.pth` files
load unchanged. `forward_stages` returns the four stage outputs that GraFIQs
differentiates, so no forward flags or monkey-patching are needed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STAGE_NAMES = ("block1", "block2", "block3", "block4")

# Blocks per stage of each published depth.
ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
DEFAULT_WIDTHS = (64, 128, 256, 512)


class PReLU(nn.PReLU):
    """nn.PReLU whose backward, while its weight is frozen (as GraFIQs scoring freezes every weight), computes
    only the input's gradient: ATen's PReLU backward always reduces the weight's gradient too, and took 8% of
    a bf16 score (43 ms for a 16x64x112x112 input on 2 cores, against 4.7 ms here, bit for bit the same)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.requires_grad:  # training, and the per-sample weight gradients under torch.func
            return super().forward(x)
        return _FrozenWeightPReLU.apply(x, self.weight)


class _FrozenWeightPReLU(torch.autograd.Function):
    generate_vmap_rule = True  # the ablation's per-sample weight gradients run frozen layers under vmap

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, weight)

    @staticmethod
    def setup_context(ctx, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, weight = ctx.saved_tensors
        # g where x > 0, else weight * g: ReLU's fused backward keeps g where x > 0, one addcmul adds the rest
        passed = torch.ops.aten.threshold_backward(grad, x, 0)
        slope = weight.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))  # autocast ran the forward on this cast
        return torch.addcmul(passed, grad - passed, slope), None


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block of iResNet: BN-conv-BN-PReLU-conv(stride)-BN."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """iResNet for 112x112 aligned faces.

    `layers` gives the blocks per stage and `widths` the channels per stage
    (64-128-256-512 for the published models; smaller widths make CPU-sized models).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_features: int = 512,
        dropout: float = 0.0,
        widths: tuple[int, int, int, int] = DEFAULT_WIDTHS,
        input_size: int = 112,
    ):
        super().__init__()
        self.layers_per_stage = tuple(layers)
        self.widths = tuple(widths)
        self.num_features = num_features
        stem = widths[0]
        self.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = PReLU(stem)
        inplanes = stem
        for index, (blocks, planes) in enumerate(zip(layers, widths), start=1):
            setattr(self, f"layer{index}", self._make_stage(inplanes, planes, blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        final_size = input_size // 16  # four stride-2 stages
        self.fc = nn.Linear(inplanes * final_size * final_size, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as insightface: the embedding BN has no learned scale

    @staticmethod
    def _make_stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-5),
        )
        stage = [IBasicBlock(inplanes, planes, stride=2, downsample=downsample)]
        stage += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stages(self, x: torch.Tensor, stages=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The embedding and the outputs of the four stages (`block1` .. `block4`).

        `stages` may replace the four stage modules by callables computing the same thing
        (e.g. `torch.compile`d ones), so the model itself stays untouched."""
        x = self.prelu(self.bn1(self.conv1(x)))
        outputs = {}
        for name, stage in zip(STAGE_NAMES, stages or self.stages()):
            x = stage(x)
            outputs[name] = x
        x = torch.flatten(self.bn2(x), 1)
        embedding = self.features(self.fc(self.dropout(x)))
        return embedding, outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


def build_iresnet(
    arch: str,
    num_features: int = 512,
    dropout: float = 0.0,
    widths: tuple[int, int, int, int] | None = None,
    layers: tuple[int, int, int, int] | None = None,
) -> IResNet:
    """An iResNet by name (`iresnet18` ... `iresnet200`), or custom `layers`/`widths` for small models."""
    if layers is None:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        layers = ARCHITECTURES[arch]
    return IResNet(tuple(layers), num_features=num_features, dropout=dropout, widths=tuple(widths or DEFAULT_WIDTHS))
