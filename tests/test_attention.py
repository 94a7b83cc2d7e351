"""Attention against PyTorch's own implementations (with copied weights) and slow references.

Tolerances: float32 results agree with PyTorch to ``atol=1e-5`` (values of order 1; the sums are
accumulated in different orders), float64 ones to ``1e-10``; gradients to ``1e-4`` in float32.
"""
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from acvm import attention as att

matplotlib.use("Agg")

F32 = dict(atol=1e-5, rtol=1e-5)
F64 = dict(atol=1e-10, rtol=1e-10)


def _qkv(*shape_q, lk=None, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    *lead, lq, d = shape_q
    lk = lk or lq
    dv = dv or d
    q = torch.randn(*lead, lq, d, generator=g, dtype=dtype)
    k = torch.randn(*lead, lk, d, generator=g, dtype=dtype)
    v = torch.randn(*lead, lk, dv, generator=g, dtype=dtype)
    return q, k, v


# --- scaled dot-product attention -------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32), (torch.float64, F64)])
def test_sdpa_equals_torch_without_mask(dtype, tol):
    q, k, v = _qkv(2, 3, 7, 16, lk=11, dv=5, dtype=dtype)
    out, A = att.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **tol)
    assert A.shape == (2, 3, 7, 11)
    torch.testing.assert_close(A.sum(-1), torch.ones(2, 3, 7, dtype=dtype), **tol)


def test_sdpa_weights_equal_numpy_softmax():
    q, k, v = _qkv(5, 8, lk=6, dtype=torch.float64)
    s = q.numpy() @ k.numpy().T / math.sqrt(8)
    e = np.exp(s - s.max(1, keepdims=True))
    expected = e / e.sum(1, keepdims=True)
    out, A = att.scaled_dot_product_attention(q, k, v)
    np.testing.assert_allclose(A.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), expected @ v.numpy(), atol=1e-12)


def test_sdpa_scale_argument_matches_torch():
    q, k, v = _qkv(9, 4, lk=3)
    out, _ = att.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), **F32)


def test_sdpa_boolean_mask_equals_torch_and_blocks_keys():
    q, k, v = _qkv(2, 6, 8, lk=10)
    mask = torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[:, 0] = True  # every query can see something
    out, A = att.scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)
    assert (A[:, ~mask] == 0).all()
    # forbidding a key must make its value irrelevant
    v2 = v.clone()
    v2[:, 1] += 100.0
    only = torch.ones(6, 10, dtype=torch.bool)
    only[:, 1] = False
    torch.testing.assert_close(att.scaled_dot_product_attention(q, k, v2, mask=only)[0],
                               att.scaled_dot_product_attention(q, k, v, mask=only)[0])


def test_sdpa_float_mask_equals_torch():
    q, k, v = _qkv(3, 5, 8, lk=4)
    mask = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    mask[0, 2] = float("-inf")
    out, A = att.scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)
    assert (A[:, 0, 2] == 0).all()


def test_sdpa_fully_masked_query_gives_zeros_and_finite_gradients():
    q, k, v = _qkv(4, 8)
    for t in (q, k, v):
        t.requires_grad_(True)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    out, A = att.scaled_dot_product_attention(q, k, v, mask=mask)
    assert (out[2] == 0).all() and (A[2] == 0).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_gradients_equal_torch(masked):
    ours = [t.requires_grad_(True) for t in _qkv(2, 6, 8, lk=9, dv=3)]
    ref = [t.detach().clone().requires_grad_(True) for t in ours]
    mask = None
    if masked:
        mask = torch.rand(6, 9, generator=torch.Generator().manual_seed(3)) > 0.5
        mask[:, 4] = True
    w = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(4))
    (att.scaled_dot_product_attention(*ours, mask=mask)[0] * w).sum().backward()
    (F.scaled_dot_product_attention(*ref, attn_mask=mask) * w).sum().backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)


def test_sdpa_rejects_mismatched_shapes():
    q, k, v = _qkv(4, 8)
    with pytest.raises(ValueError, match="token dimension"):
        att.scaled_dot_product_attention(q, k[:, :5], v)
    with pytest.raises(ValueError, match="as many tokens"):
        att.scaled_dot_product_attention(q, k, v[:3])


# --- multi-head attention ---------------------------------------------------------------------

def _copy_mha(ours: att.MultiHeadAttention, theirs: nn.MultiheadAttention):
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)


