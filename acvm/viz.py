"""Drawing and the interactive views shared by the notebooks.

Every view is a plain function ``draw(**values) -> matplotlib Figure``; :func:`interactive_view`
wraps it in ipywidgets. Tests call the ``draw`` functions directly, and the notebook shows the
first figure before any slider moves, so it reads as a static page too.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .boxes import as_boxes

__all__ = ["COLOURS", "draw_box", "show_frame", "interactive_view", "SequencePlayer"]

#: colours for ground truth and trackers, in order
COLOURS = ["#00c853", "#ff1744", "#2979ff", "#ffab00", "#d500f9", "#00e5ff", "#ff6d00", "#76ff03"]


def draw_box(ax, box, colour: str = "#ff1744", label: str | None = None, lw: float = 2.0, ls: str = "-"):
    """Draw one xywh box on a matplotlib axes (image coordinates: pixel i spans [i, i+1))."""
    import matplotlib.patches as patches
    x, y, w, h = as_boxes(box)
    if not np.isfinite([x, y, w, h]).all():
        return None
    # imshow puts pixel i's centre at i, so its left edge is at i - 0.5
    rect = patches.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, lw=lw, ls=ls, label=label)
    ax.add_patch(rect)
    return rect


def show_frame(ax, image: np.ndarray, boxes: dict | None = None, title: str | None = None):
    """Show a frame with named boxes ``{label: box}``; the first label is drawn in green (ground truth)."""
    ax.imshow(image)
    for k, (label, box) in enumerate((boxes or {}).items()):
        draw_box(ax, box, COLOURS[k % len(COLOURS)], label)
    if boxes:
        ax.legend(loc="upper right", fontsize="small", framealpha=0.7)
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def interactive_view(draw: Callable, **controls):
    """Wrap ``draw(**values) -> Figure`` in widgets: one control per keyword (ipywidgets objects).

    The first figure is drawn at once. Returns the ``VBox`` (controls above the figure); its
    ``.update(**values)`` redraws, which is what moving a control calls.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    out = widgets.Output()

    def update(**values):
        current = {k: c.value for k, c in controls.items()}
        current.update(values)
        fig = draw(**current)
        # set the Output's content through its state rather than capturing the kernel's output
        # stream: capturing ties the widget to one execution request, which stalls headless runs.
        # One assignment, not clear-then-append: the browser then never shows an empty view,
        # which made the page jump while a slider moved
        from IPython.core.interactiveshell import InteractiveShell
        data, metadata = InteractiveShell.instance().display_formatter.format(fig)
        out.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)
        plt.close(fig)
        return fig

    for c in controls.values():
        c.continuous_update = False
        c.observe(lambda change: update(), names="value")
    box = widgets.VBox([widgets.HBox(list(controls.values())), out])
    box.update = update
    update()
    return box


class SequencePlayer:
    """A sequence with its ground truth and any tracker boxes, frame by frame.

    ``tracks`` maps a label to an ``(N, 4)`` array of boxes (one per frame). ``draw(frame)`` is the
    callback; ``widget()`` adds a frame slider.
    """

    def __init__(self, sequence, tracks: dict[str, np.ndarray] | None = None, figsize=(6, 4.5)):
        self.sequence = sequence
        self.tracks = {"ground truth": np.asarray(sequence.boxes)}
        self.tracks.update({k: np.asarray(v) for k, v in (tracks or {}).items()})
        self.figsize = figsize

    def draw(self, frame: int = 0):
        import matplotlib.pyplot as plt
        if not 0 <= frame < len(self.sequence):
            raise IndexError(f"frame {frame} is out of range for {self.sequence.name!r} ({len(self.sequence)} frames)")
        fig, ax = plt.subplots(figsize=self.figsize)
        boxes = {label: b[frame] for label, b in self.tracks.items() if frame < len(b)}
        show_frame(ax, self.sequence[frame], boxes, f"{self.sequence.name}, frame {frame}")
        fig.tight_layout()
        return fig

    def widget(self):
        import ipywidgets as widgets
        slider = widgets.IntSlider(0, 0, len(self.sequence) - 1, description="frame")
        return interactive_view(self.draw, frame=slider)
