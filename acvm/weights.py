"""Weights files: the one place that reads and writes the trained networks.

Every trained network of the course is a file ``{"state_dict": ..., "meta": {...}}`` that
``torch.load(weights_only=True)`` accepts (no pickled code: a file from anywhere cannot run
anything). The shipped ones live in ``data/weights/`` under the names :mod:`acvm.registry` gives
(:func:`acvm.registry.weights_file`); ``acvm train NAME`` writes them.

* :func:`read_weights` reads a file and checks it: a missing file raises ``FileNotFoundError``
  with the ``acvm train`` command that makes it, a damaged or foreign one ``ValueError`` naming
  the file;
* :func:`load_weights` loads one into a model and returns its meta; :func:`backbone_state` takes
  the ``backbone.*`` entries of any tracker's file (the networks that start from SiamFC's embedding);
* :func:`save_weights` writes a file (under torchrun, rank 0 only), :func:`training_meta` makes
  the meta every trainer records (command, steps, seed, data, seconds, versions), and
  :func:`describe_weights` says in one line which file a network started from.

**Integrity.** ``data/weights/MANIFEST.json`` holds the SHA-256 of every file in that folder.
:func:`read_weights` checks a file there against it, so a file that changed on disk (a bad copy, a
few flipped bytes that would still load and silently move every box) is refused with the way back
(``git checkout`` or ``acvm train``); :func:`save_weights` records the sum of every file it writes
there, so a user's own retrained weights are accepted as theirs. ``acvm weights`` lists the files
with their state; ``acvm weights --record FILE`` records a file put there by hand.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

from .registry import WEIGHTS_DIR, train_command

__all__ = ["read_weights", "load_weights", "fit_state", "backbone_state", "save_weights", "training_meta", "describe_weights",
           "MANIFEST", "sha256", "manifest", "record", "check_integrity"]

#: file name -> {"sha256", "bytes"} of every weights file in data/weights/
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(path: str | os.PathLike | None = None) -> dict:
    """The manifest ``{file name: {"sha256", "bytes"}}`` (empty when there is none)."""
    path = Path(path) if path else MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it with `git checkout {path.name}`") from None


def record(path: str | os.PathLike) -> str:
    """Record the SHA-256 of the weights file ``path`` (which must lie in ``data/weights/``) in the
    manifest; returns the sum. Written whole or not at all."""
    path = Path(path)
    if path.resolve().parent != WEIGHTS_DIR.resolve():
        raise ValueError(f"{path} is not in {WEIGHTS_DIR}: only the shipped folder has a manifest")
    entries = manifest()
    entries[path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    tmp = MANIFEST.with_name(MANIFEST.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
    os.replace(tmp, MANIFEST)
    return entries[path.name]["sha256"]


def check_integrity(path: str | os.PathLike, name: str | None = None) -> str:
    """``"ok"``, ``"unrecorded"`` (in ``data/weights/`` but not in the manifest) or ``"elsewhere"`` (a
    file outside that folder: nothing to check against); ``ValueError`` when the file's SHA-256
    differs from the manifest's, naming the file and how to restore or remake it."""
    path = Path(path)
    if path.resolve().parent != WEIGHTS_DIR.resolve():
        return "elsewhere"
    entry = manifest().get(path.name)
    if entry is None:
        return "unrecorded"
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ValueError(f"{path} changed since it was recorded (sha256 {actual[:12]}…, the manifest "
                         f"{MANIFEST.name} says {entry['sha256'][:12]}…, {entry['bytes']} bytes): restore it "
                         f"with `git checkout -- {path}` or make it again with {train_command(path, name)} "
                         f"(which records the new file); `acvm weights --record {path}` accepts it as it is")
    return "ok"