def _mha_pair(dim=16, heads=4, seed=0):
    torch.manual_seed(seed)
    ours = att.MultiHeadAttention(dim, heads)
    for p in ours.parameters():  # non-zero biases, so that they are tested too
        nn.init.normal_(p, std=0.3)
    theirs = nn.MultiheadAttention(dim, heads, batch_first=True)
    _copy_mha(ours, theirs)
    return ours, theirs


@pytest.mark.parametrize("case", ["self", "cross", "bool", "float", "padding"])
def test_multihead_equals_torch(case):
    ours, theirs = _mha_pair()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 7, 16, generator=g)
    y = torch.randn(2, 9, 16, generator=g) if case != "self" else x
    kwargs, mask = {}, None
    lk = y.shape[1]
    if case == "bool":
        mask = torch.rand(7, lk, generator=g) > 0.3
        mask[:, 0] = True
        kwargs["attn_mask"] = ~mask  # torch: True = forbidden
    elif case == "float":
        mask = torch.randn(7, lk, generator=g)
        kwargs["attn_mask"] = mask
    elif case == "padding":
        pad = torch.zeros(2, lk, dtype=torch.bool)
        pad[1, -3:] = True
        mask = ~pad[:, None, :]
        kwargs["key_padding_mask"] = pad
    out, A = ours(x, y, y, mask=mask)
    ref, refA = theirs(x, y, y, need_weights=True, average_attn_weights=False, **kwargs)
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(A, refA, **F32)
    assert A.shape == (2, 4, 7, lk)


def test_multihead_gradients_equal_torch():
    ours, theirs = _mha_pair()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 16, generator=g)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w = torch.randn(2, 5, 16, generator=g)
    (ours(xa)[0] * w).sum().backward()
    (theirs(xb, xb, xb)[0] * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
    in_grad = torch.cat([ours.q_proj.weight.grad, ours.k_proj.weight.grad, ours.v_proj.weight.grad])
    torch.testing.assert_close(in_grad, theirs.in_proj_weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.out_proj.weight.grad, theirs.out_proj.weight.grad, atol=1e-4, rtol=1e-4)


def test_multihead_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        att.MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        att.MultiHeadAttention(8, 2)(torch.zeros(5, 8))


# --- the encoder block ------------------------------------------------------------------------

def _copy_block(ours: att.EncoderBlock, theirs: nn.TransformerEncoderLayer):
    _copy_mha(ours.attention, theirs.self_attn)
    with torch.no_grad():
        for a, b in [(ours.ff1, theirs.linear1), (ours.ff2, theirs.linear2),
                     (ours.norm1, theirs.norm1), (ours.norm2, theirs.norm2)]:
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def _block_pair(norm_first, seed=0):
    torch.manual_seed(seed)
    ours = att.EncoderBlock(16, 4, 32, norm_first=norm_first)
    for p in ours.parameters():
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))  # perturb the layer norms away from (1, 0)
    theirs = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    _copy_block(ours, theirs)
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_equals_torch(norm_first):
    ours, theirs = _block_pair(norm_first)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 6, 16, generator=g)
    mask = torch.rand(6, 6, generator=g) > 0.3
    mask |= torch.eye(6, dtype=torch.bool)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, A = ours(xa, mask=mask)
    ref = theirs(xb, src_mask=~mask)
    torch.testing.assert_close(out, ref, **F32)
    assert A.shape == (3, 4, 6, 6)
    w = torch.randn(3, 6, 16, generator=g)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.ff1.weight.grad, theirs.linear1.weight.grad, atol=1e-4, rtol=1e-4)


def test_encoder_block_adds_positions_to_queries_and_keys_only():
    ours, theirs = _block_pair(norm_first=False, seed=1)
    g = torch.Generator().manual_seed(8)
    x, pos = torch.randn(2, 5, 16, generator=g), torch.randn(5, 16, generator=g)
    out, _ = ours(x, pos=pos)
    # post-norm by hand from PyTorch's parts: LN(x + MHA(x+pos, x+pos, x)), then the feed-forward
    a, _ = theirs.self_attn(x + pos, x + pos, x)
    y = theirs.norm1(x + a)
    ref = theirs.norm2(y + theirs.linear2(F.relu(theirs.linear1(y))))
    torch.testing.assert_close(out, ref, **F32)
    assert not torch.allclose(out, ours(x)[0], atol=1e-3)


def test_encoder_stack_equals_torch_pre_norm():
    torch.manual_seed(2)
    ours = att.Encoder(16, 4, 32, layers=2, norm_first=True).eval()
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True)
    theirs = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False).eval()
    for a, b in zip(ours.blocks, theirs.layers):
        _copy_block(a, b)
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(9))
    out, weights = ours(x)
    torch.testing.assert_close(out, theirs(x), **F32)
    assert len(weights) == 2 and weights[1].shape == (2, 4, 7, 7)


