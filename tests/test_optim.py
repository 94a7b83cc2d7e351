"""acvm.optim against independent references: the Fourier closed form of the DCF, SciPy's CG and
dense solves on explicitly built normal equations, finite differences and textbook CG facts."""
import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse.linalg
import torch

from acvm.optim import (DCFProblem, MatrixProblem, SolverComparison, calls_to_reach, cg_solve, conjugate_gradient,
                        dcf_loss, design_matrix, exact_solution, gauss_newton_cg, gradient_descent,
                        gradient_descent_calls, largest_eigenvalue, leaky_response, linearise, pca_projection,
                        steepest_descent)


def _fourier_dcf(x, y, gamma, lam):
    """Closed form of the single-channel circular DCF (MOSSE with a regulariser).

    With ``f(x; w)[u] = Σ_t w[t] x[u + t − c]`` (indices mod H, W; ``c`` the filter centre) and
    ``w'[s] = w[s + c]``, ``f = ifft(conj(W') X)`` and Parseval turns the loss into one scalar
    problem per frequency: ``W' = Σ_j γ_j X_j conj(Y_j) / (Σ_j γ_j |X_j|² + λ)``.
    """
    X, Y = np.fft.fft2(x), np.fft.fft2(y)
    num = (gamma[:, None, None] * X * np.conj(Y)).sum(0)
    den = (gamma[:, None, None] * np.abs(X) ** 2).sum(0) + lam
    w_shifted = np.real(np.fft.ifft2(num / den))
    H, W = x.shape[1:]
    return np.roll(w_shifted, (H // 2, W // 2), axis=(0, 1))


def test_cg_equals_fourier_closed_form_single_channel_circular():
    rng = np.random.default_rng(1)
    N, H, W = 3, 15, 13
    x = rng.normal(size=(N, H, W))
    yy, xx = np.mgrid[:H, :W]
    y = np.stack([np.exp(-((yy - 7 - j) ** 2 + (xx - 6 + j) ** 2) / 8.0) for j in range(N)])
    gamma = np.array([1.0, 0.4, 2.5])
    lam = 0.3
    problem = DCFProblem(x[:, None], y, (H, W), gamma=gamma, lam=lam, padding="circular")
    result = conjugate_gradient(problem, 400)
    w = problem.filter(result.w)[0, 0].numpy()
    expected = _fourier_dcf(x, y, gamma, lam)
    np.testing.assert_allclose(w, expected, atol=1e-9 * np.abs(expected).max(), rtol=0)
    # the optimum's loss, computed in the Fourier domain by Parseval, is what CG reports
    pred = np.real(np.fft.ifft2(np.conj(np.fft.fft2(np.roll(expected, (-(H // 2), -(W // 2)), (0, 1))))
                                * np.fft.fft2(x)))
    loss = (gamma[:, None, None] * (pred - y) ** 2).sum() + lam * (expected ** 2).sum()
    assert result.losses[-1] == pytest.approx(loss, rel=1e-10)


def _design_matrix(x, kh, kw):
    """The explicit linear map w -> responses of a zero-padded 'same' correlation, by loops."""
    N, C, H, W = x.shape
    A = np.zeros((N * H * W, C * kh * kw))
    for j in range(N):
        for u in range(H):
            for v in range(W):
                row = (j * H + u) * W + v
                for c in range(C):
                    for a in range(kh):
                        for b in range(kw):
                            su, sv = u + a - kh // 2, v + b - kw // 2
                            if 0 <= su < H and 0 <= sv < W:
                                A[row, (c * kh + a) * kw + b] = x[j, c, su, sv]
    return A


def _explicit_normal_equations(x, y, gamma, lam, kh, kw):
    A = _design_matrix(x, kh, kw)
    g = np.repeat(gamma, x.shape[2] * x.shape[3])
    lhs = A.T @ (g[:, None] * A) + np.diag(np.repeat(lam, kh * kw))
    rhs = A.T @ (g * y.reshape(-1))
    return lhs, rhs


def test_cg_equals_scipy_cg_on_explicit_normal_equations_with_weights_and_channel_lambdas():
    rng = np.random.default_rng(2)
    N, C, H, W, k = 4, 3, 9, 8, 3
    x = rng.normal(size=(N, C, H, W))
    y = rng.normal(size=(N, H, W))
    gamma = np.array([0.2, 1.0, 3.0, 0.7])
    lam = np.array([0.05, 2.0, 10.0])
    lhs, rhs = _explicit_normal_equations(x, y, gamma, lam, k, k)
    ref, info = scipy.sparse.linalg.cg(lhs, rhs, rtol=1e-13, atol=0.0, maxiter=2000)
    assert info == 0
    problem = DCFProblem(x, y, k, gamma=gamma, lam=lam)
    w = conjugate_gradient(problem, 200).w.numpy()
    np.testing.assert_allclose(w, ref, atol=1e-9, rtol=0)
    np.testing.assert_allclose(w, np.linalg.solve(lhs, rhs), atol=1e-9, rtol=0)


def test_sample_weight_two_equals_a_duplicated_sample():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 2, 7, 7))
    y = rng.normal(size=(3, 7, 7))
    weighted = DCFProblem(x, y, 3, gamma=[2.0, 1.0, 1.0], lam=0.1)
    duplicated = DCFProblem(np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]]), 3, lam=0.1)
    a = conjugate_gradient(weighted, 100).w
    b = conjugate_gradient(duplicated, 100).w
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    unweighted = conjugate_gradient(DCFProblem(x, y, 3, lam=0.1), 100).w
    assert (a - unweighted).abs().max() > 1e-3  # the weight does change the answer


def test_per_channel_lambda_shrinks_only_its_channel():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 2, 8, 8))
    y = rng.normal(size=(3, 8, 8))
    loose = DCFProblem(x, y, 3, lam=[0.1, 0.1])
    tight = DCFProblem(x, y, 3, lam=[0.1, 1e6])
    wl = loose.filter(conjugate_gradient(loose, 100).w)[0]
    wt = tight.filter(conjugate_gradient(tight, 100).w)[0]
    assert wt[1].norm() < 1e-3 * wl[1].norm()
    assert wt[0].norm() > 0.5 * wl[0].norm()


