"""A small fully-convolutional CNN: the feature extractor ``φ`` that every learned tracker shares.

An AlexNet-like stack with batch normalisation, small enough to train from random weights on a
laptop CPU in minutes (about 230k parameters)::

    layer   operation                         channels  stride  receptive field
    conv1   conv 11×11 / 2, BN, ReLU              32        2          11
    pool1   max-pool 3×3 / 2                      32        4          15
    conv2   conv 5×5, BN, ReLU                    64        4          31
    pool2   max-pool 3×3 / 2                      64        8          39
    conv3   conv 3×3, BN, ReLU                    96        8          55
    conv4   conv 3×3, BN (no ReLU: an embedding)  128       8          71

There is no padding anywhere, so the network is exactly translation-equivariant (SiamFC's
requirement): shifting the input by ``stride`` pixels shifts the output by one cell, and output
cell ``(i, j)`` of layer ``L`` sees the input square of side ``receptive_field`` whose top-left
pixel is ``(stride·i, stride·j)``. With SiamFC's crops a 127×127 exemplar gives an 8×8×128
feature map and a 255×255 search region a 24×24×128 one; their correlation is 17×17.

Inputs are ``(B, 3, H, W)`` float32 tensors of RGB values in [0, 1] (:func:`to_tensor` makes them
from uint8 images). ``Backbone.features(x, layer)`` cuts the network at any layer;
``LAYERS[layer]`` gives that layer's stride and receptive field; :func:`feature_map` is the
one-call version for a numpy image that notebook 03 uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

__all__ = ["LayerInfo", "LAYERS", "Backbone", "FreezableBackbone", "to_tensor", "output_size", "feature_map",
           "trained_backbone", "receptive_field"]


@dataclass(frozen=True)
class LayerInfo:
    """Geometry of one layer's output, in input pixels."""

    channels: int         # feature channels C
    stride: int           # input pixels between neighbouring output cells
    receptive_field: int  # side of the input square one output cell sees
    kernel: int           # this layer's own kernel side
    step: int             # this layer's own stride


#: layer name -> geometry, in network order (the numbers the module docstring tabulates)
LAYERS: dict[str, LayerInfo] = {
    "conv1": LayerInfo(32, 2, 11, 11, 2),
    "pool1": LayerInfo(32, 4, 15, 3, 2),
    "conv2": LayerInfo(64, 4, 31, 5, 1),
    "pool2": LayerInfo(64, 8, 39, 3, 2),
    "conv3": LayerInfo(96, 8, 55, 3, 1),
    "conv4": LayerInfo(128, 8, 71, 3, 1),
}


def receptive_field(layers) -> list[tuple[int, int]]:
    """Stride and receptive field after each layer of a stack of convolutions and poolings.

    Args:
        layers: a list of ``(kernel, step)`` pairs, first layer first (no dilation).
    Returns:
        a list of ``(stride, receptive_field)`` in input pixels, one per layer: with ``j_0 = 1``
        and ``r_0 = 1``, ``r_l = r_{l-1} + (k_l - 1)·j_{l-1}`` and ``j_l = j_{l-1}·s_l``.

    >>> receptive_field([(11, 2), (3, 2), (5, 1)])
    [(2, 11), (4, 15), (4, 31)]
    """
    out, jump, rf = [], 1, 1
    for kernel, step in layers:
        rf = rf + (int(kernel) - 1) * jump
        jump = jump * int(step)
        out.append((jump, rf))
    return out


def output_size(input_size: int, layer: str = "conv4") -> int:
    """Side of the output of ``layer`` for a square input of side ``input_size`` (no padding).

    >>> output_size(127), output_size(255)
    (8, 24)
    """
    n = int(input_size)
    for name, info in LAYERS.items():
        n = (n - info.kernel) // info.step + 1
        if name == layer:
            return max(n, 0)
    raise KeyError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    parts = [nn.Conv2d(c_in, c_out, kernel, stride), nn.BatchNorm2d(c_out)]
    if relu:
        parts.append(nn.ReLU(inplace=True))
    return nn.Sequential(*parts)