# --- the decoder block ------------------------------------------------------------------------

def _decoder_pair(norm_first, seed=3):
    torch.manual_seed(seed)
    ours = att.DecoderBlock(16, 4, 32, norm_first=norm_first)
    for p in ours.parameters():
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    theirs = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    _copy_mha(ours.self_attention, theirs.self_attn)
    _copy_mha(ours.cross_attention, theirs.multihead_attn)
    with torch.no_grad():
        for a, b in [(ours.ff1, theirs.linear1), (ours.ff2, theirs.linear2), (ours.norm1, theirs.norm1),
                     (ours.norm2, theirs.norm2), (ours.norm3, theirs.norm3)]:
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_equals_torch(norm_first):
    ours, theirs = _decoder_pair(norm_first)
    g = torch.Generator().manual_seed(11)
    q, memory = torch.randn(2, 3, 16, generator=g), torch.randn(2, 9, 16, generator=g)
    out, A = ours(q, memory)
    torch.testing.assert_close(out, theirs(q, memory), **F32)
    assert A.shape == (2, 4, 3, 9)
    torch.testing.assert_close(A.sum(-1), torch.ones(2, 4, 3), **F32)


def test_decoder_adds_query_positions_to_queries_and_memory_positions_to_keys():
    ours, theirs = _decoder_pair(norm_first=True, seed=4)
    g = torch.Generator().manual_seed(12)
    q, memory = torch.zeros(2, 1, 16), torch.randn(2, 9, 16, generator=g)
    query_pos, pos = torch.randn(1, 16, generator=g), torch.randn(9, 16, generator=g)
    out, A = ours(q, memory, query_pos, pos)
    # pre-norm by hand from PyTorch's parts (DETR's order): positions on queries and keys, never on values
    x = theirs.norm1(q)
    x = q + theirs.self_attn(x + query_pos, x + query_pos, x)[0]
    y = theirs.norm2(x)
    a, ref_A = theirs.multihead_attn(y + query_pos, memory + pos, memory, average_attn_weights=False)
    x = x + a
    ref = x + theirs.linear2(F.relu(theirs.linear1(theirs.norm3(x))))
    torch.testing.assert_close(out, ref, **F32)
    torch.testing.assert_close(A, ref_A, **F32)
    stack = att.Decoder(16, 4, 32, layers=2, norm_first=True)
    out2, weights = stack(q, memory, query_pos, pos)
    assert out2.shape == (2, 1, 16) and len(weights) == 2 and weights[0].shape == (2, 4, 1, 9)


# --- positions --------------------------------------------------------------------------------

def test_sine_position_encoding_matches_formula():
    H, W, D, T = 3, 5, 12, 100.0
    pe = att.sine_position_encoding(H, W, D, temperature=T)
    assert pe.shape == (H * W, D) and pe.dtype == torch.float32
    n = D // 4
    for y in range(H):
        for x in range(W):
            row = pe[y * W + x].numpy()
            for j in range(n):
                w = T ** (-j / n)
                np.testing.assert_allclose(row[[2 * j, 2 * j + 1]], [math.sin(y * w), math.cos(y * w)], atol=1e-6)
                np.testing.assert_allclose(row[[2 * n + 2 * j, 2 * n + 2 * j + 1]],
                                           [math.sin(x * w), math.cos(x * w)], atol=1e-6)


def test_sine_position_similarity_depends_on_offset_and_falls_with_it():
    pe = att.sine_position_encoding(16, 16, 64).reshape(16, 16, 64)
    sim = lambda a, b: float(pe[a] @ pe[b])  # noqa: E731
    # translation invariance: the same offset gives the same dot product anywhere
    assert sim((2, 3), (4, 8)) == pytest.approx(sim((9, 1), (11, 6)), abs=1e-4)
    falls = [sim((8, 8), (8, 8 + d)) for d in range(5)]
    assert all(a > b for a, b in zip(falls, falls[1:]))