@pytest.mark.parametrize("n", [2, 5, 9])
def test_cg_solves_an_n_dimensional_quadratic_in_n_iterations(n):
    rng = np.random.default_rng(n)
    A = torch.tensor(rng.normal(size=(2 * n + 3, n)))
    b = torch.tensor(rng.normal(size=2 * n + 3))
    problem = MatrixProblem(A, b)
    exact = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    result = conjugate_gradient(problem, n)
    torch.testing.assert_close(result.w, exact, atol=1e-9, rtol=0)
    assert result.losses[-1] == pytest.approx(problem.loss(exact), rel=1e-12)
    if n > 2:  # and it really takes that many: one iteration fewer is still off
        early = conjugate_gradient(problem, n - 1)
        assert (early.w - exact).abs().max() > 1e-6


def test_cg_needs_only_as_many_iterations_as_distinct_eigenvalues():
    rng = np.random.default_rng(5)
    n = 12
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    V, _ = np.linalg.qr(rng.normal(size=(n, n)))
    s = np.repeat([0.5, 2.0, 7.0], 4)  # three distinct singular values
    A = torch.tensor(U @ np.diag(s) @ V.T)
    b = torch.tensor(rng.normal(size=n))
    result = conjugate_gradient(MatrixProblem(A, b), 3)
    torch.testing.assert_close(result.w, torch.linalg.solve(A, b), atol=1e-9, rtol=0)
    gd = gradient_descent(MatrixProblem(A, b), 3)
    assert gd.losses[-1] > 1e-3  # gradient descent is nowhere near after as many steps


