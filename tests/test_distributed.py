"""Training under torchrun: two real CPU processes (gloo), and the single-process path left alone."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from acvm.training import _Stream, batches, collate, fit, training_meta

ROOT = Path(__file__).resolve().parent.parent
STEPS, LR, SEED, BATCH = 5, 0.1, 3, 4
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _sample(rng):
    return {"x": rng.normal(size=3).astype(np.float32), "y": rng.normal(size=1).astype(np.float32)}


class _Tiny(torch.nn.Module):
    """A frozen layer, a trained one, a trainable parameter that gets no gradient, and a plain attribute."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)
        self.head = torch.nn.Linear(3, 1)
        self.unused = torch.nn.Parameter(torch.zeros(2))
        self.scale = 0.5

    def forward(self, x):
        return self.head(torch.tanh(self.frozen(x)))


def _loss(model, batch):
    # model.scale: under DDP the loss gets the wrapper, which must answer for the model's attributes
    return ((model(batch["x"]) * model.scale - batch["y"]) ** 2).mean()


class _Stop(Exception):
    pass


def _stop_at_2(step, loss):
    if step == 2:
        raise _Stop   # interrupted after step 2; its checkpoint (every 2 steps) is at step 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_worker(rank: int, world_size: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from acvm import distributed
    tmp = Path(tmp)
    seen = {0: [], 2: []}

    def stream(start):
        for b in batches(_sample, BATCH, SEED, start=start):
            seen[start].append(b)
            yield b

    kw = dict(lr=LR, lr_end=LR, optimizer=lambda p: torch.optim.SGD(p, lr=LR), clip_grad=None, seed=0,
              device="cpu", checkpoint=tmp / "fit.ckpt", checkpoint_every=2, progress=False)
    try:
        with pytest.raises(_Stop):
            fit(_Tiny(0), _loss, stream, STEPS, callback=_stop_at_2, **kw)
        distributed.barrier()
        model = _Tiny(seed=99)                      # all of it must come from the checkpoint
        result = fit(model, _loss, stream, STEPS, resume=True, **kw)
        torch.save({"first": seen[0][:2], "resumed": seen[2], "losses": torch.from_numpy(result.losses),
                    "state": model.state_dict()}, tmp / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_single_process_stream_is_the_one_of_the_shipped_weights(monkeypatch):
    for k in _DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    first = next(iter(_Stream(_sample, BATCH, 7, 5)))
    rng = np.random.default_rng([7, 5, 0])                 # the seed list from before torchrun support
    expected = collate([_sample(rng) for _ in range(BATCH)])
    assert all(torch.equal(first[k], expected[k]) for k in expected)
    assert "world_size" not in training_meta(1, 0, None, 0.0)

    monkeypatch.setenv("WORLD_SIZE", "1")                 # torchrun with one process: the same stream
    assert torch.equal(next(iter(_Stream(_sample, BATCH, 7, 5)))["x"], expected["x"])

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rng = np.random.default_rng([7, 5, 0, 1])
    assert torch.equal(next(iter(_Stream(_sample, BATCH, 7, 5)))["x"],
                       collate([_sample(rng) for _ in range(BATCH)])["x"])
    assert training_meta(1, 0, None, 0.0)["world_size"] == 2


@pytest.mark.slow
def test_two_processes_average_gradients_and_resume_together(tmp_path, monkeypatch):
    for k in _DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.multiprocessing.spawn(_fit_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    # each rank drew its own pairs, rank 0 from the generator seeded [seed, start, worker, rank]
    assert not torch.equal(r0["first"][0]["x"], r1["first"][0]["x"])
    assert not torch.equal(r0["resumed"][0]["x"], r1["resumed"][0]["x"])
    rng = np.random.default_rng([SEED, 0, 0, 0])
    assert torch.equal(r0["first"][0]["x"], collate([_sample(rng) for _ in range(BATCH)])["x"])

    # the same parameters everywhere, and the same (averaged) losses
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert torch.equal(r0["losses"], r1["losses"]) and r0["losses"].shape == (STEPS,)

    # a single process applying the mean gradient of both ranks' batches at every step
    model = _Tiny(0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    steps = [(a, b) for a, b in zip(r0["first"], r1["first"])] + list(zip(r0["resumed"], r1["resumed"]))
    assert len(steps) == STEPS
    losses = []
    for b0, b1 in steps:
        opt.zero_grad(set_to_none=True)
        l0, l1 = _loss(model, b0), _loss(model, b1)
        mean = (l0 + l1) / 2
        mean.backward()
        losses.append(float(mean.detach()))
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.allclose(r0["state"][k], v, atol=1e-6), k
    assert np.allclose(r0["losses"].numpy(), losses, rtol=1e-5)
    assert torch.load(tmp_path / "fit.ckpt", weights_only=True)["step"] == STEPS   # rank 0's, at the end
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_torchrun_trains_siamfc_on_two_processes(tmp_path):
    out = tmp_path / "w.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "acvm", "train", "siamfc", "--steps", "4", "--out", str(out), "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("weights written to") == 1          # rank 1 prints nothing
    state = torch.load(out, weights_only=True)
    assert state["meta"]["world_size"] == 2 and state["meta"]["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]   # no checkpoint, no half-written file
