"""acvm.roi against a brute-force integral of the bilinear interpolant and finite differences."""
import numpy as np
import pytest
import torch

from acvm.roi import bin_weights, prroi_pool, triangle_integral


def _interpolant(F, px, py, stride, origin):
    """Bilinear interpolation of ``F`` (H, W) at pixel positions, cell centres at ``origin + stride·i``
    and zero beyond the outermost centres' neighbours, written as the sum over cells it is."""
    H, W = F.shape
    cx = origin + stride * np.arange(W)
    cy = origin + stride * np.arange(H)
    kx = np.clip(1 - np.abs(px[..., None] - cx) / stride, 0, None)  # (..., W)
    ky = np.clip(1 - np.abs(py[..., None] - cy) / stride, 0, None)  # (..., H)
    return np.einsum("...j,ji,...i->...", ky, F, kx)


def _brute_force_pool(F, box, bins, stride=1.0, origin=None, samples=120):
    """Midpoint-rule average of the interpolant over each bin of ``box`` (x, y, w, h)."""
    origin = stride / 2 if origin is None else origin
    oh, ow = bins
    x, y, w, h = box
    out = np.zeros((F.shape[0], oh, ow))
    t = (np.arange(samples) + 0.5) / samples
    for p in range(oh):
        for q in range(ow):
            px = x + w * (q + t) / ow
            py = y + h * (p + t) / oh
            PX, PY = np.meshgrid(px, py)
            for c in range(F.shape[0]):
                out[c, p, q] = _interpolant(F[c], PX, PY, stride, origin).mean()
    return out


def test_triangle_integral_is_the_antiderivative_of_the_triangle():
    t = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    k = (1 - t.abs()).clamp(min=0)
    numeric = torch.cumulative_trapezoid(k, t)
    torch.testing.assert_close(triangle_integral(t[1:]), numeric, atol=1e-6, rtol=0)
    assert float(triangle_integral(torch.tensor(-3.0))) == 0.0 and float(triangle_integral(torch.tensor(3.0))) == 1.0


@pytest.mark.parametrize("box", [(1.3, 0.7, 3.1, 2.2), (-1.0, 2.5, 4.0, 3.5),   # inside; partly left of the map
                                 (4.2, 3.1, 4.0, 3.0), (2.0, 2.0, 0.4, 0.3)])   # partly outside; tiny
def test_prroi_pool_equals_brute_force_integral(box):
    rng = np.random.default_rng(0)
    F = rng.normal(size=(2, 6, 7))
    got = prroi_pool(torch.tensor(F)[None], torch.tensor([[box]]), (2, 3))[0, 0].numpy()
    expected = _brute_force_pool(F, box, (2, 3))
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_prroi_pool_with_stride_and_origin_equals_brute_force_in_pixels():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(3, 5, 5))
    boxes = [(20.0, 14.0, 30.0, 17.0), (5.0, 40.0, 12.0, 9.0)]  # image pixels
    got = prroi_pool(torch.tensor(F)[None], torch.tensor([boxes]), 3, spatial_scale=1 / 8, origin=27.5)[0].numpy()
    for k, box in enumerate(boxes):
        np.testing.assert_allclose(got[k], _brute_force_pool(F, box, (3, 3), stride=8.0, origin=27.5), atol=2e-4)


def test_gradient_with_respect_to_box_and_features_matches_finite_differences():
    rng = np.random.default_rng(2)
    F = torch.tensor(rng.normal(size=(1, 2, 6, 6)), requires_grad=True)
    boxes = torch.tensor([[[1.3, 0.7, 3.1, 2.2], [0.2, 1.9, 2.6, 3.3]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, b: prroi_pool(f, b, (2, 2)), (F, boxes), eps=1e-6, atol=1e-6)


def test_moving_a_box_towards_a_bright_blob_increases_its_pooled_mean():
    # the property overlap maximisation relies on: the box gradient points at the signal
    yy, xx = np.mgrid[:16, :16]
    F = torch.tensor(np.exp(-((yy - 9.5) ** 2 + (xx - 6.5) ** 2) / 6.0))[None, None]
    box = torch.tensor([[[1.0, 3.0, 5.0, 5.0]]], requires_grad=True)  # blob centre is at (7, 10)
    prroi_pool(F, box, 1).sum().backward()
    assert box.grad[0, 0, 0] > 0 and box.grad[0, 0, 1] > 0


def test_bin_weights_rows_sum_to_one_inside_the_map():
    start, end = torch.tensor([1.2]), torch.tensor([5.7])
    w = bin_weights(start, end, 3, 8)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 3))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="features"):
        prroi_pool(torch.zeros(2, 4, 4), torch.zeros(1, 1, 4), 2)
    with pytest.raises(ValueError, match="boxes"):
        prroi_pool(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4), 2)
