"""Least-squares problems and the solvers that train a DCF layer through backpropagation (notebook 07).

The *problem* and the *solver* are kept apart. A problem only says how to compute its residual
vector ``r(w)`` from the parameter vector ``w``; its loss is ``L(w) = ‖r(w)‖²``. For the DCF of
the lecture

    L(w) = Σ_j γ_j ‖f(x_j; w) − y_j‖² + Σ_k λ_k ‖w_k‖²,
    r(w) = [ √γ_j (f(x_j; w) − y_j) for every sample j,  √λ_k w_k for every filter channel k ].

The solvers never see a matrix. They need products with the Jacobian ``J = ∂r/∂w`` and its
transpose, and autograd gives both from the forward function alone:

* ``Jᵀu`` is one ordinary backward pass with ``u`` as the incoming gradient;
* ``Jv`` comes from the *double-backward trick*: ``Jᵀu`` is linear in ``u``, so differentiating
  ``u ↦ ⟨Jᵀu, v⟩`` with respect to ``u`` gives ``Jv`` (a second backward pass, through the graph
  of the first one).

So ``JᵀJ v`` costs two backprop calls and conjugate gradient (CG) solves the normal equations
``JᵀJ δ = −Jᵀr`` for the linear case; Gauss–Newton (GN) relinearises a non-linear ``r`` (here a
leaky activation on the response, or a learned 1×1 compression) and runs a few CG iterations on
each linearisation. Gradient descent and steepest descent with exact line search are there for
comparison. Every solver counts its forward passes and its backprop calls (calls of
``torch.autograd.grad``) and records the loss against the number of backprop calls made so far.

Vectors here are flat 1-D tensors: ``w`` of shape ``(n,)`` and ``r`` of shape ``(m,)``; a problem
with several parameter tensors (filter and projection) unpacks ``w`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LeastSquaresProblem", "MatrixProblem", "DCFProblem", "leaky_response", "dcf_loss",
    "OptimResult", "Linearisation", "linearise", "cg_solve",
    "conjugate_gradient", "gauss_newton_cg", "gradient_descent", "steepest_descent",
    "largest_eigenvalue", "pca_projection", "design_matrix", "exact_solution", "compare_solvers",
    "calls_to_reach", "gradient_descent_calls", "plot_convergence", "SolverComparison",
]


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------

class LeastSquaresProblem:
    """A least-squares problem ``L(w) = ‖r(w)‖²``: subclasses define :meth:`residuals`.

    Attributes:
        n: number of parameters (length of ``w``).
        linear: True when ``r`` is affine in ``w`` (then one linearisation is exact and plain CG
            solves the problem).
    """

    n: int = 0
    linear: bool = False
    dtype: torch.dtype = torch.float64

    def residuals(self, w: torch.Tensor) -> torch.Tensor:
        """``(n,)`` parameters -> ``(m,)`` residuals, differentiable in ``w``."""
        raise NotImplementedError

    def loss(self, w: torch.Tensor) -> float:
        """``L(w) = ‖r(w)‖²`` as a Python float (no graph is kept)."""
        with torch.no_grad():
            r = self.residuals(torch.as_tensor(w, dtype=self.dtype))
        return float(r.double().pow(2).sum())

    def initial(self) -> torch.Tensor:
        """The starting point of the solvers: zeros of shape ``(n,)``."""
        return torch.zeros(self.n, dtype=self.dtype)

    def precondition(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Apply ``M⁻¹`` (an approximation of ``(JᵀJ)⁻¹`` at ``w``) to ``v``; identity by default."""
        return v


class MatrixProblem(LeastSquaresProblem):
    """``r(w) = A w − b`` with an explicit ``(m, n)`` matrix ``A`` and ``(m,)`` vector ``b``.

    The smallest possible problem: CG on it is textbook CG on ``AᵀA w = Aᵀb``.
    """

    linear = True

    def __init__(self, A, b):
        self.A = torch.as_tensor(A)
        self.dtype = self.A.dtype if self.A.is_floating_point() else torch.float64
        self.A = self.A.to(self.dtype)
        self.b = torch.as_tensor(b, dtype=self.dtype)
        if self.A.ndim != 2 or self.b.shape != (self.A.shape[0],):
            raise ValueError(f"A must be (m, n) and b (m,), got A {tuple(self.A.shape)} and b {tuple(self.b.shape)}")
        self.n = self.A.shape[1]

    def residuals(self, w):
        return self.A @ w - self.b