class FreezableBackbone(nn.Module):
    """Base for a network with a ``self.backbone`` that can be kept as it is while the rest trains.

    ``freeze_backbone()`` stops its gradients and fixes its batch-norm statistics (``train()``
    keeps it in eval mode afterwards); ``frozen`` says whether it was called.
    """

    frozen = False

    def freeze_backbone(self):
        """Keep the backbone (SiamFC's, say) as it is; returns the network."""
        self.frozen = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def backbone_features(self, images: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """The backbone's output (or ``layer``'s) for ``(B, 3, S, S)`` crops; without a graph once frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(images) if layer is None else self.backbone.features(images, layer)


class Backbone(nn.Module):
    """The shared feature extractor ``φ``: ``(B, 3, H, W)`` float32 in [0, 1] -> ``(B, 128, H', W')``.

    ``H' = output_size(H)``; every layer is available through :meth:`features`. The module's
    children are named as in :data:`LAYERS`, so ``backbone.conv3`` is that block.
    """

    def __init__(self):
        super().__init__()
        c = {k: v.channels for k, v in LAYERS.items()}
        self.conv1 = _conv_block(3, c["conv1"], 11, 2, relu=True)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2 = _conv_block(c["pool1"], c["conv2"], 5, 1, relu=True)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = _conv_block(c["pool2"], c["conv3"], 3, 1, relu=True)
        # the last block stays linear: its output is compared by inner products, and a ReLU
        # would throw away half of the space the embedding can use
        self.conv4 = _conv_block(c["conv3"], c["conv4"], 3, 1, relu=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @property
    def stride(self) -> int:
        """Total stride of the final embedding (8)."""
        return LAYERS["conv4"].stride

    @property
    def out_channels(self) -> int:
        """Channels of the final embedding (128)."""
        return LAYERS["conv4"].channels

    def features(self, x: torch.Tensor, layer: str = "conv4") -> torch.Tensor:
        """Run the network up to and including ``layer``: ``(B, 3, H, W)`` -> ``(B, C_L, H_L, W_L)``.

        ``C_L = LAYERS[layer].channels``; ``H_L = output_size(H, layer)``; one cell is
        ``LAYERS[layer].stride`` input pixels. Raises ``KeyError`` for an unknown layer.
        """
        if layer not in LAYERS:
            raise KeyError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Backbone expects (B, 3, H, W) images, got shape {tuple(x.shape)}")
        for name in LAYERS:
            x = getattr(self, name)(x)
            if name == layer:
                return x
        raise AssertionError("unreachable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The final embedding, ``features(x, "conv4")``."""
        return self.features(x, "conv4")

    def cut(self, layer: str) -> nn.Sequential:
        """A module made of the blocks up to ``layer`` (sharing their weights), for reuse as a trunk."""
        if layer not in LAYERS:
            raise KeyError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
        names = list(LAYERS)[: list(LAYERS).index(layer) + 1]
        return nn.Sequential(*[getattr(self, n) for n in names])


def to_tensor(images, device=None) -> torch.Tensor:
    """uint8 RGB images -> the backbone's input.

    Args:
        images: one ``H×W×3`` uint8 array, or a batch ``B×H×W×3`` (array or list of equal-size arrays).
    Returns:
        ``(B, 3, H, W)`` float32 tensor with values in [0, 1] (``B = 1`` for a single image).
    """
    arr = np.asarray(images) if not isinstance(images, list) else np.stack(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"to_tensor expects H×W×3 or B×H×W×3 RGB images, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    return t.to(device=device, dtype=torch.float32).div_(255.0)


@torch.no_grad()
def feature_map(backbone: Backbone, image: np.ndarray, layer: str = "conv4") -> tuple[np.ndarray, int]:
    """Features of one image at ``layer``, as numpy, with their stride.

    Args:
        backbone: a :class:`Backbone` (put in eval mode here).
        image: ``H×W×3`` uint8 RGB.
        layer: one of :data:`LAYERS`.
    Returns:
        ``(H_L×W_L×C_L float32 array, stride in pixels)``.
    """
    backbone.eval()
    dev = next(backbone.parameters()).device
    f = backbone.features(to_tensor(image, dev), layer)[0]
    return f.permute(1, 2, 0).cpu().numpy(), LAYERS[layer].stride


def trained_backbone(path: str | Path | None = None, prefix: str = "backbone.") -> Backbone:
    """The backbone of a trained tracker's weights (default: the shipped SiamFC), in eval mode.

    Reads ``{"state_dict", "meta"}`` with ``torch.load(weights_only=True)`` and keeps the entries
    whose names start with ``prefix``. Raises ``FileNotFoundError`` naming the file (train it with
    ``acvm train siamfc``).
    """
    from .registry import weights_file
    from .weights import backbone_state
    net = Backbone()
    net.load_state_dict(backbone_state(Path(path) if path else weights_file("siamfc"), prefix)[0])
    return net.eval()
