"""acvm: fully-trainable trackers, built from scratch for a course."""
import os as _os

# On a busy 2-core machine OpenMP threads that spin while waiting steal the other core: PyTorch
# with 2 threads then ran a tracker 30x slower than with 1. Passive waiting removes that; it only
# takes effect when set before torch is imported, which importing acvm first ensures.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
