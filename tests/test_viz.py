"""acvm.viz: one colour-blind-safe look per tracker in every figure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from acvm.evaluation import PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS, plot_precision, plot_success  # noqa: E402
from acvm.registry import available_trackers  # noqa: E402
from acvm.viz import COLOURS, GROUND_TRUTH, TRACKER_STYLES, show_frame, tracker_style  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design", the published values, plus a neutral grey
OKABE_ITO = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}


def test_every_tracker_has_its_own_colour_blind_safe_look():
    names = set(available_trackers(include_opencv=True))
    assert names <= set(TRACKER_STYLES), f"trackers without a style: {sorted(names - set(TRACKER_STYLES))}"
    looks = [TRACKER_STYLES[n] for n in sorted(names)]
    assert len(set(looks)) == len(looks), "two trackers share a colour and a line style"
    assert {c for c, _ in TRACKER_STYLES.values()} <= OKABE_ITO | {"#999999"}
    assert set(COLOURS) <= OKABE_ITO
    assert all(c != GROUND_TRUTH for c, _ in TRACKER_STYLES.values()), "a tracker is drawn like the ground truth"
    # a name the table does not know still gets a stable colour, never the ground truth's
    assert tracker_style("my-tracker") == tracker_style("my-tracker")
    assert tracker_style("my-tracker")["color"] in COLOURS[1:]


def test_plots_and_frames_draw_each_tracker_in_its_colour():
    fig, (a, b, c) = plt.subplots(1, 3)
    curves = {"siamfc": np.linspace(1, 0, len(SUCCESS_THRESHOLDS)), "dcf": np.linspace(0.9, 0, len(SUCCESS_THRESHOLDS))}
    plot_success(curves, a)
    plot_precision({k: np.linspace(0, 1, len(PRECISION_THRESHOLDS)) for k in curves}, b)
    for ax in (a, b):
        drawn = {line.get_label().split(" [")[0]: (line.get_color(), line.get_linestyle()) for line in ax.lines}
        assert drawn == {"siamfc": ("#D55E00", "-"), "dcf": ("#D55E00", "--")}
    show_frame(c, np.zeros((20, 20, 3), np.uint8), {"ground truth": [1, 1, 5, 5], "siamrpn": [2, 2, 5, 5], "mine": [3, 3, 5, 5]})
    edges = [matplotlib.colors.to_hex(p.get_edgecolor()).upper() for p in c.patches]
    assert edges == [GROUND_TRUTH, TRACKER_STYLES["siamrpn"][0], COLOURS[2]]
    plt.close(fig)
