"""acvm.particle: the filter against a Kalman filter, resampling statistics, the likelihood, the tracker."""
import numpy as np
import pytest

from acvm.particle import (ParticleRun, ParticleTracker, colour_histograms, compare_prediction, compare_systematic,
                           effective_sample_size, estimate,
                           hellinger_distance, kalman_filter, nearly_constant_velocity, predict, random_walk, resample,
                           resample_multinomial, resample_stratified, resample_systematic, update)


def _kalman_means(ys, Phi, Q, H, R, m0, P0):
    """The exact posterior means of a linear Gaussian model, written out here as the reference."""
    m, P, means = m0.copy(), P0.copy(), []
    for y in ys:
        m, P = Phi @ m, Phi @ P @ Phi.T + Q
        S = H @ P @ H.T + R
        K = P @ H.T @ np.linalg.inv(S)
        m = m + K @ (y - H @ m)
        P = (np.eye(len(m)) - K @ H) @ P
        means.append(m.copy())
    return np.array(means)


def _particle_means(ys, model, H, R, m0, P0, n, seed, method="systematic"):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(m0, P0, size=n)
    w = np.full(n, 1.0 / n)
    means = []
    for y in ys:
        x, w = resample(x, w, rng, method)
        x = predict(x, model.Phi, model.Q, rng)
        resid = y - x @ H.T
        w = update(w, np.exp(-0.5 * np.einsum("ni,ij,nj->n", resid, np.linalg.inv(R), resid)))
        means.append(estimate(x, w))
    return np.array(means)


def test_posterior_mean_approaches_the_kalman_filter_as_n_grows():
    # 1-D random walk x_t = x_{t-1} + N(0, q), observed as y_t = x_t + N(0, r), 25 steps
    rng = np.random.default_rng(0)
    q, r, T = 1.0, 0.5, 25
    xs = np.cumsum(rng.normal(0, np.sqrt(q), T))
    ys = (xs + rng.normal(0, np.sqrt(r), T))[:, None]
    model = random_walk(q, dims=1)
    H, R, m0, P0 = np.eye(1), np.array([[r]]), np.zeros(1), np.eye(1)
    kf = _kalman_means(ys, model.Phi, model.Q, H, R, m0, P0)[:, 0]
    errors = {n: np.abs(_particle_means(ys, model, H, R, m0, P0, n, seed=1)[:, 0] - kf).mean()
              for n in (30, 300, 3000)}
    # Monte Carlo error shrinks like 1/sqrt(N): posterior std here is about 0.55
    assert errors[30] > errors[300] > errors[3000]
    assert errors[3000] < 0.03, errors


@pytest.mark.parametrize("method", ["multinomial", "stratified"])
def test_other_resamplers_also_converge_on_a_velocity_model(method):
    # nearly constant velocity in 1-D, position observed; N = 2000, tolerance 0.1 px (posterior std ~0.6)
    rng = np.random.default_rng(2)
    model = nearly_constant_velocity(0.5, dims=1)
    x, states = np.array([0.0, 1.0]), []
    for _ in range(20):
        x = model.Phi @ x + rng.multivariate_normal(np.zeros(2), model.Q)
        states.append(x)
    H, R = np.array([[1.0, 0.0]]), np.array([[1.0]])
    ys = np.array(states)[:, :1] + rng.normal(0, 1.0, (20, 1))
    m0, P0 = np.array([0.0, 1.0]), np.diag([1.0, 1.0])
    kf = _kalman_means(ys, model.Phi, model.Q, H, R, m0, P0)
    pf = _particle_means(ys, model, H, R, m0, P0, 2000, seed=3, method=method)
    assert np.abs(pf[:, 0] - kf[:, 0]).mean() < 0.1


def test_library_kalman_filter_equals_the_one_written_here():
    rng = np.random.default_rng(7)
    model = nearly_constant_velocity(0.3, dims=2)
    H, R = np.hstack([np.eye(2), np.zeros((2, 2))]), 2.0 * np.eye(2)
    ys = rng.normal(size=(10, 2)).cumsum(0)
    m0, P0 = np.zeros(4), np.eye(4)
    means, covs = kalman_filter(ys, model.Phi, model.Q, H, R, m0, P0)
    assert means.shape == (10, 4) and covs.shape == (10, 4, 4)
    np.testing.assert_allclose(means, _kalman_means(ys, model.Phi, model.Q, H, R, m0, P0), atol=1e-10)


