"""Attention from scratch: scaled dot-product, multi-head, the encoder and decoder blocks, local attention.

The lecture's notation: a set of queries ``Q`` (one row per token that asks), keys ``K`` (one
row per token that can be found) and values ``V`` (what each found token hands back). Attention
reconstructs, for every query, a new value

    Ṽ = softmax(Q Kᵀ / √d) V

as a weighted mean of the rows of ``V``; the weights ``A = softmax(Q Kᵀ / √d)`` (each row sums
to one) say how similar the query is to every key. ``QKᵀ`` is a table of dot-product
similarities; dividing by ``√d`` keeps their spread independent of the token dimension ``d`` so
that the softmax neither saturates nor flattens as ``d`` grows.

Everything here is plain torch and keeps the attention weights, because the notebooks show
them. Layouts follow ``torch.nn.functional.scaled_dot_product_attention``: tokens are rows,
``(..., L, d)``; a token *grid* (an image or a feature map) is ``(B, H, W, d)``.

Masks follow PyTorch's ``scaled_dot_product_attention`` too: a **boolean** mask is ``True`` where a
query *may* attend to a key; a **float** mask is added to ``QKᵀ/√d`` (``-inf`` forbids). Note that
``torch.nn.MultiheadAttention`` uses the opposite boolean convention (``True`` = forbidden).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "scaled_dot_product_attention", "MultiHeadAttention", "EncoderBlock", "Encoder", "DecoderBlock", "Decoder",
    "sine_position_encoding", "window_mask", "local_attention",
    "patch_tokens", "attention_denoise", "gaussian_denoise", "psnr",
    "pixel_tokens", "query_attention", "plot_query_attention", "TokenGrid", "pixel_token_grid",
    "feature_token_grid", "draw_query_attention", "attention_cost",
]


# --- scaled dot-product attention -----------------------------------------------------------

def scaled_dot_product_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ṽ = softmax(Q Kᵀ · scale + mask) V, returning the attention weights as well.

    Args:
        Q: ``(..., Lq, d)`` float queries.
        K: ``(..., Lk, d)`` float keys (same leading dimensions as ``Q``, or broadcastable).
        V: ``(..., Lk, dv)`` float values.
        mask: optional, broadcastable to ``(..., Lq, Lk)``; bool (``True`` = may attend) or
            float (added to the scaled scores, ``-inf`` forbids).
        scale: multiplies ``Q Kᵀ``; default ``1/√d``.
    Returns:
        ``(Ṽ, A)``: ``Ṽ`` of shape ``(..., Lq, dv)`` and the weights ``A`` of shape
        ``(..., Lq, Lk)``, both of ``Q``'s dtype; every row of ``A`` sums to 1, except a query that
        a boolean mask lets attend to nothing, whose row (and output) is zero, as in PyTorch.

    >>> Q = K = torch.eye(2); V = torch.tensor([[1.0], [3.0]])
    >>> Vt, A = scaled_dot_product_attention(Q, K, V, scale=100.0)
    >>> Vt.round(decimals=3).flatten().tolist()
    [1.0, 3.0]
    """
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"Q and K must have the same token dimension d, got Q {tuple(Q.shape)} and K {tuple(K.shape)}")
    if K.shape[-2] != V.shape[-2]:
        raise ValueError(f"K and V must have as many tokens, got K {tuple(K.shape)} and V {tuple(V.shape)}")
    scale = 1.0 / math.sqrt(Q.shape[-1]) if scale is None else scale
    # scaling Q (Lq·d numbers) rather than QKᵀ (Lq·Lk) saves a pass over the largest tensor
    scores = torch.matmul(Q * scale, K.transpose(-2, -1))
    if mask is None:
        A = torch.softmax(scores, dim=-1)
    elif mask.dtype == torch.bool:
        # a finite fill (not -inf) keeps a query with nothing to attend to from turning the
        # softmax, and with it every gradient through K, into NaN; its row is zeroed below
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        A = torch.softmax(scores, dim=-1)
        A = A * mask.any(dim=-1, keepdim=True).to(A.dtype)
    else:
        A = torch.softmax(scores + mask.to(scores.dtype), dim=-1)
    return torch.matmul(A, V), A


# --- multi-head attention and the encoder block ---------------------------------------------