def read_weights(path: str | os.PathLike, name: str | None = None, missing_hint: str | None = None) -> dict:
    """``{"state_dict", "meta"}`` of the weights file ``path`` (CPU tensors; ``meta`` ``{}`` when absent).

    Raises ``FileNotFoundError`` naming the file and the command that makes it (for the model
    ``name``, :func:`acvm.registry.train_command`; ``missing_hint`` is added, e.g. "or pass
    weights='random'"), and ``ValueError`` naming the file when it is damaged (cut short, not a
    torch file) or is not a weights file of this course.
    """
    path = Path(path)
    if not path.is_file():
        hint = f"make them with {train_command(path, name)}"
        raise FileNotFoundError(f"no weights at {path}; {hint}" + (f" {missing_hint}" if missing_hint else ""))
    check_integrity(path, name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:     # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        # torch's own text for a file that is not a weights file advises weights_only=False, which would
        # run whatever the file holds: never pass that on
        text = str(exc).splitlines()[0] if str(exc) else ""
        detail = type(exc).__name__ + (f": {text}" if text and "weights_only" not in text else "")
        raise ValueError(f"{path} is not a readable weights file ({detail}); it may be cut short or "
                         f"damaged: make it again with {train_command(path, name)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ValueError(f"{path} holds no 'state_dict': it is not a weights file written by `acvm train`")
    state.setdefault("meta", {})
    return state


def load_weights(path: str | os.PathLike, model: torch.nn.Module | None = None, name: str | None = None,
                 missing_hint: str | None = None) -> dict:
    """Read a weights file (:func:`read_weights`); load it into ``model`` if given; return its ``meta``.

    A file whose tensors do not fit ``model`` raises ``ValueError`` naming the file and the first
    entries that differ; ``name`` (the model) and ``missing_hint`` as :func:`read_weights`'s.
    """
    state = read_weights(path, name, missing_hint)
    if model is not None:
        fit_state(model, state["state_dict"], path)
    return dict(state["meta"])


def fit_state(model: torch.nn.Module, state_dict: dict, path) -> None:
    """``model.load_state_dict(state_dict)``; a state that does not fit raises ``ValueError`` naming
    the file ``path`` it came from and the first entries that differ (not torch's bare traceback)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path} does not fit {type(model).__name__}: {detail}") from None


def backbone_state(path: str | os.PathLike, prefix: str = "backbone.") -> tuple[dict, dict]:
    """The entries of a weights file whose names start with ``prefix``, prefix removed, and its meta.

    ``ValueError`` when the file has none (a file of a network without that part).
    """
    state = read_weights(path)
    part = {k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    if not part:
        raise ValueError(f"{path} has no '{prefix}*' entries: it holds no backbone to start from")
    return part, dict(state["meta"])


def training_meta(steps: int, seed: int, data, seconds: float, **extra) -> dict:
    """The ``meta`` dict stored with shipped weights: command, steps, seed, data, seconds, versions."""
    meta = {
        "command": " ".join(["acvm", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("acvm", "__main__.py")
        else " ".join(sys.argv),
        "steps": int(steps), "seed": int(seed), "data": [str(d) for d in (data or ["synthetic"])],
        "seconds": round(float(seconds), 1), "torch": str(torch.__version__), "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    from .distributed import world
    world_size = world()[1]
    if world_size > 1:   # torchrun: batch_size is per process, a step saw batch_size × world_size samples
        meta["world_size"] = world_size
    meta.update(extra)
    return meta


def save_weights(path: str | os.PathLike, model: torch.nn.Module, meta: dict) -> Path:
    """Write ``{"state_dict": ..., "meta": meta}`` (CPU tensors) to ``path``; returns the path.

    The file appears whole or not at all (written beside and renamed); one in ``data/weights/`` has
    its SHA-256 recorded in the manifest (:func:`record`). Under torchrun only rank 0
    writes (the others return the path), and every process waits there until the file exists.
    """
    from . import distributed
    path = Path(path)
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"state_dict": state, "meta": meta}, tmp)
        os.replace(tmp, path)
        if path.resolve().parent == WEIGHTS_DIR.resolve():
            record(path)     # a retrained shipped file: its new sum is the one to check against
    distributed.barrier()
    return path


def describe_weights(path, meta: dict) -> str:
    """How the weights a model started from were made, for the ``init`` entry of its meta."""
    keys = ("steps", "seed", "device", "final_loss")
    return f"{Path(path).name} ({', '.join(f'{k} {meta[k]}' for k in keys if k in meta)})"
