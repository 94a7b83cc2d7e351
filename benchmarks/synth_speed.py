"""How fast synthetic data is made: a 100-frame 320×240 sequence, and SiamFC training pairs.

    python benchmarks/synth_speed.py

Targets: a 100-frame sequence with occlusion and distractor well under a second; a training pair
(127 + 255 crops) in about 10 ms, so that a batch of 8 costs less than the network's step.
"""
import numpy as np

from acvm.evaluation import call_times


def best_of(fn, repeats=3):
    return float(call_times(fn, repeats).min())


def main() -> None:
    from acvm.synth import make_sequence, photo, PHOTOS
    from acvm.training import PairSampler, SyntheticSource
    for name in PHOTOS:          # the photographs are read once per process; do not time that
        photo(name)

    def sequence():
        seq = make_sequence(seed=1, n_frames=100, occlusion=True, distractor=True)
        for i in range(len(seq)):
            seq.frame_and_mask(i)

    t = best_of(sequence)
    print(f"100-frame 320×240 sequence with occlusion and distractor, frames and masks: {t:.3f} s "
          f"({'ok' if t < 1.0 else 'SLOWER than the 1 s target'})")
    sampler = PairSampler([SyntheticSource()])
    rng = np.random.default_rng(0)
    n = 50
    t = best_of(lambda: [sampler(rng) for _ in range(n)]) / n
    print(f"one SiamFC training pair (127 + 255 crops, fresh sequence): {1000 * t:.1f} ms")


if __name__ == "__main__":
    main()
