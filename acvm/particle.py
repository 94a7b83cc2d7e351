"""The bootstrap particle filter (recap, notebook 01) and a colour-histogram particle tracker.

A particle filter represents the posterior ``p(x_t | y_1:t)`` by ``N`` weighted samples
(particles). The bootstrap filter repeats three steps per frame:

1. **predict** - move every particle with the motion model ``x_t = Φ x_{t-1} + w``,
   ``w ~ N(0, Q)`` (:func:`predict`; :func:`random_walk` and :func:`nearly_constant_velocity`
   build ``Φ`` and ``Q``);
2. **update** - multiply every weight by the likelihood of the observation and normalise
   (:func:`update`);
3. **resample** - draw ``N`` particles in proportion to their weights, so that the cloud does not
   degenerate into one heavy particle (:func:`resample` with multinomial, systematic or stratified
   draws). The effective sample size ``ESS = 1 / Σ w_i²`` (:func:`effective_sample_size`)
   measures how degenerate the weights are.

:class:`ParticleTracker` (``"particle"``) tracks a box with a nearly-constant-velocity model of
its centre and the Hellinger distance between RGB colour histograms (as in Pérez et al. 2002,
"Color-based probabilistic tracking"). :class:`ParticleRun` and :func:`draw_particles` are the
notebook's per-frame particle-cloud view.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .boxes import cxcywh_to_xywh
from .tracker import Tracker, check_image, check_init

__all__ = ["MotionModel", "random_walk", "nearly_constant_velocity", "predict", "update",
           "effective_sample_size", "resample_multinomial", "resample_systematic",
           "resample_stratified", "compare_prediction", "compare_systematic", "RESAMPLERS", "resample", "estimate", "colour_histograms",
           "hellinger_distance", "kalman_filter", "ParticleSettings", "ParticleTracker", "ParticleRun",
           "draw_particles"]


# --- settings (names as in the papers) -------------------------------------------------------

@dataclass(frozen=True)
class ParticleSettings:
    n_particles: int = 150          # N
    motion: str = "ncv"             # "ncv" (nearly constant velocity) or "rw" (random walk)
    q: float = 0.2                  # process noise intensity, × the target's mean side (pixels)
    bins: int = 8                   # histogram bins per RGB channel (8³ = 512 bins)
    sigma: float = 0.15             # σ of the likelihood exp(-d² / 2σ²), d the Hellinger distance
    alpha: float = 0.05             # reference histogram update rate (0 = keep the first frame's)
    samples: int = 16               # pixels sampled per box side for a histogram (16 × 16)
    resampler: str = "systematic"   # "systematic", "stratified" or "multinomial"
    seed: int = 0                   # the filter's random generator


# --- motion models -----------------------------------------------------------------------------

@dataclass(frozen=True)
class MotionModel:
    """A linear-Gaussian motion model ``x_t = Φ x_{t-1} + w``, ``w ~ N(0, Q)``.

    ``Phi`` and ``Q`` are ``(d, d)`` float64; ``position`` lists the state indices that are
    positions (the rest are velocities), for reading an estimate out of the state.
    """

    Phi: np.ndarray
    Q: np.ndarray
    position: tuple[int, ...]


def random_walk(q: float, dims: int = 2) -> MotionModel:
    """Random walk: the state is a position, ``Φ = I``, ``Q = q·I`` (``q`` a variance per step).

    Args:
        q: process noise variance (pixels² per frame), ≥ 0.
        dims: dimension of the position (2 for ``(x, y)``).
    Returns:
        a :class:`MotionModel` with ``(dims, dims)`` matrices.
    """
    return MotionModel(np.eye(dims), q * np.eye(dims), tuple(range(dims)))


def nearly_constant_velocity(q: float, dt: float = 1.0, dims: int = 2) -> MotionModel:
    """Nearly constant velocity: state ``(x, y, vx, vy)``, velocity perturbed by white acceleration noise.

    Per axis, ``Φ = [[1, dt], [0, 1]]`` and ``Q = q·[[dt³/3, dt²/2], [dt²/2, dt]]`` (the
    discretised continuous white-noise acceleration model); the state orders all positions first,
    then all velocities.

    Args:
        q: spectral density of the acceleration noise, ≥ 0.
        dt: time step.
        dims: number of position axes.
    Returns:
        a :class:`MotionModel` with ``(2·dims, 2·dims)`` matrices.
    """
    I = np.eye(dims)
    Phi = np.block([[I, dt * I], [np.zeros((dims, dims)), I]])
    Q = q * np.block([[dt ** 3 / 3 * I, dt ** 2 / 2 * I], [dt ** 2 / 2 * I, dt * I]])
    return MotionModel(Phi, Q, tuple(range(dims)))


# --- the three steps ---------------------------------------------------------------------------

def predict(particles: np.ndarray, Phi: np.ndarray, Q: np.ndarray, rng) -> np.ndarray:
    """Move every particle with the motion model: ``x_i ← Φ x_i + w_i``, ``w_i ~ N(0, Q)``.

    The noise is drawn as ``rng.multivariate_normal(np.zeros(d), Q, size=N)`` (one call, so a
    seeded generator gives the same particles every time).

    Args:
        particles: ``(N, d)`` float array of states.
        Phi: ``(d, d)`` transition matrix; Q: ``(d, d)`` noise covariance (positive semi-definite).
        rng: a ``numpy.random.Generator`` or a seed for ``np.random.default_rng``.
    Returns:
        ``(N, d)`` float64, the predicted particles (the input is not changed).
    """
    x = np.asarray(particles, dtype=np.float64)
    rng = np.random.default_rng(rng)
    noise = rng.multivariate_normal(np.zeros(x.shape[1]), Q, size=x.shape[0])
    return x @ np.asarray(Phi, dtype=np.float64).T + noise


def update(weights: np.ndarray, likelihoods: np.ndarray) -> np.ndarray:
    """Bayes' rule on the particles: ``w_i ← w_i · p(y | x_i)``, normalised to sum to 1.

    When every product is zero (the observation is impossible under every particle) the weights
    become uniform instead of NaN: the filter then relies on the motion model alone.

    Args:
        weights: ``(N,)`` non-negative prior weights; likelihoods: ``(N,)`` non-negative ``p(y | x_i)``.
    Returns:
        ``(N,)`` float64 weights summing to 1.
    """
    w = np.asarray(weights, dtype=np.float64) * np.asarray(likelihoods, dtype=np.float64)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(w.shape, 1.0 / w.size)
    return w / total


def effective_sample_size(weights: np.ndarray) -> float:
    """``ESS = 1 / Σ w_i²`` of normalised weights: ``N`` when uniform, 1 when one particle has it all."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return float(1.0 / np.sum(w ** 2))