def leaky_response(s: torch.Tensor, slope: float = 0.05) -> torch.Tensor:
    """The activation on the DCF response: identity for ``s ≥ 0``, ``slope · s`` below.

    A small slope keeps negative scores from dominating the loss (the background need not
    be pushed to exactly zero), which makes the problem non-linear: Gauss–Newton territory.
    """
    return torch.where(s >= 0, s, slope * s)


class DCFProblem(LeastSquaresProblem):
    """The DCF as a one-filter convolution layer, trained by least squares.

    ``f(x_j; w) = σ(Σ_k x_jk ⋆ w_k)`` (``⋆`` is correlation, ``σ`` the optional activation) and

        L(w) = Σ_j γ_j ‖f(x_j; w) − y_j‖² + Σ_k λ_k ‖w_k‖²  (+ λ_P ‖P‖² with a projection).

    With ``compressed_dim=D`` the features first pass through a learned 1×1 convolution
    ``P`` (``(D, C)``), ATOM's factorised convolution; ``w`` then holds the filter followed by
    ``P`` and the problem is non-linear (a product of unknowns).

    Args:
        x: samples ``(N, C, H, W)`` float tensor or array (the features of the training patches).
        y: desired outputs ``(N, H', W')`` (Gaussian labels); ``H' = H + 2 (kh // 2) − kh + 1``,
            i.e. ``H`` for odd kernels (``"same"`` and ``"circular"`` padding alike).
        filter_size: ``(kh, kw)`` or one int.
        gamma: sample weights γ_j ``(N,)`` (default all 1).
        lam: filter regularisation λ_k, a scalar or one per filter channel ``(C,)`` (``(D,)``
            with a projection).
        activation: ``None`` (linear problem) or a function on the response, e.g.
            :func:`leaky_response`.
        padding: ``"same"`` (zeros around the features, what a CNN layer does) or ``"circular"``
            (wrap around, which makes the problem diagonal in the Fourier domain: the DCF/MOSSE
            closed form applies).
        compressed_dim: ``D`` for a learned ``D×C`` projection, ``None`` for none.
        lam_projection: λ_P, the regularisation of the projection.
        projection_init: ``(D, C)`` starting projection (default: the first ``D`` principal
            directions of the features; with ``P = 0`` the gradient with respect to ``w`` would vanish).
    """

    def __init__(self, x, y, filter_size, gamma=None, lam=1e-2, activation: Callable | None = None,
                 padding: str = "same", compressed_dim: int | None = None, lam_projection: float = 1e-4,
                 projection_init=None):
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.double()
        if x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W) features, got shape {tuple(x.shape)}")
        self.dtype = x.dtype
        self.x = x
        N, C, H, W = x.shape
        kh, kw = (filter_size, filter_size) if np.isscalar(filter_size) else tuple(filter_size)
        self.filter_size = (int(kh), int(kw))
        if padding not in ("same", "circular"):
            raise ValueError(f"padding must be 'same' or 'circular', got {padding!r}")
        if padding == "circular" and (kh > H or kw > W):
            raise ValueError(f"filter_size {self.filter_size} is larger than the {H}×{W} features (circular padding)")
        self.padding = padding
        self.pad = (kw // 2, kw // 2, kh // 2, kh // 2)  # F.pad order: left, right, top, bottom
        out_shape = (H + 2 * (kh // 2) - kh + 1, W + 2 * (kw // 2) - kw + 1)
        y = torch.as_tensor(y, dtype=self.dtype)
        if y.shape != (N, *out_shape):
            raise ValueError(f"y must be (N, H', W') = {(N, *out_shape)} for x {tuple(x.shape)} "
                             f"and filter_size {self.filter_size}, got {tuple(y.shape)}")
        self.y = y
        gamma = torch.ones(N, dtype=self.dtype) if gamma is None else torch.as_tensor(gamma, dtype=self.dtype)
        if gamma.shape != (N,) or (gamma < 0).any():
            raise ValueError(f"gamma must hold N={N} non-negative sample weights, got shape {tuple(gamma.shape)}")
        self.gamma = gamma
        self.D = C if compressed_dim is None else int(compressed_dim)
        lam = torch.as_tensor(lam, dtype=self.dtype)
        if lam.ndim == 0:
            lam = lam.expand(self.D).clone()
        if lam.shape != (self.D,) or (lam < 0).any():
            raise ValueError(f"lam must be a non-negative scalar or one value per filter channel ({self.D},), "
                             f"got shape {tuple(lam.shape)}")
        self.lam = lam
        self.lam_projection = float(lam_projection)
        self.activation = activation
        self.compressed = compressed_dim is not None
        self.n_filter = self.D * kh * kw
        self.n = self.n_filter + (self.D * C if self.compressed else 0)
        self.linear = activation is None and not self.compressed
        if self.compressed:
            if projection_init is None:
                projection_init = pca_projection(x, self.D)
            projection_init = torch.as_tensor(projection_init, dtype=self.dtype)
            if projection_init.shape != (self.D, C):
                raise ValueError(f"projection_init must be (D, C) = {(self.D, C)}, got {tuple(projection_init.shape)}")
            self.projection_init = projection_init
        # per-channel energy Σ_j γ_j ‖x_jk‖², the diagonal of JᵀJ for circular padding
        self._energy = (gamma[:, None] * x.pow(2).sum((2, 3))).sum(0)

    # -- unpacking the parameter vector -------------------------------------------------------
    def filter(self, w: torch.Tensor) -> torch.Tensor:
        """The filter ``(1, D, kh, kw)`` held in the first ``D·kh·kw`` entries of ``w``."""
        return w[: self.n_filter].reshape(1, self.D, *self.filter_size)

    def projection(self, w: torch.Tensor) -> torch.Tensor | None:
        """The 1×1 projection ``(D, C)`` held after the filter in ``w`` (``None`` without one)."""
        if not self.compressed:
            return None
        return w[self.n_filter:].reshape(self.D, self.x.shape[1])

    def pack(self, filt, projection=None) -> torch.Tensor:
        """Inverse of :meth:`filter` / :meth:`projection`: tensors -> the ``(n,)`` vector ``w``."""
        parts = [torch.as_tensor(filt, dtype=self.dtype).reshape(-1)]
        if self.compressed:
            parts.append(torch.as_tensor(projection, dtype=self.dtype).reshape(-1))
        return torch.cat(parts)

    def initial(self) -> torch.Tensor:
        """Zero filter (and the initial projection): the solvers' starting point ``(n,)``."""
        w = torch.zeros(self.n, dtype=self.dtype)
        if self.compressed:
            w[self.n_filter:] = self.projection_init.reshape(-1)
        return w

    # -- the model -------------------------------------------------------------------------
    def features(self, w: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The features the filter sees: ``x`` or its projection ``P x``, ``(N, D, H, W)``."""
        x = self.x if x is None else x
        P = self.projection(w)
        return x if P is None else torch.einsum("dc,nchw->ndhw", P, x)

    def response(self, w: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``f(x; w)``: the layer's output ``(N, H', W')`` on the training samples (or on ``x``)."""
        z = self.features(w, x)
        if self.padding == "circular":
            s = F.conv2d(F.pad(z, self.pad, mode="circular"), self.filter(w))
        else:
            s = F.conv2d(z, self.filter(w), padding=(self.pad[2], self.pad[0]))
        s = s[:, 0]
        return s if self.activation is None else self.activation(s)

    def residuals(self, w):
        data = self.gamma.sqrt()[:, None, None] * (self.response(w) - self.y)
        reg = self.lam.sqrt()[None, :, None, None] * self.filter(w)
        parts = [data.reshape(-1), reg.reshape(-1)]
        if self.compressed:
            parts.append(np.sqrt(self.lam_projection) * self.projection(w).reshape(-1))
        return torch.cat(parts)

    def precondition(self, v, w):
        """Divide each filter channel by ``Σ_j γ_j ‖x_jk‖² + λ_k`` (the diagonal of ``JᵀJ``,
        exact for circular padding, a slight over-estimate at zero-padded borders)."""
        kh, kw = self.filter_size
        if self.compressed:
            P = self.projection(w).detach()
            energy = torch.einsum("dc,nchw->ndhw", P, self.x).pow(2).sum((2, 3))
            energy = (self.gamma[:, None] * energy).sum(0)
            # for the projection: Σ_j γ_j ‖x_jc‖² ‖w_d‖², a rough but well-scaled diagonal
            wd = self.filter(w).detach()[0].pow(2).sum((1, 2))
            diag_p = wd[:, None] * self._energy[None, :] + self.lam_projection
            diag_f = (energy + self.lam).repeat_interleave(kh * kw)
            return v / torch.cat([diag_f, diag_p.reshape(-1)])
        diag = (self._energy + self.lam).repeat_interleave(kh * kw)
        return v / diag


def dcf_loss(responses: torch.Tensor, labels: torch.Tensor, gamma: torch.Tensor, filt: torch.Tensor,
             lam) -> torch.Tensor:
    """The DCF loss ``L(w) = Σ_j γ_j ‖f(x_j; w) − y_j‖² + Σ_k λ_k ‖w_k‖²`` written out directly.

    Args:
        responses: ``f(x_j; w)``, ``(N, H, W)`` float tensor.
        labels: ``y_j``, ``(N, H, W)``.
        gamma: ``γ_j``, ``(N,)``.
        filt: the filter ``w``, ``(D, kh, kw)`` (or ``(1, D, kh, kw)``); channel ``k`` is ``w_k``.
        lam: ``λ_k``, a number or ``(D,)``.
    Returns:
        a 0-dim tensor (differentiable in ``responses`` and ``filt``).
    """
    filt = filt.reshape(-1, *filt.shape[-2:])
    lam = torch.as_tensor(lam, dtype=filt.dtype)
    data = (gamma * ((responses - labels) ** 2).sum((1, 2))).sum()
    reg = (lam * (filt ** 2).sum((1, 2))).sum()
    return data + reg


def pca_projection(x: torch.Tensor, D: int) -> torch.Tensor:
    """The ``(D, C)`` matrix of the first ``D`` principal directions of features ``x`` ``(N, C, H, W)``."""
    C = x.shape[1]
    if not 1 <= D <= C:
        raise ValueError(f"compressed_dim must be between 1 and C={C}, got {D}")
    flat = x.transpose(0, 1).reshape(C, -1)
    flat = flat - flat.mean(1, keepdim=True)
    cov = flat @ flat.T / flat.shape[1]
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    return vecs[:, -D:].flip(1).T.contiguous()


# --------------------------------------------------------------------------------------------
# Linearisation with autograd
# --------------------------------------------------------------------------------------------

@dataclass
class OptimResult:
    """What a solver returns.

    Attributes:
        w: the final parameters ``(n,)``.
        losses: ``L`` at the start and after each step (a list of floats).
        backprops: the number of backprop calls made before each entry of ``losses`` was reached.
        forward_calls, backward_calls: totals over the whole run.
    """

    w: torch.Tensor
    losses: list[float] = field(default_factory=list)
    backprops: list[int] = field(default_factory=list)
    forward_calls: int = 0
    backward_calls: int = 0


class _Counter:
    """Counts the forward passes (residual evaluations) and backprop calls of one solver run."""

    def __init__(self, problem: LeastSquaresProblem):
        self.problem = problem
        self.forward = 0
        self.backward = 0

    def residuals(self, w):
        self.forward += 1
        return self.problem.residuals(w)

    def grad(self, output, inputs, grad_output, create_graph=False):
        self.backward += 1
        (g,) = torch.autograd.grad(output, inputs, grad_output, retain_graph=True,
                                   create_graph=create_graph, allow_unused=True)
        return torch.zeros_like(inputs) if g is None else g


@dataclass
class Linearisation:
    """``r(w + δ) ≈ r + J δ`` at one point, with the products that CG needs.

    Attributes:
        w: the point ``(n,)``; r: the residuals there ``(m,)``; g: ``Jᵀr`` ``(n,)`` (half the
        gradient of ``L``); loss: ``‖r‖²``.
    """

    w: torch.Tensor
    r: torch.Tensor
    g: torch.Tensor
    loss: float
    jvp: Callable[[torch.Tensor], torch.Tensor]
    vjp: Callable[[torch.Tensor], torch.Tensor]

    def normal(self, v: torch.Tensor) -> torch.Tensor:
        """``JᵀJ v`` ``(n,)`` for ``v`` ``(n,)``: two backprop calls."""
        return self.vjp(self.jvp(v))


def linearise(problem: LeastSquaresProblem, w: torch.Tensor, counter: _Counter | None = None) -> Linearisation:
    """Linearise ``r`` at ``w``: one forward pass and one backprop call (which also builds the
    graph for the double-backward trick).

    Returns a :class:`Linearisation` whose ``jvp(v) = J v`` (``(n,)`` -> ``(m,)``) and
    ``vjp(u) = Jᵀ u`` (``(m,)`` -> ``(n,)``) each cost one more backprop call.
    """
    counter = counter or _Counter(problem)
    w = w.detach().clone().requires_grad_(True)
    r = counter.residuals(w)
    # u stands for any vector in residual space; Jᵀu is built as a graph that is linear in u
    u = r.detach().clone().requires_grad_(True)
    jtu = counter.grad(r, w, u, create_graph=True)
    r0 = r.detach()

    def jvp(v):
        # d/du ⟨Jᵀu, v⟩ = J v: a backward pass through the backward pass
        return counter.grad(jtu, u, v).detach()

    def vjp(u_):
        return counter.grad(r, w, u_).detach()

    return Linearisation(w.detach(), r0, jtu.detach(), float(r0.double().pow(2).sum()), jvp, vjp)


def _dot(a, b):
    return torch.dot(a.reshape(-1), b.reshape(-1))


def cg_solve(apply_A: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, n_iter: int,
             precondition: Callable[[torch.Tensor], torch.Tensor] | None = None,
             callback: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
             tol: float = 0.0) -> torch.Tensor:
    """Solve ``A x = b`` by (preconditioned) conjugate gradient, starting from ``x = 0``.

    Args:
        apply_A: ``v ↦ A v`` for a symmetric positive definite ``A``; ``(n,)`` -> ``(n,)``.
        b: right-hand side ``(n,)`` float tensor.
        n_iter: number of iterations (each calls ``apply_A`` once). In exact arithmetic CG
            reaches the solution in at most ``n`` iterations, or in as many as ``A`` has distinct
            eigenvalues.
        precondition: ``v ↦ M⁻¹ v`` (optional).
        callback: called as ``callback(x, res)`` after each iteration with the iterate and the
            residual ``res = b − A x``.
        tol: stop early once ``‖res‖ ≤ tol · ‖b‖``.
    Returns:
        ``x`` ``(n,)``, same dtype as ``b``.
    """
    M = precondition or (lambda v: v)
    x = torch.zeros_like(b)
    res = b.clone()
    z = M(res)
    p = z.clone()
    rz = _dot(res, z)
    b_norm = float(b.norm())
    for _ in range(n_iter):
        if rz == 0:  # res is exactly zero: solved
            break
        q = apply_A(p)
        alpha = rz / _dot(p, q)
        x = x + alpha * p
        res = res - alpha * q
        if callback is not None:
            callback(x, res)
        if tol > 0 and float(res.norm()) <= tol * b_norm:
            break
        z = M(res)
        rz_next = _dot(res, z)
        # Fletcher–Reeves β: keeps each new direction A-conjugate to all previous ones
        p = z + (rz_next / rz) * p
        rz = rz_next
    return x


# --------------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------------

def conjugate_gradient(problem: LeastSquaresProblem, n_iter: int, w0: torch.Tensor | None = None,
                       precondition: bool = False) -> OptimResult:
    """Minimise a *linear* least-squares problem by CG on ``JᵀJ δ = −Jᵀr(w0)``.

    Cost: one forward pass, one backprop call to linearise, then two per iteration. The loss
    after each iteration costs nothing extra: with ``b = −Jᵀr₀`` and CG's residual
    ``res = b − JᵀJ δ``, ``L(w₀ + δ) = ‖r₀ + Jδ‖² = ‖r₀‖² − δᵀ(b + res)``.

    Args:
        problem: a problem with ``problem.linear`` True (use :func:`gauss_newton_cg` otherwise).
        n_iter: CG iterations.
        w0: starting point ``(n,)`` (default ``problem.initial()``).
        precondition: use ``problem.precondition`` (diagonal scaling).
    Returns:
        :class:`OptimResult` with ``len(losses) == n_iter + 1`` (fewer if CG finished early).
    """
    if not problem.linear:
        raise ValueError("conjugate_gradient needs a linear problem; use gauss_newton_cg for a non-linear one")
    counter = _Counter(problem)
    w0 = problem.initial() if w0 is None else torch.as_tensor(w0, dtype=problem.dtype)
    lin = linearise(problem, w0, counter)
    out = OptimResult(w0, [lin.loss], [0])
    b = -lin.g
    r0_sq = float(lin.r.double().pow(2).sum())

    def record(delta, res):
        # L(w0 + δ) = ‖r0‖² + 2δᵀJᵀr0 + δᵀJᵀJδ, and JᵀJδ = b − res with b = −Jᵀr0
        out.losses.append(r0_sq - float(_dot(delta, b + res)))
        out.backprops.append(counter.backward)

    M = (lambda v: problem.precondition(v, lin.w)) if precondition else None
    delta = cg_solve(lin.normal, b, n_iter, precondition=M, callback=record)
    out.w = (lin.w + delta).detach()
    out.forward_calls, out.backward_calls = counter.forward, counter.backward
    return out


def gauss_newton_cg(problem: LeastSquaresProblem, n_gn: int, n_cg: int | list[int], w0: torch.Tensor | None = None,
                    precondition: bool = False, backtrack: bool = False, record_inner: bool = False) -> OptimResult:
    """Gauss–Newton: linearise ``r`` at ``w``, take ``n_cg`` CG steps on ``JᵀJ δ = −Jᵀr``, move, repeat.

    Args:
        problem: any least-squares problem (for a linear one, ``n_gn=1`` is plain CG).
        n_gn: number of linearisations (outer iterations).
        n_cg: CG iterations per linearisation, an int or one per outer iteration.
        w0: starting point ``(n,)`` (default ``problem.initial()``).
        precondition: use ``problem.precondition`` in the inner CG.
        backtrack: halve the step while it would raise the loss (forward passes only, at most
            10 halvings). Plain GN, as in ATOM, can overshoot on a strongly non-linear problem
            such as the jointly learned filter and projection; this makes the loss monotone.
        record_inner: also record the true loss after every inner CG iteration (one extra
            forward pass each, no backprop call), for convergence plots.
    Returns:
        :class:`OptimResult`; ``losses`` holds the true loss at the start and after each outer
        iteration (``n_gn + 1`` entries), or after every CG iteration with ``record_inner``.
    """
    counter = _Counter(problem)
    w = problem.initial() if w0 is None else torch.as_tensor(w0, dtype=problem.dtype)
    inner = [n_cg] * n_gn if np.isscalar(n_cg) else list(n_cg)
    out = OptimResult(w)
    for k in inner:
        lin = linearise(problem, w, counter)
        out.losses.append(lin.loss)
        out.backprops.append(counter.backward - 1)  # the loss was known before this linearisation's backprop
        M = (lambda v, at=lin.w: problem.precondition(v, at)) if precondition else None
        record = None
        if record_inner:
            def record(delta, res, at=lin.w):
                out.losses.append(_counted_loss(counter, at + delta))
                out.backprops.append(counter.backward)
        delta = cg_solve(lin.normal, -lin.g, k, precondition=M, callback=record)
        if record_inner:  # the next linearisation re-measures this point; keep one entry per point
            out.losses.pop()
            out.backprops.pop()
        if backtrack:
            for _ in range(10):
                if _counted_loss(counter, lin.w + delta) <= lin.loss:
                    break
                delta = delta / 2
        w = (lin.w + delta).detach()
    out.losses.append(_counted_loss(counter, w))
    out.backprops.append(counter.backward)
    out.w = w
    out.forward_calls, out.backward_calls = counter.forward, counter.backward
    return out


def _counted_loss(counter: _Counter, w) -> float:
    with torch.no_grad():
        return float(counter.residuals(w).double().pow(2).sum())


def gradient_descent(problem: LeastSquaresProblem, n_iter: int, step: float | None = None,
                     w0: torch.Tensor | None = None) -> OptimResult:
    """Plain gradient descent ``w ← w − step · ∇L(w)`` with ``∇L = 2 Jᵀr``.

    One forward pass and one backprop call per iteration.

    Args:
        step: the step length; default ``1 / (2 λ_max(JᵀJ))``, the largest step that is safe on
            any quadratic, with ``λ_max`` estimated at ``w0`` by :func:`largest_eigenvalue`
            (those calls are not counted, in gradient descent's favour).
    Returns:
        :class:`OptimResult` with ``n_iter + 1`` losses.
    """
    w = problem.initial() if w0 is None else torch.as_tensor(w0, dtype=problem.dtype)
    if step is None:
        step = 1.0 / (2.0 * largest_eigenvalue(problem, w))
    counter = _Counter(problem)
    out = OptimResult(w)
    for i in range(n_iter + 1):
        wg = w.detach().clone().requires_grad_(True)
        r = counter.residuals(wg)
        out.losses.append(float(r.detach().double().pow(2).sum()))
        out.backprops.append(counter.backward)
        if i == n_iter:
            break
        g = counter.grad(r, wg, 2.0 * r.detach())
        w = (w - step * g).detach()
    out.w = w
    out.forward_calls, out.backward_calls = counter.forward, counter.backward
    return out


def steepest_descent(problem: LeastSquaresProblem, n_iter: int, w0: torch.Tensor | None = None) -> OptimResult:
    """Steepest descent with exact line search: ``w ← w − α g``, ``g = Jᵀr``, ``α = ‖g‖² / ‖J g‖²``.

    ``α`` minimises ``‖r − α J g‖²``, exactly the loss along ``−g`` for a linear problem and its
    Gauss–Newton model otherwise. Per iteration: one forward pass and two backprop calls
    (``Jᵀr``, then ``J g`` by the double-backward trick).
    """
    w = problem.initial() if w0 is None else torch.as_tensor(w0, dtype=problem.dtype)
    counter = _Counter(problem)
    out = OptimResult(w)
    for _ in range(n_iter):
        lin = linearise(problem, w, counter)
        out.losses.append(lin.loss)
        out.backprops.append(counter.backward - 1)
        gg = float(_dot(lin.g, lin.g))
        if gg == 0:
            break
        jg = lin.jvp(lin.g)
        w = (lin.w - (gg / float(_dot(jg, jg))) * lin.g).detach()
    out.losses.append(_counted_loss(counter, w))
    out.backprops.append(counter.backward)
    out.w = w
    out.forward_calls, out.backward_calls = counter.forward, counter.backward
    return out


def largest_eigenvalue(problem: LeastSquaresProblem, w: torch.Tensor | None = None, n_iter: int = 30,
                       seed: int = 0) -> float:
    """Largest eigenvalue of ``JᵀJ`` at ``w`` by power iteration (float)."""
    w = problem.initial() if w is None else w
    lin = linearise(problem, w)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(problem.n, generator=gen, dtype=problem.dtype)
    v = v / v.norm()
    lam = 0.0
    for _ in range(n_iter):
        av = lin.normal(v)
        lam = float(_dot(v, av))
        v = av / av.norm()
    return lam


# --------------------------------------------------------------------------------------------
# A reference solution and the comparison figure of notebook 07
# --------------------------------------------------------------------------------------------

def design_matrix(problem: DCFProblem) -> torch.Tensor:
    """The linear DCF layer as an explicit matrix ``X`` ``(N·H'·W', n)``: ``f(x; w) = X w`` (flattened).

    Built by ``unfold`` (im2col): row ``(j, u)`` holds the features under the filter placed at
    output position ``u`` of sample ``j``. Only for problems without projection.
    """
    if problem.compressed:
        raise ValueError("design_matrix needs a problem without a projection (compressed_dim=None)")
    kh, kw = problem.filter_size
    x = problem.x
    if problem.padding == "circular":
        cols = F.unfold(F.pad(x, problem.pad, mode="circular"), (kh, kw))
    else:
        cols = F.unfold(x, (kh, kw), padding=(kh // 2, kw // 2))
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def exact_solution(problem: DCFProblem) -> torch.Tensor:
    """The minimiser ``(n,)`` of a *linear* DCF problem from its normal equations, by Cholesky:

        (Xᵀ Γ X + Λ) w = Xᵀ Γ y,   Γ = diag(γ_j), Λ = diag(λ_k).

    A dense solve, fine for a few thousand unknowns; the solvers above never form this matrix.
    """
    if not problem.linear:
        raise ValueError("exact_solution needs a linear problem (no activation, no projection)")
    X = design_matrix(problem).double()
    hw = problem.y.shape[1] * problem.y.shape[2]
    g = problem.gamma.double().repeat_interleave(hw)
    kk = problem.filter_size[0] * problem.filter_size[1]
    lhs = X.T @ (g[:, None] * X) + torch.diag(problem.lam.double().repeat_interleave(kk))
    rhs = X.T @ (g * problem.y.double().reshape(-1))
    L = torch.linalg.cholesky(lhs)
    return torch.cholesky_solve(rhs[:, None], L)[:, 0].to(problem.dtype)


def gradient_descent_calls(problem: DCFProblem, gap: float = 1e-6, step: float | None = None,
                           w0: torch.Tensor | None = None, max_calls: int = 10 ** 9) -> int | None:
    """Backprop calls gradient descent needs on a *linear* problem to get ``(L − L*) / L* < gap``.

    Computed, not run: in the eigenbasis of ``A = JᵀJ`` (eigenvalues ``μ_i``) each step multiplies
    the error's coordinate ``c_i`` by ``1 − 2·step·μ_i``, so
    ``L(w_k) − L* = Σ_i μ_i c_i² (1 − 2·step·μ_i)^{2k}``. The default step is
    ``1 / (2 μ_max)``, as in :func:`gradient_descent`. Returns ``None`` beyond ``max_calls``.
    """
    X = design_matrix(problem).double()
    hw = problem.y.shape[1] * problem.y.shape[2]
    g = problem.gamma.double().repeat_interleave(hw)
    kk = problem.filter_size[0] * problem.filter_size[1]
    A = X.T @ (g[:, None] * X) + torch.diag(problem.lam.double().repeat_interleave(kk))
    mu, V = torch.linalg.eigh(A)
    w_star = exact_solution(problem).double()
    w0 = problem.initial().double() if w0 is None else torch.as_tensor(w0, dtype=torch.float64)
    c2 = (V.T @ (w0 - w_star)) ** 2
    optimum = problem.loss(w_star)
    step = 1.0 / (2.0 * float(mu[-1])) if step is None else step
    rate = torch.log((1.0 - 2.0 * step * mu).abs().clamp(min=1e-300))
    weight = mu * c2
    # L(w_k) - L* is a sum of decaying exponentials: bisect on k
    def excess(k):
        return float((weight * torch.exp(2 * k * rate)).sum())
    target = gap * optimum
    if excess(0) < target:
        return 0
    if excess(max_calls) >= target:
        return None
    lo, hi = 0, max_calls
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if excess(mid) >= target else (lo, mid)
    return hi


def compare_solvers(problem: LeastSquaresProblem, budget: int = 60, n_cg: int = 5) -> dict[str, OptimResult]:
    """Run the four solvers on ``problem`` for about ``budget`` backprop calls each.

    Returns ``{"CG": ..., "GN-CG": ..., "steepest descent": ..., "gradient descent": ...}``.
    "CG" is CG on one linearisation at the start (for a linear problem: the exact method);
    "GN-CG" relinearises every ``n_cg`` CG iterations. Both record the true loss at every CG
    iteration.
    """
    n_iter = max(1, (budget - 1) // 2)
    return {
        "CG": gauss_newton_cg(problem, 1, n_iter, record_inner=True),
        "GN-CG": gauss_newton_cg(problem, max(1, budget // (1 + 2 * n_cg)), n_cg, record_inner=True),
        "steepest descent": steepest_descent(problem, max(1, budget // 2)),
        "gradient descent": gradient_descent(problem, budget),
    }


def calls_to_reach(result: OptimResult, optimum: float, gap: float = 1e-6) -> int | None:
    """The first number of backprop calls after which ``(L − L*) / L* < gap``; ``None`` if never."""
    for calls, loss in zip(result.backprops, result.losses):
        if (loss - optimum) / optimum < gap:
            return int(calls)
    return None


def plot_convergence(results: dict[str, OptimResult], optimum: float, ax=None, title: str | None = None):
    """Relative loss gap ``(L − L*) / L*`` (log scale) against backprop calls, one line per solver."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    floor = 1e-16
    for (name, r), style in zip(results.items(), ["o-", "s-", "^-", "-"]):
        gap = np.maximum((np.asarray(r.losses) - optimum) / optimum, floor)
        ax.semilogy(r.backprops, gap, style, ms=3, label=name)
    ax.axhline(1e-6, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("backprop calls")
    ax.set_ylabel("relative loss gap (L − L*) / L*")
    ax.set_ylim(floor * 10, None)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


class SolverComparison:
    """The interactive figure of notebook 07: the four solvers on a DCF problem built from samples.

    Args:
        x: features ``(N, C, H, W)`` of the training samples; y: labels ``(N, H, W)``.
        filter_size: the DCF's kernel side.
        budget: backprop calls per solver.
    ``draw(lam, n_samples, leaky)`` is the widget's callback: the problem with the first
    ``n_samples`` samples (equal weights γ_j = 1/n), regularisation λ and a linear or leaky
    output, and the loss gap of each solver against backprop calls. For the linear problem
    ``L*`` is :func:`exact_solution`'s; for the leaky one the best loss of a long Gauss–Newton run.
    """

    def __init__(self, x, y, filter_size: int = 5, budget: int = 60):
        self.x = torch.as_tensor(x, dtype=torch.float64)
        self.y = torch.as_tensor(y, dtype=torch.float64)
        self.filter_size = filter_size
        self.budget = budget
        self._cache: dict = {}

    def problem(self, lam: float, n_samples: int, leaky: bool = False) -> DCFProblem:
        """The DCF problem on the first ``n_samples`` samples."""
        n = int(np.clip(n_samples, 1, self.x.shape[0]))
        return DCFProblem(self.x[:n], self.y[:n], self.filter_size, gamma=torch.full((n,), 1.0 / n),
                          lam=lam, activation=leaky_response if leaky else None)

    def optimum(self, problem: DCFProblem) -> float:
        """``L*``: exact for a linear problem, else the best of a long Gauss–Newton run."""
        if problem.linear:
            return problem.loss(exact_solution(problem))
        return min(gauss_newton_cg(problem, 20, 15, backtrack=True).losses)

    def run(self, lam: float, n_samples: int, leaky: bool = False):
        """``(results, optimum)`` for one setting (what :meth:`draw` plots; remembered per setting)."""
        key = (float(lam), int(n_samples), bool(leaky))
        if key not in self._cache:
            problem = self.problem(lam, n_samples, leaky)
            self._cache[key] = (compare_solvers(problem, self.budget), self.optimum(problem))
        return self._cache[key]

    def draw(self, lam: float = 1.0, n_samples: int = 8, leaky: bool = False):
        """The figure for one setting; returns the matplotlib Figure."""
        import matplotlib.pyplot as plt
        results, optimum = self.run(lam, n_samples, leaky)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        kind = "leaky output (non-linear)" if leaky else "linear output"
        plot_convergence(results, optimum, ax, f"DCF, {kind}: λ = {lam:g}, {int(n_samples)} samples")
        fig.tight_layout()
        return fig
