"""The names of the course's trackers and networks: which class tracks, which function trains, which file.

One table, :data:`MODELS`, maps every name that ``acvm trackers``, ``acvm track``, ``acvm bench`` and
``acvm train`` accept to a :class:`Model`: its tracker class, its trainer and the weights file the
trainer writes and the tracker reads (in ``data/weights/``). Targets are ``"module:attribute"``
strings, so listing the names imports nothing heavy; :func:`make_tracker` and :func:`trainer`
import the module when asked.

Some names only track (``dcf``: nothing to train), some only train (``stark-base``: the base network
``acvm train stark`` starts from). ``acvm train atom`` trains what the ATOM tracker reads, the IoU
network (``iounet.pt``); ``iounet`` is kept as the second name of that trainer. OpenCV's trackers are
``opencv-<kind>`` (:mod:`acvm.opencv_trackers`); they have no entry here because which kinds exist
depends on the installed OpenCV build.

This module and :mod:`acvm.tracker` (the interface) are apart so that every tracker module,
OpenCV's adapter included, imports the interface and only this module imports the trackers.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Model", "MODELS", "ALIASES", "WEIGHTS_DIR", "TRACKERS", "TRAINERS", "make_tracker",
           "available_trackers", "trainer", "weights_file", "train_command", "parse_settings"]

#: where ``acvm train`` writes and the trackers read the shipped weights
def _weights_dir() -> Path:
    """``data/weights`` beside the package in a checkout; the installed ``acvm_data`` package's
    ``weights`` folder in a wheel or a non-editable install."""
    checkout = Path(__file__).resolve().parent.parent / "data" / "weights"
    if checkout.is_dir():
        return checkout
    try:
        import acvm_data
    except ImportError:
        return checkout
    return Path(acvm_data.__file__).resolve().parent / "weights"


#: the one place the weights folder is spelled
WEIGHTS_DIR = _weights_dir()


@dataclass(frozen=True)
class Model:
    """One name of the course: what tracks, what trains, which file joins the two."""

    tracker: str | None = None     # "module:Class" that make_tracker builds (None: trains only)
    trainer: str | None = None     # "module:function(steps, data, seed, out, resume, device, ...) -> Path"
    weights: str | None = None     # the file in data/weights/ the trainer writes and the tracker reads
    starts_from: tuple[str, ...] = ()   # names whose weights the trainer needs first (siamfc for most)


#: name -> :class:`Model`, in the lecture's order
MODELS: dict[str, Model] = {
    "ncc": Model("acvm.dcf:NCCTracker"),
    "mosse": Model("acvm.dcf:MOSSETracker"),
    "dcf": Model("acvm.dcf:DCFTracker"),
    "particle": Model("acvm.particle:ParticleTracker"),
    "mdnet": Model("acvm.mdnet:MDNetTracker", "acvm.mdnet:train", "mdnet.pt", ("siamfc",)),
    "siamfc": Model("acvm.siamfc:SiamFCTracker", "acvm.siamfc:train", "siamfc.pt"),
    "siamrpn": Model("acvm.siamrpn:SiamRPNTracker", "acvm.siamrpn:train", "siamrpn.pt", ("siamfc",)),
    "atom": Model("acvm.atom:ATOMTracker", "acvm.iounet:train", "iounet.pt", ("siamfc",)),
    "d3s": Model("acvm.d3s:D3STracker", "acvm.d3s:train", "d3s.pt", ("siamfc",)),
    "stark": Model("acvm.stark:STARKTracker", "acvm.stark:fine_tune", "stark.pt", ("stark-base", "siamfc")),
    "stark-st": Model("acvm.stark:STARKSTTracker", "acvm.stark:train_st", "stark-st.pt", ("stark",)),
    "stark-base": Model(trainer="acvm.stark:train", weights="stark-base.pt", starts_from=("siamfc",)),
}

#: second names: ``acvm train iounet`` is ``acvm train atom`` (the network ATOM's tracker reads)
ALIASES: dict[str, str] = {"iounet": "atom"}

#: name -> "module:Class" of every course tracker (a view of :data:`MODELS`)
TRACKERS: dict[str, str] = {n: m.tracker for n, m in MODELS.items() if m.tracker}
#: name -> "module:function" of every trainer, second names included (a view of :data:`MODELS`)
TRAINERS: dict[str, str] = {**{n: m.trainer for n, m in MODELS.items() if m.trainer},
                            **{a: MODELS[n].trainer for a, n in ALIASES.items()}}


def _import(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_trackers(include_opencv: bool = True) -> list[str]:
    """Names that :func:`make_tracker` accepts here: the course's trackers whose module exists, then
    ``opencv-<name>`` for every tracker the installed OpenCV build has."""
    names = [n for n, t in TRACKERS.items() if importlib.util.find_spec(t.partition(":")[0]) is not None]
    if include_opencv:
        from .opencv_trackers import opencv_tracker_names
        names += [f"opencv-{n}" for n in opencv_tracker_names()]
    return names


def make_tracker(name: str, **settings):
    """Build the tracker registered as ``name`` (keyword arguments go to its constructor)."""
    if name.startswith("opencv-"):
        from .opencv_trackers import OpenCVTracker
        if settings:
            raise ValueError(f"{name} takes no settings, got {', '.join(sorted(settings))}")
        return OpenCVTracker(name[len("opencv-"):])
    if name not in TRACKERS:
        hint = f" (`{name}` trains the network of `{ALIASES[name]}`)" if name in ALIASES else ""
        raise ValueError(f"unknown tracker {name!r}{hint}; choose one of: {', '.join(available_trackers())}")
    return _import(TRACKERS[name])(**settings)


def trainer(name: str):
    """The function ``acvm train NAME`` calls. ``ValueError`` names the known ones when ``name`` is
    not one; ``ImportError`` when its module is not in this version."""
    if name not in TRAINERS:
        raise ValueError(f"unknown model {name!r} to train; choose one of: {', '.join(TRAINERS)}")
    try:
        return _import(TRAINERS[name])
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"training for {name!r} is not available in this version ({TRAINERS[name]})") from exc


def weights_file(name: str) -> Path:
    """The shipped weights of ``name`` (``data/weights/<file>``); ``ValueError`` for a name without."""
    model = MODELS.get(ALIASES.get(name, name))
    if model is None or model.weights is None:
        with_weights = [n for n, m in MODELS.items() if m.weights]
        raise ValueError(f"{name!r} has no weights file; these do: {', '.join(with_weights)}")
    return WEIGHTS_DIR / model.weights


def train_command(path, name: str | None = None) -> str:
    """How to make the weights file ``path``: ``"acvm train NAME"`` (after what NAME starts from, where
    that is missing too), with ``--out PATH`` unless ``path`` is the shipped file. NAME is ``name``
    (the model that reads the file) or the one whose shipped file has ``path``'s name; with neither,
    the generic ``"acvm train NAME --out PATH"``."""
    path = Path(path)
    name = ALIASES.get(name, name)
    if name not in MODELS or not MODELS[name].trainer:
        name = next((n for n, m in MODELS.items() if m.weights == path.name), None)
    if name is None:
        return f"`acvm train NAME --out {path}` (NAME one of {', '.join(n for n, m in MODELS.items() if m.trainer)})"
    first = [f"acvm train {n}" for n in MODELS[name].starts_from if not weights_file(n).is_file()]
    out = "" if path.resolve() == weights_file(name).resolve() else f" --out {path}"
    return " then ".join(f"`{c}`" for c in [*first, f"acvm train {name}{out}"])


_WORDS = {"true": True, "false": False, "none": None, "inf": float("inf"), "-inf": float("-inf")}


def parse_settings(items) -> dict:
    """``["name=value", ...]`` (a benchmark's ``--set`` options) -> ``{name: value}`` for :func:`make_tracker`.

    Values are Python literals (``0.25``, ``True``, ``(1, 2)``, ``None``), with ``true``/``false``,
    ``none`` and ``inf`` in any case as well (a shell user's ``calibrate=false`` must not become the
    non-empty, so truthy, text ``"false"``); anything else is kept as text (a file name). An item
    without ``=`` raises ``ValueError`` naming it.
    """
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        name, value = (part.strip() for part in item.split("=", 1))
        if value.lower() in _WORDS:
            out[name] = _WORDS[value.lower()]
            continue
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out