class MultiHeadAttention(nn.Module):
    """Multi-head attention: ``heads`` attentions side by side on learned projections.

    Each head ``i`` attends with ``Q W_i^Q``, ``K W_i^K``, ``V W_i^V`` of dimension
    ``dim / heads``; the heads' outputs are concatenated and mixed by ``W^O``. Different heads
    can learn different notions of similarity (colour, position, part of the object).

    Args:
        dim: token dimension ``D`` (divisible by ``heads``).
        heads: number of heads ``h``.
        bias: whether the four projections have biases.
    """

    def __init__(self, dim: int, heads: int, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads = dim, heads
        self.q_proj = nn.Linear(dim, dim, bias=bias)   # W^Q
        self.k_proj = nn.Linear(dim, dim, bias=bias)   # W^K
        self.v_proj = nn.Linear(dim, dim, bias=bias)   # W^V
        self.out_proj = nn.Linear(dim, dim, bias=bias)  # W^O
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            # the initialisation torch.nn.MultiheadAttention uses; it trains small encoders well
            nn.init.xavier_uniform_(lin.weight)
            if bias:
                nn.init.zeros_(lin.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` tokens to ``key``/``value`` tokens.

        Args:
            query: ``(B, Lq, D)``; key: ``(B, Lk, D)`` (default ``query``, self-attention);
                value: ``(B, Lk, D)`` (default ``key``).
            mask: bool or float as in :func:`scaled_dot_product_attention`, of shape
                ``(Lq, Lk)``, ``(B, Lq, Lk)`` (``(B, 1, Lk)`` masks keys, e.g. padding) or
                ``(B, heads, Lq, Lk)``.
        Returns:
            ``(out, A)``: ``out`` ``(B, Lq, D)`` and the per-head weights ``A`` ``(B, heads, Lq, Lk)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError(f"query, key and value must be (B, L, D), got {tuple(query.shape)}, "
                             f"{tuple(key.shape)}, {tuple(value.shape)}")
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # the same mask for every head
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        out, A = scaled_dot_product_attention(q, k, v, mask)
        B, _, Lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, self.dim)), A


class EncoderBlock(nn.Module):
    """The transformer encoder block: self-attention and a feed-forward net, each with a residual.

    Post-norm (the original transformer, ``norm_first=False``)::

        x = LN(x + MHA(x));   x = LN(x + FF(x))

    Pre-norm (``norm_first=True``, easier to train deep)::

        x = x + MHA(LN(x));   x = x + FF(LN(x))

    With positional encodings ``pos`` (DETR, STARK) the position is added to the queries and
    keys only, ``MHA(Q=K=x+pos, V=x)``: where a token is decides whom it attends to, not what it
    hands back. ``FF(x) = W₂ ReLU(W₁ x)``.

    Args:
        dim: token dimension ``D``; heads: attention heads; ff_dim: hidden width of ``FF``;
        norm_first: pre-norm instead of post-norm; dropout: dropout rate (0 when tracking).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, norm_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.norm_first = norm_first
        self.attention = MultiHeadAttention(dim, heads)
        self.ff1 = nn.Linear(dim, ff_dim)   # W₁
        self.ff2 = nn.Linear(ff_dim, dim)   # W₂
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _attend(self, x, pos, mask):
        qk = x if pos is None else x + pos
        out, A = self.attention(qk, qk, x, mask)
        return self.dropout(out), A

    def _ff(self, x):
        return self.dropout(self.ff2(self.dropout(F.relu(self.ff1(x)))))

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, L, D)``, ``pos`` ``(L, D)`` or ``(B, L, D)`` -> ``(x', A)`` with ``A`` ``(B, heads, L, L)``."""
        if self.norm_first:
            a, A = self._attend(self.norm1(x), pos, mask)
            x = x + a
            x = x + self._ff(self.norm2(x))
        else:
            a, A = self._attend(x, pos, mask)
            x = self.norm1(x + a)
            x = self.norm2(x + self._ff(x))
        return x, A


class Encoder(nn.Module):
    """A stack of :class:`EncoderBlock` (plus a final layer norm when pre-norm, as is usual).

    ``forward(x, pos, mask)`` returns the encoded tokens ``(B, L, D)`` and the list of every
    layer's attention weights ``(B, heads, L, L)``, first layer first.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, layers: int, norm_first: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, ff_dim, norm_first, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights = []
        for block in self.blocks:
            x, A = block(x, pos, mask)
            weights.append(A)
        return self.norm(x), weights


class DecoderBlock(nn.Module):
    """The transformer decoder block (DETR's, STARK's): queries attend to each other, then to the
    encoder's output (the *memory*), then a feed-forward net, each with a residual.

    Pre-norm (``norm_first=True``)::

        q = q + MHA(LN(q));   q = q + MHA(Q=LN(q), K=V=memory);   q = q + FF(LN(q))

    post-norm puts each ``LN`` after its residual sum, as :class:`EncoderBlock` does. The
    queries' positions ``query_pos`` are added to the queries of both attentions (in DETR and
    STARK the learned *target query* is that position: the decoder's input is zero), the
    memory's positions ``pos`` to its keys only.

    Args: as :class:`EncoderBlock`'s.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, norm_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.norm_first = norm_first
        self.self_attention = MultiHeadAttention(dim, heads)
        self.cross_attention = MultiHeadAttention(dim, heads)
        self.ff1 = nn.Linear(dim, ff_dim)
        self.ff2 = nn.Linear(ff_dim, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _self(self, q, query_pos):
        qk = q if query_pos is None else q + query_pos
        return self.dropout(self.self_attention(qk, qk, q)[0])

    def _cross(self, q, memory, query_pos, pos):
        out, A = self.cross_attention(q if query_pos is None else q + query_pos,
                                      memory if pos is None else memory + pos, memory)
        return self.dropout(out), A

    def _ff(self, x):
        return self.dropout(self.ff2(self.dropout(F.relu(self.ff1(x)))))

    def forward(self, q: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor | None = None,
                pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``q`` ``(B, Lq, D)``, ``memory`` ``(B, L, D)`` -> ``(q', A)``, ``A`` ``(B, heads, Lq, L)``
        the cross-attention weights: where in the memory each query looked."""
        if self.norm_first:
            q = q + self._self(self.norm1(q), query_pos)
            a, A = self._cross(self.norm2(q), memory, query_pos, pos)
            q = q + a
            q = q + self._ff(self.norm3(q))
        else:
            q = self.norm1(q + self._self(q, query_pos))
            a, A = self._cross(q, memory, query_pos, pos)
            q = self.norm2(q + a)
            q = self.norm3(q + self._ff(q))
        return q, A


class Decoder(nn.Module):
    """A stack of :class:`DecoderBlock` (plus a final layer norm when pre-norm).

    ``forward(q, memory, query_pos, pos)`` returns the decoded queries ``(B, Lq, D)`` and the list
    of every layer's cross-attention weights ``(B, heads, Lq, L)``, first layer first.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, layers: int, norm_first: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, ff_dim, norm_first, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(self, q: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor | None = None,
                pos: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights = []
        for block in self.blocks:
            q, A = block(q, memory, query_pos, pos)
            weights.append(A)
        return self.norm(q), weights


# --- positions -------------------------------------------------------------------------------

def sine_position_encoding(height: int, width: int, dim: int, temperature: float = 10000.0,
                           normalize: bool = False) -> torch.Tensor:
    """2-D sine positional encodings for the tokens of an ``height×width`` grid (DETR, STARK).

    Attention by itself ignores order: permuting the tokens permutes the output. An encoding
    added to each token says where it is. The first ``dim/2`` channels encode the row ``y``,
    the last ``dim/2`` the column ``x``, each as ``dim/4`` sine/cosine pairs of decreasing
    frequency ``ω_j = temperature^(-j / (dim/4))``::

        PE[2j] = sin(ω_j · pos),   PE[2j+1] = cos(ω_j · pos)

    so that the dot product of two encodings depends only on their offset and falls with it.

    Args:
        height, width: grid size in tokens.
        dim: encoding dimension, divisible by 4.
        temperature: longest wavelength, in grid cells (divided by 2π).
        normalize: scale positions to [0, 2π) over the grid, so that grids of different size
            get encodings of the same range (STARK's choice); otherwise positions are cell indices.
    Returns:
        ``(height*width, dim)`` float32 tensor, tokens in row-major order (index ``y*width + x``).
    """
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 (sine and cosine for rows and columns), got {dim}")
    n = dim // 4
    omega = temperature ** (-torch.arange(n, dtype=torch.float64) / n)
    ys = torch.arange(height, dtype=torch.float64)
    xs = torch.arange(width, dtype=torch.float64)
    if normalize:
        ys, xs = ys * (2 * math.pi / height), xs * (2 * math.pi / width)

    def encode(pos):  # (P,) -> (P, 2n), sin and cos interleaved
        angle = pos[:, None] * omega[None, :]
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(len(pos), 2 * n)

    pe_y = encode(ys)[:, None, :].expand(height, width, 2 * n)
    pe_x = encode(xs)[None, :, :].expand(height, width, 2 * n)
    return torch.cat([pe_y, pe_x], dim=-1).reshape(height * width, dim).float()


# --- local attention -------------------------------------------------------------------------

def window_mask(height: int, width: int, window: int) -> torch.Tensor:
    """Boolean ``(H*W, H*W)`` mask, ``True`` where token ``j`` lies in the ``window×window``
    square centred on token ``i`` (row-major tokens of an ``H×W`` grid): local attention as a
    mask on global attention (the slow way; :func:`local_attention` never builds it)."""
    r = window // 2
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    y, x = yy.reshape(-1), xx.reshape(-1)
    return ((y[:, None] - y[None, :]).abs() <= r) & ((x[:, None] - x[None, :]).abs() <= r)


def local_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, window: int,
                    scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention restricted to a ``window×window`` neighbourhood of every query on a token grid.

    Each query at ``(y, x)`` attends only to the keys at ``(y+dy, x+dx)`` with
    ``|dy|, |dx| ≤ window//2`` that lie inside the grid. Cost and memory grow with
    ``H·W·window²`` — linearly in the number of tokens — instead of ``(H·W)²``.

    Args:
        Q, K: ``(B, H, W, d)`` float token grids.
        V: ``(B, H, W, dv)``.
        window: odd side of the neighbourhood.
        scale: multiplies the dot products; default ``1/√d``.
    Returns:
        ``(Ṽ, A)``: ``Ṽ`` ``(B, H, W, dv)``; ``A`` ``(B, H, W, window²)``, the weights of the
        neighbours in row-major offset order (offset ``(dy, dx)`` at index
        ``(dy + r)·window + (dx + r)``), zero for neighbours outside the grid.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if Q.dim() != 4 or K.shape != Q.shape or V.shape[:3] != Q.shape[:3]:
        raise ValueError(f"Q and K must be (B, H, W, d) and V (B, H, W, dv) on the same grid, got "
                         f"{tuple(Q.shape)}, {tuple(K.shape)}, {tuple(V.shape)}")
    B, H, W, d = Q.shape
    r = window // 2
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    Kp = F.pad(K, (0, 0, r, r, r, r))
    Vp = F.pad(V, (0, 0, r, r, r, r))
    inside = F.pad(torch.ones(H, W, dtype=torch.bool, device=Q.device), (r, r, r, r))
    offsets = [(dy, dx) for dy in range(window) for dx in range(window)]
    # one shifted copy of K at a time keeps the memory at O(H·W·(d + window²))
    scores = torch.stack([(Q * Kp[:, dy:dy + H, dx:dx + W]).sum(-1) for dy, dx in offsets], dim=-1) * scale
    valid = torch.stack([inside[dy:dy + H, dx:dx + W] for dy, dx in offsets], dim=-1)
    A = torch.softmax(scores.masked_fill(~valid, torch.finfo(scores.dtype).min), dim=-1)
    out = sum(A[..., k, None] * Vp[:, dy:dy + H, dx:dx + W] for k, (dy, dx) in enumerate(offsets))
    return out, A


# --- local attention as image denoising ------------------------------------------------------

def _as_float_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img / 255.0
    img = img.astype(np.float64)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be H×W or H×W×C, got shape {img.shape}")
    return img


def patch_tokens(image, patch: int) -> torch.Tensor:
    """One token per pixel: the ``patch×patch`` neighbourhood around it (reflect-padded), flattened.

    Args:
        image: ``H×W`` or ``H×W×C`` array, uint8 (scaled to [0, 1]) or float.
        patch: odd patch side.
    Returns:
        ``(1, H, W, C·patch²)`` float32 token grid.
    """
    img = _as_float_image(image)
    img = img[:, :, None] if img.ndim == 2 else img
    p = patch // 2
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
    x = F.pad(x, (p, p, p, p), mode="reflect")
    H, W = img.shape[:2]
    cols = F.unfold(x, patch)                      # (1, C·patch², H·W)
    return cols.transpose(1, 2).reshape(1, H, W, -1)


def attention_denoise(noisy, h: float, window: int = 11, patch: int = 5, return_weights: bool = False):
    """Denoise an image with local attention whose queries and keys are patches (non-local means).

    The weight of neighbour ``j`` for pixel ``i`` should fall with the distance between their
    patches, ``exp(-‖p_i − p_j‖² / (n h²))`` with ``n`` the patch size. Since
    ``-‖p_i − p_j‖² = 2 p_i·p_j − ‖p_j‖² − ‖p_i‖²`` and the last term is the same for every key of
    a query (the softmax ignores it), this *is* dot-product attention with the tokens
    ``q_i = [2 p_i, −1]``, ``k_j = [p_j, ‖p_j‖²]``, the scale ``1/(n h²)``, and the pixels as
    values: Ṽ is every pixel rebuilt from the pixels whose surroundings look like its own.
    Across an edge the patches differ, so the weights follow the edge instead of blurring it.

    Args:
        noisy: ``H×W`` or ``H×W×C`` image, uint8 or float in [0, 1].
        h: filtering strength, about the noise standard deviation (image units).
        window: odd side of the search window (the filter's reach).
        patch: odd side of the compared patches.
        return_weights: also return the ``(H, W, window²)`` attention weights.
    Returns:
        float64 image of the input's shape (and the weights as float32 numpy when asked).
    """
    img = _as_float_image(noisy)
    P = patch_tokens(img, patch)
    n = P.shape[-1]
    q = torch.cat([2 * P, -torch.ones_like(P[..., :1])], dim=-1)
    k = torch.cat([P, (P * P).sum(-1, keepdim=True)], dim=-1)
    v = torch.from_numpy(img if img.ndim == 3 else img[:, :, None]).float()[None]
    out, A = local_attention(q, k, v, window, scale=1.0 / (n * h * h))
    out = out[0].double().numpy()
    out = out if img.ndim == 3 else out[:, :, 0]
    return (out, A[0].numpy()) if return_weights else out


def gaussian_denoise(noisy, sigma: float, radius: int) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` cut at ``radius`` pixels (the baseline of
    the same reach as :func:`attention_denoise` with ``window = 2·radius + 1``); float64 image."""
    from scipy.ndimage import gaussian_filter
    img = _as_float_image(noisy)
    sig = (sigma, sigma, 0) if img.ndim == 3 else sigma
    return gaussian_filter(img, sig, mode="reflect", truncate=radius / sigma)


def psnr(image, reference, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(range² / MSE)``, of two same-shape images."""
    a, b = np.asarray(image, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and reference {b.shape} must have the same shape")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


# --- looking at attention --------------------------------------------------------------------

def _unit_tokens(T: torch.Tensor) -> torch.Tensor:
    # standardise each channel over the image, then give every token the length √d: QKᵀ/√d is
    # then √d times the cosine similarity of the patterns, not a contest of brightness or
    # feature magnitude, and the softmax is as sharp as the lecture's formula makes it
    T = (T - T.mean(0)) / (T.std(0) + 1e-6)
    return T * (math.sqrt(T.shape[1]) / (T.norm(dim=1, keepdim=True) + 1e-6))


def pixel_tokens(image, grid: tuple[int, int], patch: int = 3) -> torch.Tensor:
    """Raw-pixel tokens for the attention explorer: the image shrunk to ``grid=(H, W)``, one
    token per cell made of its ``patch×patch`` colour neighbourhood, each channel standardised
    over the image and each token scaled to length ``√d`` (so ``QKᵀ/√d = √d·cos``).

    Returns:
        ``(H*W, C·patch²)`` float32, tokens in row-major order.
    """
    import cv2
    img = _as_float_image(image).astype(np.float32)
    small = cv2.resize(img, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    return _unit_tokens(patch_tokens(small, patch).reshape(grid[0] * grid[1], -1))


def query_attention(Q: torch.Tensor, K: torch.Tensor, index: int, key_grid: tuple[int, int],
                    scale: float | None = None) -> np.ndarray:
    """Where query token ``index`` attends among the keys: one row of ``softmax(QKᵀ·scale)``.

    Args:
        Q: ``(Lq, d)`` query tokens; K: ``(Lk, d)`` key tokens, ``Lk = H_k·W_k`` in row-major order.
        index: which query (for a grid of width ``W``, ``row·W + col``).
        key_grid: ``(H_k, W_k)``, to lay the weights out as an image.
        scale: default ``1/√d``.
    Returns:
        ``(H_k, W_k)`` float32 weights summing to 1.
    """
    if not 0 <= index < Q.shape[0]:
        raise ValueError(f"query index {index} is outside 0..{Q.shape[0] - 1}")
    if key_grid[0] * key_grid[1] != K.shape[0]:
        raise ValueError(f"key_grid {tuple(key_grid)} does not hold the {K.shape[0]} keys")
    with torch.no_grad():
        _, A = scaled_dot_product_attention(Q[index:index + 1], K, K, scale=scale)
    return A[0].reshape(tuple(key_grid)).numpy()


def plot_query_attention(image, weights, query_xy=None, ax=None, title: str | None = None, alpha: float = 0.6,
                         extent=None, vmax: float | None = None):
    """Draw ``image`` with an attention map (``(h, w)`` weights over the image) laid over it.

    The widgets of notebooks 10 and 11 call this on every slider move.

    Args:
        image: ``H×W×3`` uint8 (or ``H×W`` grey) image.
        weights: ``(h, w)`` non-negative map, drawn over ``extent``.
        query_xy: optional ``(x, y)`` image point of the query, marked with a cross.
        extent: ``(left, right, bottom, top)`` in image pixels that the map covers (default:
            the whole image).
        vmax: the weight drawn brightest (default: the largest); larger weights saturate.
    Returns:
        the matplotlib axes.
    """
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    img = np.asarray(image)
    H, W = img.shape[:2]
    # extent puts the image in our continuous coordinates (pixel i spans [i, i+1)) rather than
    # imshow's default (pixel i centred on i), so query points and maps need no half-pixel shift
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, W, H, 0))
    w = np.asarray(weights, dtype=np.float64)
    ax.imshow(w, extent=extent or (0, W, H, 0), cmap="inferno", alpha=alpha, vmin=0,
              vmax=(w.max() if vmax is None else vmax) + 1e-12,
              interpolation="nearest")
    if query_xy is not None:
        ax.plot([query_xy[0]], [query_xy[1]], marker="+", color="cyan", markersize=16, mew=2.5)
    ax.set(xlim=(0, W), ylim=(H, 0), xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize="small")
    return ax


@dataclass(frozen=True)
class TokenGrid:
    """Tokens laid out on a grid over an image, for the attention explorer.

    Token ``i·w + j`` belongs to grid cell ``(i, j)`` (row, column), centred at the image point
    ``(offset + stride·j, offset + stride·i)``.
    """

    name: str             # shown as the panel title
    tokens: torch.Tensor  # (h·w, d) float32, row-major
    grid: tuple           # (h, w) cells
    stride: float         # image pixels between neighbouring cells
    offset: float         # image coordinate of the centre of cell 0

    def cell(self, x: float, y: float) -> tuple[int, int]:
        """The ``(row, col)`` of the cell whose centre is nearest to image point ``(x, y)``."""
        col = int(np.clip(round((x - self.offset) / self.stride), 0, self.grid[1] - 1))
        row = int(np.clip(round((y - self.offset) / self.stride), 0, self.grid[0] - 1))
        return row, col

    def extent(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` in image pixels covered by the cells (for ``imshow``)."""
        h, w = self.grid
        lo = self.offset - self.stride / 2
        return (lo, lo + self.stride * w, lo + self.stride * h, lo)


def pixel_token_grid(image, cells: int = 32, patch: int = 3) -> TokenGrid:
    """:func:`pixel_tokens` of a square image on a ``cells×cells`` grid, as a :class:`TokenGrid`."""
    H, W = np.asarray(image).shape[:2]
    if H != W:
        raise ValueError(f"pixel_token_grid expects a square image, got {W}×{H}")
    return TokenGrid(f"raw pixels ({patch}×{patch} colour patches)", pixel_tokens(image, (cells, cells), patch),
                     (cells, cells), W / cells, W / cells / 2)


def feature_token_grid(backbone, image, layer: str = "conv3", name: str | None = None) -> TokenGrid:
    """Backbone features of ``image`` at ``layer`` as tokens of length ``√d`` (like :func:`pixel_tokens`).

    Args:
        backbone: an :class:`acvm.backbone.Backbone`.
        image: ``H×W×3`` uint8 RGB.
        layer: which layer's output to use (see :data:`acvm.backbone.LAYERS`).
    Returns:
        a :class:`TokenGrid` whose cells sit at the centres of the layer's receptive fields.
    """
    from .backbone import LAYERS, feature_map
    f, stride = feature_map(backbone, image, layer)
    T = _unit_tokens(torch.from_numpy(f.reshape(-1, f.shape[-1])))
    return TokenGrid(name or f"CNN features ({layer})", T, f.shape[:2], float(stride),
                     LAYERS[layer].receptive_field / 2.0)


def draw_query_attention(image, grids, x: float, y: float, temperature: float = 1.0, figsize=None):
    """The attention explorer's callback: for the image point ``(x, y)``, one panel per token grid
    showing where that point's token attends, ``softmax(q Kᵀ / (temperature·√d))`` with ``Q = K``
    the grid's tokens. ``temperature = 1`` is the lecture's formula; smaller makes the softmax
    pick only the most similar tokens, larger spreads the weights. The colours are scaled to the
    largest weight on a token *other* than the query's own.

    Args:
        image: ``H×W×3`` uint8 RGB.
        grids: list of :class:`TokenGrid` over this image.
        x, y: the query point in image pixels.
        temperature: > 0.
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    fig, axes = plt.subplots(1, len(grids), figsize=figsize or (3.6 * len(grids), 3.9), squeeze=False)
    for ax, g in zip(axes[0], grids):
        row, col = g.cell(x, y)
        scale = 1.0 / (temperature * math.sqrt(g.tokens.shape[1]))
        A = query_attention(g.tokens, g.tokens, row * g.grid[1] + col, g.grid, scale)
        qx, qy = g.offset + g.stride * col, g.offset + g.stride * row
        # a token is always most similar to itself; scaling the colours to the largest *other*
        # weight shows where else the query looks
        others = A.copy()
        others[row, col] = 0.0
        plot_query_attention(image, A, (qx, qy), ax=ax, extent=g.extent(), vmax=float(others.max()),
                             title=f"{g.name}\non itself {A[row, col]:.2f}, largest elsewhere {others.max():.3f}")
    fig.tight_layout()
    return fig


def attention_cost(sides=(8, 16, 24, 32, 48), dim: int = 32, window: int = 7, repeats: int = 3,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Time and memory of global vs local attention on ``side×side`` token grids.

    Memory is the size in bytes of the attention-weight tensor each one allocates (``N²`` vs
    ``N·window²`` floats), the term that dominates as ``N`` grows; time is the best of
    ``repeats`` runs, in seconds.

    Returns:
        dict of ``(S,)`` arrays: ``tokens``, ``global_s``, ``local_s``, ``global_bytes``,
        ``local_bytes``.
    """
    import time
    g = torch.Generator().manual_seed(seed)
    rows = {k: [] for k in ("tokens", "global_s", "local_s", "global_bytes", "local_bytes")}
    with torch.no_grad():
        for s in sides:
            x = torch.randn(1, s, s, dim, generator=g)
            flat = x.reshape(1, s * s, dim)
            best_g = best_l = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                _, Ag = scaled_dot_product_attention(flat, flat, flat)
                best_g = min(best_g, time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, Al = local_attention(x, x, x, window)
                best_l = min(best_l, time.perf_counter() - t0)
            rows["tokens"].append(s * s)
            rows["global_s"].append(best_g)
            rows["local_s"].append(best_l)
            rows["global_bytes"].append(Ag.numel() * Ag.element_size())
            rows["local_bytes"].append(Al.numel() * Al.element_size())
    return {k: np.asarray(v) for k, v in rows.items()}
