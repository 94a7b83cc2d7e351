import numpy as np
import pytest
import torch

from acvm.backbone import LAYERS, Backbone, feature_map, output_size, to_tensor


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Backbone().eval()


def test_siamfc_sizes_and_channels(net):
    with torch.no_grad():
        for side, cells in ((127, 8), (255, 24)):
            out = net(torch.rand(2, 3, side, side))
            assert out.shape == (2, 128, cells, cells)
            assert output_size(side) == cells
    assert 150_000 < sum(p.numel() for p in net.parameters()) < 300_000


def test_every_layer_has_the_documented_channels_and_size(net):
    x = torch.rand(1, 3, 131, 97)
    with torch.no_grad():
        for name, info in LAYERS.items():
            f = net.features(x, name)
            assert f.shape == (1, info.channels, output_size(131, name), output_size(97, name)), name
            assert torch.equal(f, net.cut(name)(x))


@pytest.mark.parametrize("layer", list(LAYERS))
def test_stride_and_receptive_field_by_probing(net, layer):
    """Perturb one input column: output cell (1, 1) changes iff the column is inside its receptive field."""
    info = LAYERS[layer]
    side = info.stride + info.receptive_field + 2 * info.stride + 8
    torch.manual_seed(1)
    x = torch.rand(1, 3, side, side)
    with torch.no_grad():
        base = net.features(x, layer)[0, :, 1, 1]
        first = info.stride            # cell 1 starts one stride in
        last = first + info.receptive_field - 1

        def changed(col=None, row=None):
            y = x.clone()
            if col is not None:
                y[..., :, col] += 5.0
            else:
                y[..., row, :] += 5.0
            return not torch.allclose(net.features(y, layer)[0, :, 1, 1], base, atol=1e-6)

        assert changed(col=first) and changed(col=last)
        assert not changed(col=first - 1) and not changed(col=last + 1)
        assert changed(row=first) and changed(row=last)
        assert not changed(row=first - 1) and not changed(row=last + 1)


def test_translation_equivariance_at_the_total_stride(net):
    """No padding: shifting the image by 8 pixels shifts the embedding by exactly one cell."""
    x = torch.rand(1, 3, 143, 151)
    with torch.no_grad():
        a = net(x)
        b = net(x[..., 8:, 16:])
    assert torch.allclose(a[..., 1:, 2:][..., : b.shape[-2], : b.shape[-1]], b, atol=1e-5)


def test_to_tensor_and_feature_map():
    img = (np.arange(20 * 30 * 3) % 256).astype(np.uint8).reshape(20, 30, 3)
    t = to_tensor(img)
    assert t.shape == (1, 3, 20, 30) and t.dtype == torch.float32
    assert abs(float(t[0, 2, 1, 4]) - img[1, 4, 2] / 255.0) < 1e-7
    assert to_tensor(np.stack([img, img])).shape == (2, 3, 20, 30)
    with pytest.raises(ValueError, match="H×W×3"):
        to_tensor(img[:, :, :2])
    torch.manual_seed(0)
    f, stride = feature_map(Backbone(), np.zeros((100, 120, 3), np.uint8), "pool2")
    assert f.shape == (output_size(100, "pool2"), output_size(120, "pool2"), 64) and f.dtype == np.float32
    assert stride == 8


def test_unknown_layer_is_named(net):
    with pytest.raises(KeyError, match="conv9"):
        net.features(torch.rand(1, 3, 64, 64), "conv9")
    with pytest.raises(ValueError, match="B, 3, H, W"):
        net(torch.rand(3, 64, 64))


def test_receptive_field_formula_matches_the_probed_table():
    from acvm.backbone import receptive_field
    got = receptive_field([(info.kernel, info.step) for info in LAYERS.values()])
    assert got == [(info.stride, info.receptive_field) for info in LAYERS.values()]
    assert receptive_field([(3, 1), (3, 1)]) == [(1, 3), (1, 5)]       # two 3×3 convs see 5×5
    assert receptive_field([(2, 2), (2, 2), (2, 2)])[-1] == (8, 8)      # non-overlapping poolings tile


def test_frozen_backbone_keeps_weights_and_statistics_while_the_rest_learns():
    import torch.nn as nn
    from acvm.backbone import Backbone, FreezableBackbone

    class Net(FreezableBackbone):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.head = nn.Conv2d(128, 1, 1)

        def forward(self, x):
            return self.head(self.backbone(x))

    torch.manual_seed(0)
    net = Net().freeze_backbone()
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    head_before = net.head.weight.detach().clone()
    net.train()
    assert net.frozen and not net.backbone.training and net.head.training
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(torch.rand(2, 3, 87, 87)).square().mean().backward()
    opt.step()
    for k, v in net.backbone.state_dict().items():   # weights and running statistics alike
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.backbone.parameters())
    assert not torch.equal(net.head.weight, head_before)
