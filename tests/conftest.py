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