def test_cg_solve_on_explicit_spd_matrix_and_preconditioning_keeps_the_solution():
    rng = np.random.default_rng(6)
    B = rng.normal(size=(7, 7))
    A = torch.tensor(B @ B.T + 0.5 * np.eye(7))
    b = torch.tensor(rng.normal(size=7))
    x = cg_solve(lambda v: A @ v, b, 7)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), atol=1e-9, rtol=0)
    d = torch.diagonal(A)
    xp = cg_solve(lambda v: A @ v, b, 7, precondition=lambda v: v / d)
    torch.testing.assert_close(xp, x, atol=1e-9, rtol=0)


def test_reported_losses_are_the_true_losses_and_calls_are_counted():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 6, 6))
    y = rng.normal(size=(2, 6, 6))
    problem = DCFProblem(x, y, 3, gamma=[1.0, 0.5], lam=0.2)
    for k in (1, 2, 5):
        r = conjugate_gradient(problem, k)
        assert r.losses[-1] == pytest.approx(problem.loss(r.w), rel=1e-12)
        assert r.forward_calls == 1 and r.backward_calls == 1 + 2 * k
        assert r.backprops == [0] + [1 + 2 * i for i in range(1, k + 1)]
    gd = gradient_descent(problem, 4, step=1e-3)
    assert gd.forward_calls == 5 and gd.backward_calls == 4 and gd.backprops == [0, 1, 2, 3, 4]
    assert gd.losses[-1] == pytest.approx(problem.loss(gd.w), rel=1e-12)
    sd = steepest_descent(problem, 3)
    assert sd.backward_calls == 6 and sd.backprops == [0, 2, 4, 6]
    gn = gauss_newton_cg(problem, 2, 3)
    assert gn.backward_calls == 2 * (1 + 2 * 3) and gn.backprops == [0, 7, 14]


def test_jvp_and_vjp_match_finite_differences_on_a_nonlinear_problem():
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.normal(size=(2, 4, 7, 7)))
    y = torch.tensor(rng.normal(size=(2, 7, 7)))
    problem = DCFProblem(x, y, 3, lam=0.1, activation=lambda s: torch.tanh(s), compressed_dim=2)
    w = torch.tensor(rng.normal(size=problem.n))
    lin = linearise(problem, w)
    v = torch.tensor(rng.normal(size=problem.n))
    eps = 1e-6
    fd = (problem.residuals(w + eps * v) - problem.residuals(w - eps * v)) / (2 * eps)
    torch.testing.assert_close(lin.jvp(v), fd, atol=1e-6, rtol=1e-6)
    u = torch.tensor(rng.normal(size=lin.r.shape[0]))
    # the transpose is the adjoint: <J v, u> = <v, Jᵀ u>
    assert float(torch.dot(lin.jvp(v), u)) == pytest.approx(float(torch.dot(v, lin.vjp(u))), rel=1e-10)
    torch.testing.assert_close(lin.g, lin.vjp(lin.r))


def test_steepest_descent_line_search_is_exact_and_gradient_descent_converges():
    rng = np.random.default_rng(9)
    A = torch.tensor(rng.normal(size=(15, 6)))
    b = torch.tensor(rng.normal(size=15))
    problem = MatrixProblem(A, b)
    sd = steepest_descent(problem, 2)
    g0 = A.T @ (A @ problem.initial() - b)
    r0 = A @ problem.initial() - b
    alpha = torch.linalg.lstsq((A @ g0)[:, None], r0[:, None]).solution[0]  # argmin_a ‖r0 − a A g0‖
    w1 = problem.initial() - alpha * g0
    # exact line search: the loss at step 1 is the minimum along −g0, and the next gradient ⟂ g0
    assert sd.losses[1] == pytest.approx(problem.loss(w1), rel=1e-12)
    g1 = A.T @ (A @ w1 - b)
    assert abs(float(g0 @ g1)) < 1e-10 * float(g0.norm() * g1.norm())
    gd = gradient_descent(problem, 3000)
    assert np.all(np.diff(gd.losses) <= 1e-12)
    exact = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    torch.testing.assert_close(gd.w, exact, atol=1e-6, rtol=0)


