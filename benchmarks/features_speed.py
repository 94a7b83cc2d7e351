"""Speed of the hand-crafted features and of correlation (issue 3): HOG of a 64×64 patch should take
well under a millisecond; the FFT correlation should beat the spatial one from small templates on.

    .venv/bin/python benchmarks/features_speed.py

Exits with status 1 when HOG of a 64×64 RGB patch takes 1 ms or more (median of 200 runs).
"""
from __future__ import annotations

import numpy as np

from acvm.correlation import correlate_fft, correlate_spatial
from acvm.evaluation import call_times
from acvm.features import colour_features, dcf_features, hog


def median_ms(fn, *args, repeats: int = 200) -> float:
    return float(np.median(call_times(lambda: fn(*args), repeats, warmup=1)) * 1e3)


def main() -> int:
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    window = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    scales = rng.integers(0, 256, (17, 32, 16, 3), dtype=np.uint8)
    rows = [("hog 64×64×3", median_ms(hog, patch)),
            ("colour_features 64×64×3", median_ms(colour_features, patch)),
            ("dcf_features 64×64×3", median_ms(dcf_features, patch)),
            ("dcf_features 160×160×3 (a DCF search window)", median_ms(dcf_features, window, repeats=50)),
            ("dcf_features 17×32×16×3 (DSST scale samples)", median_ms(dcf_features, scales, repeats=50))]
    image = rng.random((128, 128))
    for s in (4, 16, 48):
        t = rng.random((s, s))
        rows.append((f"correlate_spatial 128² ⋆ {s}²", median_ms(correlate_spatial, image, t, repeats=10)))
        rows.append((f"correlate_fft     128² ⋆ {s}²", median_ms(correlate_fft, image, t, repeats=10)))
    for label, ms in rows:
        print(f"{label:48s} {ms:8.3f} ms")
    ok = rows[0][1] < 1.0
    print(("met   " if ok else "MISSED") + " hog of a 64×64 patch under 1 ms")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