def test_sine_position_encoding_normalize_and_bad_dim():
    pe = att.sine_position_encoding(4, 4, 8, normalize=True).reshape(4, 4, 8)
    # with normalisation the lowest frequency covers the grid once: row 2 of 4 sits at angle π
    assert float(pe[2, 0, 0]) == pytest.approx(0.0, abs=1e-6) and float(pe[2, 0, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="divisible by 4"):
        att.sine_position_encoding(4, 4, 10)


# --- local attention --------------------------------------------------------------------------

def test_window_mask_by_hand():
    m = att.window_mask(2, 3, 3)
    # token 0 = (0, 0) sees (0,0), (0,1), (1,0), (1,1); token 2 = (0, 2) does not see column 0
    assert m[0].tolist() == [True, True, False, True, True, False]
    assert m[2].tolist() == [False, True, True, False, True, True]
    assert (m == m.T).all()


@pytest.mark.parametrize("window", [1, 3, 5])
def test_local_attention_equals_masked_global_attention(window):
    g = torch.Generator().manual_seed(10)
    B, H, W, d, dv = 2, 5, 7, 6, 3
    q = torch.randn(B, H, W, d, generator=g, requires_grad=True)
    k = torch.randn(B, H, W, d, generator=g, requires_grad=True)
    v = torch.randn(B, H, W, dv, generator=g, requires_grad=True)
    out, A = att.local_attention(q, k, v, window)
    mask = att.window_mask(H, W, window)
    flat = lambda t: t.reshape(B, H * W, -1)  # noqa: E731
    ref = F.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=mask).reshape(B, H, W, dv)
    torch.testing.assert_close(out, ref, **F32)
    # the window weights are the global weights at the neighbours' positions
    _, Ag = att.scaled_dot_product_attention(flat(q), flat(k), flat(v), mask=mask)
    r = window // 2
    y, x = 2, 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            w = A[:, y, x, (dy + r) * window + dx + r]
            inside = 0 <= y + dy < H and 0 <= x + dx < W
            expect = Ag[:, y * W + x, (y + dy) * W + x + dx] if inside else torch.zeros(B)
            torch.testing.assert_close(w, expect, **F32)
    gw = torch.randn(B, H, W, dv, generator=g)
    grads = torch.autograd.grad((out * gw).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * gw).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_local_attention_rejects_even_window():
    x = torch.zeros(1, 3, 3, 2)
    with pytest.raises(ValueError, match="odd"):
        att.local_attention(x, x, x, 4)


# --- denoising --------------------------------------------------------------------------------

def test_patch_tokens_hold_the_reflect_padded_patch():
    img = np.arange(5 * 6 * 2, dtype=np.float64).reshape(5, 6, 2) / 60
    T = att.patch_tokens(img, 3)
    assert T.shape == (1, 5, 6, 18) and T.dtype == torch.float32
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    for y, x in [(0, 0), (2, 3), (4, 5)]:
        expected = padded[y:y + 3, x:x + 3].transpose(2, 0, 1).ravel()  # channel-major, like unfold
        np.testing.assert_allclose(T[0, y, x].numpy(), expected, atol=1e-6)


def test_attention_denoise_limits():
    rng = np.random.default_rng(0)
    img = rng.random((9, 10))
    # very large h: every neighbour weighs the same, so it is the mean over the window inside the image
    flat = att.attention_denoise(img, h=1e4, window=3, patch=3)
    pad = np.pad(img, 1, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(pad, (3, 3))
    np.testing.assert_allclose(flat, np.nanmean(windows, axis=(2, 3)), atol=1e-5)
    # very small h: only the pixel itself (distance 0) keeps any weight
    np.testing.assert_allclose(att.attention_denoise(img, h=1e-3, window=3, patch=3), img, atol=1e-5)


def test_local_attention_denoising_beats_gaussian_of_same_reach():
    from skimage import data
    img = data.camera()[100:228, 200:328] / 255.0
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.1, img.shape), 0, 1)
    window = 7
    ours = att.psnr(att.attention_denoise(noisy, h=0.12, window=window, patch=5), img)
    # the Gaussian gets its best sigma within the same reach (radius window // 2)
    best_gauss = max(att.psnr(att.gaussian_denoise(noisy, s, window // 2), img) for s in np.arange(0.4, 3.01, 0.1))
    assert best_gauss > att.psnr(noisy, img) + 3  # the baseline is a real one
    assert ours > best_gauss + 1.0, (ours, best_gauss)


def test_attention_denoise_weights_follow_an_edge():
    img = np.zeros((16, 16))
    img[:, 8:] = 1.0  # vertical edge between columns 7 and 8
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 0.05, img.shape), 0, 1)
    _, A = att.attention_denoise(noisy, h=0.1, window=5, patch=3, return_weights=True)
    w = A[8, 7].reshape(5, 5)  # a pixel just left of the edge
    assert w[:, :3].sum() > 0.95  # its own side (offsets -2..0)
    np.testing.assert_allclose(A.sum(-1), 1.0, atol=1e-5)


def test_psnr_by_hand():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.1)
    assert att.psnr(a, b) == pytest.approx(20.0)
    assert att.psnr(a, a) == float("inf")
    with pytest.raises(ValueError):
        att.psnr(a, b[:2])