def test_largest_eigenvalue_and_pca_projection_match_numpy():
    rng = np.random.default_rng(10)
    A = torch.tensor(rng.normal(size=(10, 5)))
    lam = largest_eigenvalue(MatrixProblem(A, torch.zeros(10, dtype=torch.float64)), n_iter=200)
    assert lam == pytest.approx(np.linalg.eigvalsh((A.T @ A).numpy())[-1], rel=1e-8)
    x = torch.tensor(rng.normal(size=(3, 5, 4, 4)) * np.array([5, 1, 3, 0.1, 2])[None, :, None, None])
    P = pca_projection(x, 2)
    flat = x.transpose(0, 1).reshape(5, -1).numpy()
    _, vecs = np.linalg.eigh(np.cov(flat, bias=True))
    np.testing.assert_allclose(np.abs(P.numpy()), np.abs(vecs[:, ::-1][:, :2].T), atol=1e-10)


def test_gauss_newton_learns_a_projection_better_than_the_fixed_initial_one():
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.normal(size=(3, 6, 9, 9)))
    yy, xx = np.mgrid[:9, :9]
    y = np.repeat(np.exp(-((yy - 4) ** 2 + (xx - 4) ** 2) / 4.0)[None], 3, 0)
    problem = DCFProblem(x, y, 3, lam=0.05, compressed_dim=3, lam_projection=0.05)
    P0 = problem.projection(problem.initial())
    # the linear problem on the fixed PCA projection: only the filter is learned
    fixed = DCFProblem(torch.einsum("dc,nchw->ndhw", P0, x), y, 3, lam=0.05)
    fixed_loss = conjugate_gradient(fixed, 200).losses[-1] + 0.05 * float(P0.pow(2).sum())
    gn = gauss_newton_cg(problem, 10, 20, backtrack=True)
    assert np.all(np.diff(gn.losses) <= 1e-12)  # backtracking makes GN monotone
    assert gn.losses[-1] < fixed_loss - 0.3
    gd = gradient_descent(problem, gn.backward_calls)  # the same number of backprop calls
    assert gn.losses[-1] < gd.losses[-1]


def test_gauss_newton_with_leaky_activation_beats_gradient_descent():
    rng = np.random.default_rng(12)
    x = torch.tensor(rng.normal(size=(4, 4, 11, 11)))
    yy, xx = np.mgrid[:11, :11]
    y = np.repeat(np.exp(-((yy - 5) ** 2 + (xx - 5) ** 2) / 4.0)[None], 4, 0)
    problem = DCFProblem(x, y, 5, lam=0.1, activation=leaky_response)
    assert not problem.linear
    gn = gauss_newton_cg(problem, 5, 10)
    gd = gradient_descent(problem, gn.backward_calls)
    assert gn.losses[-1] < gd.losses[-1]
    assert gn.losses[-1] < 0.7 * gn.losses[0]


def test_clear_errors_name_the_argument():
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match="y must be"):
        DCFProblem(x, np.zeros((2, 7, 7)), 3)
    with pytest.raises(ValueError, match="x must be"):
        DCFProblem(np.zeros((3, 8, 8)), np.zeros((2, 8, 8)), 3)
    with pytest.raises(ValueError, match="lam must be"):
        DCFProblem(x, np.zeros((2, 8, 8)), 3, lam=[1.0, 2.0])
    with pytest.raises(ValueError, match="gamma must"):
        DCFProblem(x, np.zeros((2, 8, 8)), 3, gamma=[1.0])
    with pytest.raises(ValueError, match="linear"):
        conjugate_gradient(DCFProblem(x, np.zeros((2, 8, 8)), 3, activation=leaky_response), 3)


