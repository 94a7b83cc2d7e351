"""Drawing and the interactive views shared by the notebooks.

Every view is a plain function ``draw(**values) -> matplotlib Figure``; :func:`interactive_view`
wraps it in ipywidgets. Tests call the ``draw`` functions directly, and the notebook shows the
first figure before any slider moves, so it reads as a static page too.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .boxes import as_boxes

__all__ = ["COLOURS", "GROUND_TRUTH", "TRACKER_STYLES", "tracker_style", "draw_box", "show_frame",
           "interactive_view", "SequencePlayer"]

# Okabe & Ito's palette ("Color Universal Design", 2008): eight colours that stay apart for the
# common colour-vision deficiencies (no red against green)
_VERMILLION, _BLUE, _GREEN, _ORANGE = "#D55E00", "#0072B2", "#009E73", "#E69F00"
_PURPLE, _SKY, _YELLOW, _BLACK, _GREY = "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999"

#: the ground truth's colour in every figure (bluish green; no tracker uses it)
GROUND_TRUTH = _GREEN
#: colours for ground truth and then other boxes or curves, in order (colour-blind safe)
COLOURS = [GROUND_TRUTH, _VERMILLION, _BLUE, _ORANGE, _PURPLE, _SKY, _BLACK, _YELLOW]

#: one look per tracker in every plot of the course, (colour, line style): learned trackers solid,
#: the hand-crafted ones of acvm dashed, OpenCV's dotted; a variant shares its base's colour
TRACKER_STYLES = {
    "siamfc": (_VERMILLION, "-"), "siamrpn": (_BLUE, "-"), "mdnet": (_ORANGE, "-"), "atom": (_PURPLE, "-"),
    "d3s": (_SKY, "-"), "stark": (_BLACK, "-"), "stark-st": (_BLACK, "-."),
    "dcf": (_VERMILLION, "--"), "mosse": (_BLUE, "--"), "ncc": (_ORANGE, "--"), "particle": (_PURPLE, "--"),
    "opencv-csrt": (_BLACK, ":"), "opencv-kcf": (_SKY, ":"), "opencv-mosse": (_BLUE, ":"),
    "opencv-mil": (_PURPLE, ":"), "opencv-medianflow": (_ORANGE, ":"), "opencv-boosting": (_VERMILLION, ":"),
    "opencv-tld": (_GREY, ":"),
}


def tracker_style(name: str) -> dict:
    """``{"color", "linestyle"}`` of a tracker's curves and boxes, the same in every figure.

    A name outside :data:`TRACKER_STYLES` gets a colour of :data:`COLOURS` chosen by the name
    (stable between runs), never the ground truth's.
    """
    if name in TRACKER_STYLES:
        colour, ls = TRACKER_STYLES[name]
    else:
        import zlib
        colour, ls = COLOURS[1 + zlib.crc32(name.encode()) % (len(COLOURS) - 1)], "-"
    return {"color": colour, "linestyle": ls}


def draw_box(ax, box, colour: str = _VERMILLION, label: str | None = None, lw: float = 2.0, ls: str = "-"):
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
    """Show a frame with named boxes ``{label: box}``: the first label in the ground truth's colour,
    a tracker's name in its own colour (:func:`tracker_style`), other labels in :data:`COLOURS` order."""
    ax.imshow(image)
    for k, (label, box) in enumerate((boxes or {}).items()):
        colour = tracker_style(label)["color"] if k and label in TRACKER_STYLES else COLOURS[k % len(COLOURS)]
        draw_box(ax, box, colour, label)
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