# --- looking at attention ---------------------------------------------------------------------

def test_query_attention_is_a_softmax_row():
    g = torch.Generator().manual_seed(11)
    Q, K = torch.randn(12, 4, generator=g), torch.randn(6, 4, generator=g)
    m = att.query_attention(Q, K, 5, (2, 3))
    s = Q[5].double().numpy() @ K.double().numpy().T / 2.0
    e = np.exp(s - s.max())
    np.testing.assert_allclose(m, (e / e.sum()).reshape(2, 3), atol=1e-6)
    with pytest.raises(ValueError, match="key_grid"):
        att.query_attention(Q, K, 0, (2, 2))
    with pytest.raises(ValueError, match="outside"):
        att.query_attention(Q, K, 12, (2, 3))


def test_pixel_tokens_attend_to_same_colour():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = (200, 30, 30)
    img[:, 20:] = (30, 30, 200)
    T = att.pixel_tokens(img, (8, 8))
    assert T.shape == (64, 27) and T.dtype == torch.float32
    m = att.query_attention(T, T, 2 * 8 + 1, (8, 8))  # a query in the red half
    assert m[:, :4].sum() > 0.9


def test_plot_query_attention_draws_image_overlay_and_marker():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    out = att.plot_query_attention(np.zeros((20, 30, 3), np.uint8), np.random.rand(4, 6), (5, 7), ax=ax, title="q")
    assert out is ax and len(ax.images) == 2 and len(ax.lines) == 1 and ax.get_title() == "q"
    plt.close(fig)


def test_attention_cost_memory_is_quadratic_vs_linear():
    c = att.attention_cost(sides=(4, 8), dim=8, window=3, repeats=1)
    np.testing.assert_array_equal(c["tokens"], [16, 64])
    np.testing.assert_array_equal(c["global_bytes"], np.array([16, 64]) ** 2 * 4)
    np.testing.assert_array_equal(c["local_bytes"], np.array([16, 64]) * 9 * 4)
    assert (c["global_s"] > 0).all() and (c["local_s"] > 0).all()


def test_token_grid_cells_and_extent():
    g = att.TokenGrid("t", torch.zeros(12, 2), (3, 4), stride=8.0, offset=4.0)
    assert g.cell(4.0, 4.0) == (0, 0)
    assert g.cell(13.0, 19.0) == (2, 1)      # x 13 -> col 1 (centre 12), y 19 -> row 2 (centre 20)
    assert g.cell(-50, 500) == (2, 0)         # clipped to the grid
    assert g.extent() == (0.0, 32.0, 24.0, 0.0)


def test_pixel_and_feature_token_grids():
    from acvm.backbone import Backbone, output_size
    img = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    g = att.pixel_token_grid(img, cells=16)
    assert g.tokens.shape == (256, 27) and g.stride == 6.0 and g.offset == 3.0
    np.testing.assert_allclose(g.tokens.norm(dim=1).numpy(), math.sqrt(27), rtol=1e-4)
    with pytest.raises(ValueError, match="square"):
        att.pixel_token_grid(img[:90])
    torch.manual_seed(0)
    f = att.feature_token_grid(Backbone(), img, "conv3")
    n = output_size(96, "conv3")
    assert f.grid == (n, n) and f.tokens.shape == (n * n, 96)
    assert f.stride == 8.0 and f.offset == 27.5  # centre of the 55-pixel receptive field of cell 0


def test_draw_query_attention_one_panel_per_grid_marking_the_query_cell():
    import matplotlib.pyplot as plt
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    grids = [att.pixel_token_grid(img, 8), att.pixel_token_grid(img, 16)]
    fig = att.draw_query_attention(img, grids, x=10.0, y=50.0, temperature=0.5)
    assert len(fig.axes) == 2
    for ax, g in zip(fig.axes, grids):
        assert len(ax.images) == 2
        r, c = g.cell(10.0, 50.0)
        np.testing.assert_allclose(ax.lines[0].get_xydata()[0], [g.offset + g.stride * c, g.offset + g.stride * r])
    plt.close(fig)
    with pytest.raises(ValueError, match="temperature"):
        att.draw_query_attention(img, grids, 1, 1, temperature=0)
