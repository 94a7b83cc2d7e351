"""Feedback for the notebook exercises.

An exercise cell defines a function with the same signature as a library reference; the next
cell calls :func:`check`, which runs both on fresh inputs and prints one line: what is right, or
the first thing that is wrong (shape, dtype, values, and where). It returns the function the
rest of the notebook should use: the student's when it is correct, otherwise the reference, so
every notebook runs top to bottom whether or not the exercises are done. The notebook binds that
to a name of its own (``use_iou = check(iou, ...)``), never to the student's: a student who
re-runs the check, or calls their function to debug it, always gets their own code, so an
unsolved exercise can never report ✓.

Where the reference draws random numbers, the check compares behaviour, not the random stream:
``compare=`` takes a function ``(got, expected, *args) -> message or None`` that tests what any
correct answer has in common (:func:`acvm.particle.compare_prediction` tests the noise's
distribution, :func:`acvm.particle.compare_systematic` the copy counts).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["check", "compare", "expect"]


def _to_numpy(x):
    try:
        import torch
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return x


def compare(got: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-6, path: str = "output") -> str | None:
    """Return ``None`` when ``got`` matches ``expected``, else one sentence saying what differs.

    Arrays (numpy or torch) are compared by shape, dtype kind and values; tuples and lists
    element by element; dicts key by key; everything else with ``==``.
    """
    got, expected = _to_numpy(got), _to_numpy(expected)
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"{path} should be a dict with keys {sorted(expected)}, got {type(got).__name__}"
        for k in expected:
            msg = compare(got[k], expected[k], rtol, atol, f"{path}[{k!r}]")
            if msg:
                return msg
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{path} should be a {type(expected).__name__} of length {len(expected)}, got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            msg = compare(g, e, rtol, atol, f"{path}[{i}]")
            if msg:
                return msg
        return None
    if isinstance(expected, (np.ndarray, np.generic, float, int)) and not isinstance(expected, bool):
        e = np.asarray(expected)
        if got is None:
            return f"{path} is None (did the function forget to return?)"
        try:
            g = np.asarray(got)
        except Exception:  # noqa: BLE001 - anything unconvertible is simply wrong
            return f"{path} should be an array, got {type(got).__name__}"
        if g.shape != e.shape:
            return f"{path} has shape {g.shape}, expected {e.shape}"
        if isinstance(expected, np.ndarray) and g.dtype.kind != e.dtype.kind:
            return f"{path} has dtype {g.dtype}, expected {e.dtype}"
        if e.dtype.kind in "fc" or g.dtype.kind in "fc":
            if not np.isfinite(g).all() and np.isfinite(e).all():
                return f"{path} contains NaN or infinity"
            bad = ~np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        else:
            bad = g != e
        if bad.any():
            floats = e.dtype.kind in "fc" or g.dtype.kind in "fc"
            # floats: point at the worst value, not the first (a first mismatch of 1e-12 against 1e-6
            # reads like rounding); NaN against a number counts as the worst
            err = (np.nan_to_num(np.where(bad, np.abs(g.astype(np.complex128) - e), -1.0), nan=np.inf)
                   if floats else bad)
            idx = np.unravel_index(np.argmax(err), bad.shape)
            worst = (f"; the largest error is {float(err[idx]):.3g} (allowed: {atol:g} + {rtol:g}·|expected|)"
                     if floats else "")
            where = f" at index {tuple(int(i) for i in idx)}" if idx else ""
            return (f"{path} differs{where}: got {np.asarray(g[idx]).tolist()!r}, expected {np.asarray(e[idx]).tolist()!r} "
                    f"({int(bad.sum())} of {bad.size} values wrong{worst})")
        return None
    if got != expected:
        return f"{path} is {got!r}, expected {expected!r}"
    return None


def _where_raised(exc: BaseException, student: Callable) -> str:
    """`` in line N: <code>`` of the student's own code where ``exc`` was raised (or passed through
    last on its way out of a library call); empty when the traceback never entered it."""
    import traceback
    code = getattr(student, "__code__", None)
    if code is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == code.co_filename]
    if not frames:
        return ""
    f = frames[-1]
    text = f" `{f.line.strip()}`" if f.line else ""
    return f" in line {f.lineno - code.co_firstlineno + 1} of {getattr(student, '__name__', 'the function')}{text}"


_compare = compare


def check(student: Callable, reference: Callable, inputs: Iterable | Callable[[], Iterable],
          name: str | None = None, rtol: float = 1e-5, atol: float = 1e-6,
          quiet: bool = False, compare: Callable[..., str | None] | None = None) -> Callable:
    """Check ``student`` against ``reference`` on ``inputs`` and return the function to use.

    Args:
        student: the function written in the exercise.
        reference: the library's implementation with the same signature.
        inputs: an iterable of argument tuples (or dicts of keyword arguments), or a function
            that makes them (called once, so a seeded generator gives fresh but repeatable inputs).
        name: how to call the exercise in the message (default: the reference's name).
        compare: ``compare(got, expected, *args, **kwargs)`` returning ``None`` when ``got`` is
            right for these arguments, else what is wrong; default: equal to the reference's
            output within ``rtol``/``atol`` (:func:`acvm.exercise.compare`).
    Returns:
        ``student`` if it matches on every input, else ``reference``. Bind it to a new name
        (``use_fn = check(fn, ...)``): rebinding ``fn`` would make a re-run check the reference.
    """
    name = name or getattr(reference, "__name__", "exercise")
    cases = list(inputs() if callable(inputs) else inputs)
    for i, args in enumerate(cases):
        kwargs = args if isinstance(args, dict) else {}
        pos = () if isinstance(args, dict) else (args if isinstance(args, tuple) else (args,))
        try:
            got = student(*pos, **kwargs)
        except NotImplementedError:
            if not quiet:
                print(f"○ {name}: not done yet, so the rest of the notebook uses the library's reference "
                      f"({reference.__module__}.{getattr(reference, '__qualname__', reference.__name__)}).")
            return reference
        except Exception as exc:  # noqa: BLE001 - report any failure in one line
            if not quiet:
                print(f"✗ {name}: raised {type(exc).__name__}: {exc}{_where_raised(exc, student)} (on test input "
                      f"{i + 1}); using the reference for the rest of the notebook.")
            return reference
        expected = reference(*pos, **kwargs)
        msg = (_compare(got, expected, rtol=rtol, atol=atol) if compare is None
               else compare(got, expected, *pos, **kwargs))
        if msg:
            if not quiet:
                print(f"✗ {name}: {msg} (on test input {i + 1}); using the reference for the rest of the notebook.")
            return reference
    if not quiet:
        print(f"✓ {name}: matches the reference on {len(cases)} test inputs.")
    return student


def expect(what: str, value: float, quoted: float, tol: float) -> float:
    """Stop with a clear message unless a measured number lies within ``tol`` of the one the text quotes.

    A tracker's trajectory, and so every metric of a tracker or training run, follows the last bits
    of its convolutions, FFTs and exponentials, and those differ between CPUs (AVX2, AVX-512, ARM).
    Such numbers are therefore printed in cells nbval does not compare, and guarded by this instead:
    a student sees the number, CI still finds out when a tracker stops working as the text says.

    Args:
        what: the number's name in the message, e.g. ``"atom's AUC on VOT2015_bag"``.
        value: what the cell measured.
        quoted: the value the notebook's text (and committed output) quotes.
        tol: how far ``value`` may lie from ``quoted``; say in the notebook why it is that wide.
    Returns:
        ``value`` as a float, so the call can sit inside an expression.
    """
    value = float(value)
    if not np.isfinite(value) or abs(value - quoted) > tol:
        raise AssertionError(
            f"{what} is {value:.4g}, but this notebook's text says {quoted:g} ± {tol:g}. If you changed a "
            f"setting or an exercise above, that explains it; if not, the tracker no longer behaves as the "
            f"text describes: please report it.")
    return value