def test_dcf_loss_written_out_equals_the_problem_loss_and_loops():
    rng = np.random.default_rng(13)
    x = torch.tensor(rng.normal(size=(3, 2, 6, 6)))
    y = torch.tensor(rng.normal(size=(3, 6, 6)))
    gamma, lam = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.1, 3.0])
    problem = DCFProblem(x, y, 3, gamma=gamma, lam=lam)
    w = torch.tensor(rng.normal(size=problem.n))
    got = dcf_loss(problem.response(w), y, gamma, problem.filter(w), lam)
    filt = problem.filter(w)[0].numpy()
    resp = problem.response(w).numpy()
    loops = sum(float(gamma[j]) * ((resp[j] - y[j].numpy()) ** 2).sum() for j in range(3))
    loops += sum(float(lam[k]) * (filt[k] ** 2).sum() for k in range(2))
    assert float(got) == pytest.approx(loops, rel=1e-12)
    assert problem.loss(w) == pytest.approx(loops, rel=1e-12)


def test_exact_solution_equals_dense_normal_equations_and_cg():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(3, 2, 7, 6))
    y = rng.normal(size=(3, 7, 6))
    gamma, lam = np.array([1.0, 0.3, 2.0]), np.array([0.2, 0.7])
    problem = DCFProblem(x, y, 3, gamma=gamma, lam=lam)
    lhs, rhs = _explicit_normal_equations(x, y, gamma, lam, 3, 3)
    np.testing.assert_allclose(exact_solution(problem).numpy(), np.linalg.solve(lhs, rhs), atol=1e-10)
    circ = DCFProblem(x[:, :1], y, (7, 5), lam=0.5, padding="circular")
    np.testing.assert_allclose(exact_solution(circ).numpy(), conjugate_gradient(circ, 300).w.numpy(), atol=1e-9)


def test_solver_comparison_cg_beats_the_descents_and_reaches_the_optimum():
    rng = np.random.default_rng(15)
    # spatially smooth features, like a CNN's: neighbouring filter taps see nearly the same
    # thing, which makes the problem ill-conditioned enough to separate the solvers
    x = scipy.ndimage.gaussian_filter(rng.normal(size=(4, 3, 10, 10)), (0, 0, 1.5, 1.5))
    x /= x.std()
    yy, xx = np.mgrid[:10, :10]
    y = np.repeat(np.exp(-((yy - 5) ** 2 + (xx - 5) ** 2) / 4.0)[None], 4, 0)
    demo = SolverComparison(x, y, 3, budget=80)
    results, optimum = demo.run(lam=1.0, n_samples=4)
    cg = calls_to_reach(results["CG"], optimum)
    assert cg is not None and cg <= 80
    assert calls_to_reach(results["gradient descent"], optimum) is None
    for r in results.values():
        assert min(r.losses) >= optimum * (1 - 1e-9)
        assert r.backprops[-1] <= 80
    results, optimum = demo.run(lam=1.0, n_samples=2, leaky=True)
    assert results["GN-CG"].losses[-1] < results["gradient descent"].losses[-1]
    fig = demo.draw(lam=1.0, n_samples=3)
    assert len(fig.axes[0].lines) == 5  # four solvers and the 1e-6 line


def test_gradient_descent_calls_predicts_what_running_it_gives():
    rng = np.random.default_rng(16)
    x = scipy.ndimage.gaussian_filter(rng.normal(size=(2, 2, 8, 8)), (0, 0, 1.0, 1.0))
    y = rng.normal(size=(2, 8, 8))
    problem = DCFProblem(x, y, 3, lam=0.5)
    optimum = problem.loss(exact_solution(problem))
    A = design_matrix(problem)
    lam_max = float(torch.linalg.eigvalsh(A.T @ A + 0.5 * torch.eye(A.shape[1]))[-1])
    for gap in (1e-2, 1e-4):
        predicted = gradient_descent_calls(problem, gap)
        run = gradient_descent(problem, predicted + 5, step=1 / (2 * lam_max))
        assert calls_to_reach(run, optimum, gap) == predicted