def _draw(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices ``i`` with ``c_{i-1} ≤ u < c_i`` for the cumulative weights ``c`` (inverse CDF)."""
    c = np.cumsum(np.asarray(weights, dtype=np.float64))
    c /= c[-1]
    return np.minimum(np.searchsorted(c, u, side="right"), len(c) - 1)


def resample_multinomial(weights: np.ndarray, rng) -> np.ndarray:
    """Multinomial resampling: ``N`` independent draws, ``u_i = rng.random(N)``, inverse CDF.

    Args:
        weights: ``(N,)`` non-negative; rng: a Generator or a seed.
    Returns:
        ``(N,)`` int64 indices of the particles to keep.
    """
    rng = np.random.default_rng(rng)
    return _draw(weights, rng.random(len(weights)))


def resample_stratified(weights: np.ndarray, rng) -> np.ndarray:
    """Stratified resampling: one draw per stratum, ``u_i = (i + rng.random(N)[i]) / N``.

    Args, Returns: as :func:`resample_multinomial`.
    """
    rng = np.random.default_rng(rng)
    n = len(weights)
    return _draw(weights, (np.arange(n) + rng.random(n)) / n)


def resample_systematic(weights: np.ndarray, rng) -> np.ndarray:
    """Systematic resampling: one random offset for all, ``u_i = (i + rng.random()) / N``.

    The lowest-variance of the three: a particle of weight ``w`` is kept ``⌊Nw⌋`` or ``⌈Nw⌉`` times.

    Args, Returns: as :func:`resample_multinomial`.
    """
    rng = np.random.default_rng(rng)
    n = len(weights)
    return _draw(weights, (np.arange(n) + rng.random()) / n)


def _as_array(got, shape: tuple[int, ...], what: str) -> tuple[np.ndarray | None, str | None]:
    try:
        g = np.asarray(got)
    except Exception:  # noqa: BLE001 - anything unconvertible is simply wrong
        return None, f"{what} should be an array, got {type(got).__name__}"
    if got is None or g.shape != shape:
        return None, f"{what} has shape {g.shape if got is not None else None}, expected {shape}"
    return g, None


def compare_prediction(got, expected, particles, Phi, Q, rng) -> str | None:
    """What every correct :func:`predict` has in common, whichever way it draws the noise.

    The check of notebook 01: the deterministic part ``Φ x_i`` must be exact, and the residual
    ``got − Φ x_i`` must look like ``N(0, Q)``: zero when ``Q`` is, else (over 1000 particles or
    more) a mean within 5 standard errors of 0 and a covariance within 5 standard errors of ``Q``
    (the variance of a sample covariance ``C_jk`` is ``(Q_jk² + Q_jj Q_kk) / N``). One call of
    ``multivariate_normal``, a Cholesky factor times ``standard_normal`` or N separate draws all pass.

    Returns:
        ``None`` when right, else one sentence saying what is wrong (``acvm.exercise.check``'s ``compare``).
    """
    x = np.asarray(particles, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    g, msg = _as_array(got, x.shape, "output")
    if msg:
        return msg
    if not np.isfinite(g).all():
        return "output contains NaN or infinity"
    resid = g.astype(np.float64) - x @ np.asarray(Phi, dtype=np.float64).T
    n = len(x)
    if not Q.any():
        worst = float(np.abs(resid).max())
        if worst > 1e-9 * (1 + np.abs(g).max()):
            return (f"with Q = 0 the output should be Φ·x exactly (x @ Phi.T), but it is off by up to {worst:.3g}: "
                    f"is Φ transposed, or noise added when Q is zero?")
        return None
    if n < 1000:  # too few particles to test the noise; its shape and the Q = 0 case are checked
        return None
    C = np.cov(resid, rowvar=False).reshape(Q.shape)
    se = np.sqrt((Q ** 2 + np.outer(np.diag(Q), np.diag(Q))) / n)
    if np.any(np.abs(C - Q) > 5 * se + 1e-12):
        return (f"the noise should have covariance Q = {np.round(Q, 3).tolist()}, but over {n} particles it is "
                f"{np.round(C, 3).tolist()} (noise shared by all particles gives 0; a transposed Φ adds the "
                f"particles' own spread)")
    sd = np.sqrt(np.diag(Q) / n)
    mean = resid.mean(0)
    if np.any(np.abs(mean) > 5 * sd + 1e-12):
        return (f"the noise should have mean 0, but its mean over {n} particles is {np.round(mean, 3).tolist()} "
                f"(standard error {np.round(sd, 3).tolist()}): is the deterministic part x @ Phi.T?")
    return None


def compare_systematic(got, expected, weights, rng) -> str | None:
    """What every correct :func:`resample_systematic` has in common, whatever offset it draws.

    With one offset ``U ∈ [0, 1)`` the points ``(k + U)/N`` are ``1/N`` apart, so particle ``i``
    (normalised weight ``w_i``) is kept ``⌊N w_i⌋`` or ``⌈N w_i⌉`` times, and never when ``w_i = 0``.

    Returns:
        ``None`` when right, else one sentence saying what is wrong (``acvm.exercise.check``'s ``compare``).
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    g, msg = _as_array(got, (n,), "output")
    if msg:
        return msg
    if g.dtype.kind not in "iu":
        return f"output should be integer indices, got dtype {g.dtype}"
    if g.min() < 0 or g.max() >= n:
        return f"indices should lie in 0..{n - 1}, got {int(g.min())}..{int(g.max())}"
    counts = np.bincount(g, minlength=n)
    nw = n * w / w.sum()
    bad = (counts < np.floor(nw - 1e-9)) | (counts > np.ceil(nw + 1e-9))
    if bad.any():
        i = int(np.argmax(np.abs(counts - nw) * bad))
        return (f"particle {i} (N·w = {nw[i]:.2f}) is kept {int(counts[i])} times; systematic resampling keeps "
                f"it {int(np.floor(nw[i] + 1e-9))} or {int(np.ceil(nw[i] - 1e-9))} times "
                f"({int(bad.sum())} of {n} particles wrong)")
    return None


#: resampler name -> function(weights, rng) -> indices
RESAMPLERS = {"multinomial": resample_multinomial, "stratified": resample_stratified,
              "systematic": resample_systematic}


def resample(particles: np.ndarray, weights: np.ndarray, rng, method: str = "systematic"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Resample the cloud: ``(particles[idx], uniform weights)`` with ``idx`` from ``method``.

    Args:
        particles: ``(N, d)``; weights: ``(N,)``; rng: a Generator or a seed;
        method: ``"systematic"``, ``"stratified"`` or ``"multinomial"``.
    Returns:
        ``(N, d)`` float64 particles and ``(N,)`` weights all ``1/N``.
    """
    if method not in RESAMPLERS:
        raise ValueError(f"unknown resampling method {method!r}; choose one of {', '.join(RESAMPLERS)}")
    idx = RESAMPLERS[method](weights, rng)
    n = len(weights)
    return np.asarray(particles, dtype=np.float64)[idx], np.full(n, 1.0 / n)


def estimate(particles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The posterior mean ``Σ w_i x_i``: ``(N, d)``, ``(N,)`` -> ``(d,)`` float64."""
    w = np.asarray(weights, dtype=np.float64)
    return (w / w.sum()) @ np.asarray(particles, dtype=np.float64)


def kalman_filter(ys: np.ndarray, Phi: np.ndarray, Q: np.ndarray, H: np.ndarray, R: np.ndarray,
                  m0: np.ndarray, P0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact filter of a linear-Gaussian model, the yardstick a particle filter should approach.

    Model: ``x_t = Φ x_{t-1} + w``, ``w ~ N(0, Q)``; ``y_t = H x_t + v``, ``v ~ N(0, R)``;
    ``x_0 ~ N(m0, P0)``.

    Args:
        ys: ``(T, k)`` observations; Phi, Q: ``(d, d)``; H: ``(k, d)``; R: ``(k, k)``;
            m0: ``(d,)``; P0: ``(d, d)``.
    Returns:
        posterior means ``(T, d)`` and covariances ``(T, d, d)``, float64.
    """
    m, P = np.asarray(m0, dtype=np.float64), np.asarray(P0, dtype=np.float64)
    means, covs = [], []
    for y in np.atleast_2d(np.asarray(ys, dtype=np.float64)):
        m, P = Phi @ m, Phi @ P @ Phi.T + Q
        S = H @ P @ H.T + R
        K = np.linalg.solve(S, H @ P).T   # P Hᵀ S⁻¹, with S symmetric
        m = m + K @ (y - H @ m)
        P = P - K @ H @ P
        means.append(m)
        covs.append(P)
    return np.array(means), np.array(covs)


# --- the colour-histogram likelihood ------------------------------------------------------------

def colour_histograms(image: np.ndarray, boxes: np.ndarray, bins: int = 8, samples: int = 16) -> np.ndarray:
    """Kernel-weighted RGB histograms of many boxes at once.

    Each box is sampled on a ``samples × samples`` grid of points (so every box costs the same,
    whatever its size); each point votes for its ``bins³`` colour bin with the Epanechnikov
    weight ``1 - r²`` of its distance ``r`` from the box centre (normalised so the box's corners
    are at ``r = sqrt(2)``, clipped at 0), which lets the centre count more than the border,
    where background leaks in. Points outside the image are skipped.

    Args:
        image: ``H×W×3`` uint8 RGB.
        boxes: ``(M, 4)`` xywh.
    Returns:
        ``(M, bins³)`` float64, each row summing to 1 (uniform for a box entirely outside).
    """
    boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    h, w = image.shape[:2]
    quant = (image.astype(np.int32) * bins) // 256
    index = (quant[..., 0] * bins + quant[..., 1]) * bins + quant[..., 2]
    t = (np.arange(samples) + 0.5) / samples          # grid positions in [0, 1]
    xs = boxes[:, 0, None] + boxes[:, 2, None] * t     # (M, S)
    ys = boxes[:, 1, None] + boxes[:, 3, None] * t
    r2 = (2 * t - 1)[:, None] ** 2 + (2 * t - 1)[None, :] ** 2   # (S, S), rows y, cols x
    kernel = np.clip(1.0 - r2 / 2.0, 0.0, None)
    xi, yi = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    inside = ((yi >= 0) & (yi < h))[:, :, None] & ((xi >= 0) & (xi < w))[:, None, :]   # (M, S, S)
    bin_of = index[np.clip(yi, 0, h - 1)[:, :, None], np.clip(xi, 0, w - 1)[:, None, :]]
    weight = kernel[None] * inside
    m, nb = len(boxes), bins ** 3
    flat = (np.arange(m)[:, None, None] * nb + bin_of).ravel()
    hist = np.bincount(flat, weights=weight.ravel(), minlength=m * nb).reshape(m, nb)
    total = hist.sum(axis=1, keepdims=True)
    return np.where(total > 0, hist / np.where(total > 0, total, 1.0), 1.0 / nb)


def hellinger_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hellinger distance ``sqrt(1 - Σ_b sqrt(p_b q_b))`` between normalised histograms (broadcast over rows).

    Args:
        p, q: ``(..., B)`` non-negative, each row summing to 1.
    Returns:
        ``(...)`` float64 in [0, 1]: 0 for equal histograms, 1 for disjoint ones.
    """
    bc = np.sum(np.sqrt(np.asarray(p, dtype=np.float64) * np.asarray(q, dtype=np.float64)), axis=-1)
    return np.sqrt(np.clip(1.0 - bc, 0.0, 1.0))


# --- the tracker -------------------------------------------------------------------------------

class ParticleTracker(Tracker):
    """A bootstrap particle filter on the box centre with a colour-histogram likelihood.

    State ``(cx, cy, vx, vy)`` (nearly constant velocity) or ``(cx, cy)`` (random walk); the box
    keeps its initial size. Each ``update`` resamples (by the previous weights), predicts,
    weights every particle by ``exp(-d² / 2σ²)`` with ``d`` the Hellinger distance between its
    box's histogram and the reference, and reports the weighted mean. The reference drifts
    towards the estimate's histogram at rate ``alpha``.

    Exposes after ``update``: ``particles`` ``(N, d)``, ``weights`` ``(N,)`` (after the update
    step, before the next resampling), ``ess``, ``confidence`` (the posterior mean of the likelihood: low when nothing matches).
    """

    name = "particle"

    def __init__(self, settings: ParticleSettings | None = None, **overrides):
        super().__init__()
        self.settings = replace(settings or ParticleSettings(), **overrides)
        if self.settings.motion not in ("ncv", "rw"):
            raise ValueError(f"motion must be 'ncv' or 'rw', got {self.settings.motion!r}")
        if self.settings.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {', '.join(RESAMPLERS)}, got {self.settings.resampler!r}")
        self.particles: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.ess: float | None = None

    def _boxes(self, particles: np.ndarray) -> np.ndarray:
        """xywh boxes ``(N, 4)`` of particles centred at their positions, with the target's size."""
        n = len(particles)
        return cxcywh_to_xywh(np.column_stack([particles[:, 0], particles[:, 1],
                                               np.full(n, self.size[0]), np.full(n, self.size[1])]))

    def init(self, image, box) -> None:
        image, box, centre, self.size = check_init(image, box)
        s = self.settings
        (cx, cy), (w, h) = centre, self.size
        self.rng = np.random.default_rng(s.seed)
        # noise in pixels scales with the target, so one setting suits small and large targets
        scale = s.q * (w + h) / 2.0
        self.model = (nearly_constant_velocity(scale ** 2) if s.motion == "ncv" else random_walk(scale ** 2))
        d = self.model.Phi.shape[0]
        start = np.zeros(d)
        start[:2] = cx, cy
        self.particles = np.tile(start, (s.n_particles, 1))
        self.weights = np.full(s.n_particles, 1.0 / s.n_particles)
        self.reference = colour_histograms(image, box[None], s.bins, s.samples)[0]
        self.ess = float(s.n_particles)
        self.box = box.copy()
        self.confidence = 1.0

    def update(self, image) -> np.ndarray:
        image = check_image(image)
        s = self.settings
        particles, _ = resample(self.particles, self.weights, self.rng, s.resampler)
        particles = predict(particles, self.model.Phi, self.model.Q, self.rng)
        # keep centres inside the frame: a particle far outside sees no pixels and says nothing
        particles[:, 0] = np.clip(particles[:, 0], 0, image.shape[1])
        particles[:, 1] = np.clip(particles[:, 1], 0, image.shape[0])
        hists = colour_histograms(image, self._boxes(particles), s.bins, s.samples)
        d = hellinger_distance(hists, self.reference)
        likelihood = np.exp(-d ** 2 / (2.0 * s.sigma ** 2))
        self.weights = update(np.full(len(particles), 1.0 / len(particles)), likelihood)
        self.particles = particles
        self.ess = effective_sample_size(self.weights)
        # how well the posterior's hypotheses match the reference colours: low when the target is
        # hidden (ESS would say the opposite: with no match every particle weighs the same)
        self.confidence = float(np.sum(self.weights * likelihood))
        centre = estimate(particles, self.weights)[:2]
        self.box = cxcywh_to_xywh([centre[0], centre[1], *self.size])
        if s.alpha > 0:
            current = colour_histograms(image, self.box[None], s.bins, s.samples)[0]
            self.reference = (1 - s.alpha) * self.reference + s.alpha * current
        return self.box.copy()


# --- the notebook's particle-cloud view ---------------------------------------------------------

class ParticleRun:
    """Run a :class:`ParticleTracker` over frames once and keep what the view draws, per frame.

    Args:
        frames: a sequence of ``H×W×3`` frames (a :class:`acvm.data.Sequence` or a list).
        boxes: ``(N, 4)`` ground truth (frame 0 initialises the tracker).
        n_frames: how many frames to run (default all).
        **settings: overrides of :class:`ParticleSettings`.

    Attributes: ``frames`` (list), ``groundtruth`` ``(n, 4)``, ``estimates`` ``(n, 4)``,
    ``particles`` (list of ``(N, d)``), ``weights`` (list of ``(N,)``), ``ess`` ``(n,)``.
    """

    def __init__(self, frames, boxes, n_frames: int | None = None, **settings):
        n = len(frames) if n_frames is None else min(n_frames, len(frames))
        self.frames = [frames[i] for i in range(n)]
        self.groundtruth = np.asarray(boxes, dtype=np.float64)[:n]
        self.tracker = ParticleTracker(**settings)
        self.tracker.init(self.frames[0], self.groundtruth[0])
        self.estimates = [self.groundtruth[0].copy()]
        self.particles = [self.tracker.particles.copy()]
        self.weights = [self.tracker.weights.copy()]
        self.ess = [self.tracker.ess]
        for frame in self.frames[1:]:
            self.estimates.append(self.tracker.update(frame))
            self.particles.append(self.tracker.particles.copy())
            self.weights.append(self.tracker.weights.copy())
            self.ess.append(self.tracker.ess)
        self.estimates = np.array(self.estimates)
        self.ess = np.array(self.ess)

    def __len__(self) -> int:
        return len(self.frames)

    def draw(self, frame: int = 0):
        """The view's callback: see :func:`draw_particles`."""
        return draw_particles(self, frame)


def draw_particles(run: ParticleRun, frame: int = 0, figsize=(10, 4)):
    """Draw frame ``frame`` of a :class:`ParticleRun`: the particle centres coloured by weight,
    the estimate (red) and the ground truth (green), beside the ESS over time with the frame marked.

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from .viz import draw_box
    if not 0 <= frame < len(run):
        raise IndexError(f"frame {frame} is out of range (the run has {len(run)} frames)")
    fig, (ax, ax_ess) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.6, 1]})
    ax.imshow(run.frames[frame])
    p, w = run.particles[frame], run.weights[frame]
    order = np.argsort(w)  # heavy particles on top
    sc = ax.scatter(p[order, 0] - 0.5, p[order, 1] - 0.5, c=w[order] * len(w), cmap="viridis", s=14,
                    vmin=0, vmax=max(2.0, float(w.max() * len(w))), edgecolors="none")
    fig.colorbar(sc, ax=ax, fraction=0.035, pad=0.02, label="weight × N")
    draw_box(ax, run.groundtruth[frame], "#009E73", "ground truth")
    draw_box(ax, run.estimates[frame], "#D55E00", "estimate (weighted mean)")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.7)
    ax.set_title(f"frame {frame}: ESS {run.ess[frame]:.0f} of {len(w)}")
    ax.set_axis_off()
    ax_ess.plot(run.ess, color="#0072B2")
    ax_ess.axvline(frame, color="k", lw=1, ls="--")
    ax_ess.set(xlabel="frame", ylabel="effective sample size", ylim=(0, len(w) * 1.05),
               title="ESS = 1 / Σ w²")
    ax_ess.grid(alpha=0.3)
    fig.tight_layout()
    return fig
