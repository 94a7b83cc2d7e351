import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from acvm.data import sequences_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_sequences() -> Path:
    root = sequences_dir()
    if root is None:
        pytest.skip("the shared sequences folder (../shared/sequences) is not present")
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread: its tensors are small, and a second thread only
    adds waiting, badly so on a busy 2-core machine. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def overlaps_on_synthetic(tracker, seed: int, n_frames: int) -> list[float]:
    """IoU with the ground truth in every frame after the first, for ``tracker`` on the synthetic
    sequence ``acvm.synth.make_sequence(seed, n_frames)``."""
    from acvm.boxes import iou
    from acvm.synth import make_sequence
    seq = make_sequence(seed=seed, n_frames=n_frames)
    tracker.init(seq[0], seq.boxes[0])
    return [float(iou(tracker.update(seq[i]), seq.boxes[i])) for i in range(1, len(seq))]


def write_split_folder(root, n_frames: int = 8, size=(160, 120)):
    """Three small synthetic sequences a, b, c under ``root`` with ``train.txt`` (a, b) and
    ``validation.txt`` (c), as ``../shared/training`` is laid out; returns ``root``."""
    from acvm.synth import make_sequence, write_otb
    root = Path(root)
    for name, seed in (("a", 41), ("b", 42), ("c", 43)):
        write_otb(make_sequence(seed=seed, n_frames=n_frames, size=size), root / name)
    (root / "train.txt").write_text("a\nb\n")
    (root / "validation.txt").write_text("# held out\nc\n")
    return root