def test_motion_model_matrices():
    ncv = nearly_constant_velocity(2.0, dt=0.5)
    np.testing.assert_allclose(ncv.Phi, [[1, 0, 0.5, 0], [0, 1, 0, 0.5], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(ncv.Q[0], 2.0 * np.array([0.5 ** 3 / 3, 0, 0.5 ** 2 / 2, 0]))
    np.testing.assert_allclose(ncv.Q, ncv.Q.T)
    assert np.linalg.eigvalsh(ncv.Q).min() > 0
    rw = random_walk(3.0)
    np.testing.assert_allclose(rw.Phi, np.eye(2))
    np.testing.assert_allclose(rw.Q, 3.0 * np.eye(2))


def test_predict_moves_by_phi_and_adds_noise_of_covariance_q():
    model = nearly_constant_velocity(1.0)
    x = np.tile([10.0, 20.0, 1.0, -2.0], (20000, 1))
    out = predict(x, model.Phi, model.Q, 0)
    np.testing.assert_allclose(out.mean(0), [11, 18, 1, -2], atol=0.03)
    np.testing.assert_allclose(np.cov(out.T), model.Q, atol=0.03)
    np.testing.assert_array_equal(predict(x[:5], model.Phi, np.zeros((4, 4)), 0), x[:5] @ model.Phi.T)
    # seeded: the same seed gives the same particles (the notebook's check relies on it)
    np.testing.assert_array_equal(predict(x[:5], model.Phi, model.Q, 7), predict(x[:5], model.Phi, model.Q, 7))


def test_update_is_bayes_rule_and_never_nan():
    w = update([0.2, 0.3, 0.5], [1.0, 2.0, 0.0])
    np.testing.assert_allclose(w, [0.25, 0.75, 0.0])
    np.testing.assert_allclose(update([0.5, 0.5], [0.0, 0.0]), [0.5, 0.5])


def test_effective_sample_size():
    assert effective_sample_size(np.full(50, 0.02)) == pytest.approx(50)
    assert effective_sample_size(np.eye(10)[3]) == pytest.approx(1.0)
    assert effective_sample_size([0.5, 0.5, 0.0, 0.0]) == pytest.approx(2.0)


def test_systematic_keeps_floor_or_ceil_of_n_w():
    rng = np.random.default_rng(4)
    w = rng.random(40) ** 3
    w /= w.sum()
    for seed in range(20):
        counts = np.bincount(resample_systematic(w, seed), minlength=40)
        assert counts.sum() == 40
        assert np.all(counts >= np.floor(40 * w) - 1e-9) and np.all(counts <= np.ceil(40 * w) + 1e-9)


@pytest.mark.parametrize("fn", [resample_multinomial, resample_stratified, resample_systematic])
def test_resamplers_are_unbiased_and_skip_zero_weights(fn):
    w = np.array([0.0, 0.1, 0.6, 0.0, 0.3])
    counts = sum(np.bincount(fn(w, s), minlength=5) for s in range(2000))
    np.testing.assert_allclose(counts / (2000 * 5), w, atol=0.015)
    assert counts[0] == 0 and counts[3] == 0
    idx = fn(np.full(6, 1 / 6), 0)
    assert idx.dtype.kind == "i" and idx.shape == (6,)
    if fn is not resample_multinomial:
        np.testing.assert_array_equal(idx, np.arange(6))   # one draw per stratum


def test_resample_returns_uniform_weights_and_rejects_unknown_methods():
    x = np.arange(8.0).reshape(4, 2)
    xr, wr = resample(x, [0, 0, 1, 0], 0)
    np.testing.assert_array_equal(xr, np.tile([4.0, 5.0], (4, 1)))
    np.testing.assert_allclose(wr, 0.25)
    with pytest.raises(ValueError, match="systematic"):
        resample(x, [1, 1, 1, 1], 0, method="residual")


def test_colour_histograms_equal_a_pixel_loop():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    box = np.array([7.0, 5.0, 24.0, 16.0])
    got = colour_histograms(img, box[None], bins=4, samples=8)[0]
    ref = np.zeros(64)
    for i in range(8):
        for j in range(8):
            ty, tx = (i + 0.5) / 8, (j + 0.5) / 8
            y, x = int(np.floor(box[1] + box[3] * ty)), int(np.floor(box[0] + box[2] * tx))
            k = max(0.0, 1 - ((2 * ty - 1) ** 2 + (2 * tx - 1) ** 2) / 2)
            r, g, b = img[y, x] // 64
            ref[(r * 4 + g) * 4 + b] += k
    np.testing.assert_allclose(got, ref / ref.sum())
    outside = colour_histograms(img, [[500, 500, 10, 10]], bins=4)[0]
    np.testing.assert_allclose(outside, 1 / 64)


def test_hellinger_distance():
    p = np.array([0.5, 0.5, 0.0])
    assert hellinger_distance(p, p) == pytest.approx(0.0, abs=1e-7)
    assert hellinger_distance(p, [0.0, 0.0, 1.0]) == pytest.approx(1.0)
    q = np.array([0.25, 0.25, 0.5])
    assert hellinger_distance(p, q) == pytest.approx(np.sqrt(1 - 2 * np.sqrt(0.125)))
    assert hellinger_distance(np.stack([p, q]), q).shape == (2,)


def _colour_scene(n=25, step=(4.0, 1.5)):
    rng = np.random.default_rng(6)
    bg = (rng.integers(0, 60, (160, 240, 3)) + np.array([40, 90, 40])).astype(np.uint8)   # greenish noise
    frames, boxes = [], []
    for t in range(n):
        x, y = 20 + step[0] * t, 50 + step[1] * t
        f = bg.copy()
        xi, yi = int(round(x)), int(round(y))
        f[max(yi, 0):yi + 30, max(xi, 0):xi + 20] = [220, 40, 60]
        frames.append(f)
        boxes.append([xi, yi, 20, 30])
    return frames, np.array(boxes, dtype=np.float64)


def test_particle_tracker_follows_a_coloured_target_and_exposes_its_cloud():
    frames, boxes = _colour_scene()
    t = ParticleTracker(n_particles=100, seed=0)
    t.init(frames[0], boxes[0])
    errs = []
    for f, gt in zip(frames[1:], boxes[1:]):
        box = t.update(f)
        errs.append(np.abs(box[:2] - gt[:2]).max())
        assert t.particles.shape == (100, 4) and t.weights.shape == (100,)
        assert t.weights.sum() == pytest.approx(1.0) and 1.0 <= t.ess <= 100.0
    assert np.max(errs) < 6.0
    # same seed, same run
    t2 = ParticleTracker(n_particles=100, seed=0)
    t2.init(frames[0], boxes[0])
    for f in frames[1:]:
        box2 = t2.update(f)
    np.testing.assert_array_equal(box, box2)


def test_particle_tracker_survives_the_target_leaving_the_frame():
    frames, boxes = _colour_scene(n=40, step=(7.0, 0.0))
    t = ParticleTracker(motion="rw")
    t.init(frames[0], boxes[0])
    for f in frames[1:] + [np.zeros_like(frames[0])] * 2:
        box = t.update(f)
        assert np.isfinite(box).all() and np.isfinite(t.weights).all()
    with pytest.raises(ValueError, match="motion"):
        ParticleTracker(motion="brownian")


def test_particle_run_and_its_view():
    import matplotlib.pyplot as plt
    frames, boxes = _colour_scene(n=8)
    run = ParticleRun(frames, boxes, n_particles=50)
    assert len(run) == 8 and run.estimates.shape == (8, 4) and run.ess.shape == (8,)
    assert run.ess[0] == 50
    fig = run.draw(5)
    assert len(fig.axes) == 3   # frame, ESS plot, colour bar
    plt.close(fig)
    with pytest.raises(IndexError):
        run.draw(8)


def _chol_predict(particles, Phi, Q, rng):
    rng = np.random.default_rng(rng)
    return particles @ Phi.T + rng.standard_normal(particles.shape) @ np.linalg.cholesky(Q).T


def _loop_predict(particles, Phi, Q, rng):
    rng = np.random.default_rng(rng)
    return particles @ Phi.T + np.array([rng.multivariate_normal(np.zeros(len(Q)), Q) for _ in particles])


def test_predict_check_accepts_any_correct_noise_and_names_each_mistake():
    """Notebook 01's check tests the noise's distribution, not the reference's random stream."""
    ncv, rw = nearly_constant_velocity(1.0), random_walk(2.0)
    x = 10 + np.random.default_rng(1).normal(size=(4000, 4)) * 10
    for right in (predict, _chol_predict, _loop_predict):
        assert compare_prediction(right(x, ncv.Phi, ncv.Q, 3), None, x, ncv.Phi, ncv.Q, 3) is None
        assert compare_prediction(right(x[:, :2], rw.Phi, rw.Q, 4), None, x[:, :2], rw.Phi, rw.Q, 4) is None
    # a different random stream is not the same numbers, yet correct
    assert not np.allclose(_chol_predict(x, ncv.Phi, ncv.Q, 3), predict(x, ncv.Phi, ncv.Q, 3))
    wrong = {
        "covariance": lambda p, Phi, Q, r: p @ Phi.T,                                   # no noise
        "transposed": lambda p, Phi, Q, r: p @ Phi + predict(0 * p, Phi, Q, r),         # Φ transposed
        "covariance Q": lambda p, Phi, Q, r: predict(p, Phi, Q / 2, r),                 # std where Q is a variance
        "shape": lambda p, Phi, Q, r: predict(p, Phi, Q, r)[:-1],
    }
    for what, fn in wrong.items():
        msg = compare_prediction(fn(x, ncv.Phi, ncv.Q, 3), None, x, ncv.Phi, ncv.Q, 3)
        assert msg is not None and what in msg, (what, msg)
    # one noise vector shared by every particle: the cloud does not spread
    shared = lambda p, Phi, Q, r: p @ Phi.T + np.random.default_rng(r).multivariate_normal(np.zeros(4), Q)  # noqa: E731
    assert "covariance" in compare_prediction(shared(x, ncv.Phi, ncv.Q, 3), None, x, ncv.Phi, ncv.Q, 3)
    # with Q = 0 only Φx is allowed
    assert compare_prediction(x @ ncv.Phi.T, None, x, ncv.Phi, 0 * ncv.Q, 0) is None
    assert "Q = 0" in compare_prediction(x @ ncv.Phi, None, x, ncv.Phi, 0 * ncv.Q, 0)


def test_systematic_check_accepts_any_offset_and_rejects_other_schemes():
    r = np.random.default_rng(3)
    cases = [(r.random(200) ** 4, 7), (np.eye(8)[2], 6), (np.full(5, 0.2), 8)]

    def other_offset(weights, rng):  # rng.uniform instead of rng.random: a different U, still systematic
        n = len(weights)
        c = np.cumsum(weights) / np.sum(weights)
        u = (np.arange(n) + np.random.default_rng(rng).uniform(0.0, 1.0)) / n
        return np.minimum(np.searchsorted(c, u, side="right"), n - 1)
    for w, s in cases:
        assert compare_systematic(resample_systematic(w, s), None, w, s) is None
        assert compare_systematic(other_offset(w, s), None, w, s) is None
    w, s = cases[0]
    assert "kept" in compare_systematic(resample_multinomial(w, s), None, w, s)
    assert "integer" in compare_systematic(resample_systematic(w, s) * 1.0, None, w, s)
    assert "0..199" in compare_systematic(resample_systematic(w, s) + 1, None, w, s)


def test_predict_check_names_a_biased_noise():
    ncv = nearly_constant_velocity(1.0)
    x = 10 + np.random.default_rng(1).normal(size=(4000, 4)) * 10
    msg = compare_prediction(predict(x, ncv.Phi, ncv.Q, 3) + 0.5, None, x, ncv.Phi, ncv.Q, 3)
    assert "mean 0" in msg
