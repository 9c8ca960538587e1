"""lib.pathfinder_checks on small generated sets: solver exact, shortcuts at chance,
shapes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lib.pathfinder import make_pathfinder  # noqa: E402
from lib.pathfinder_checks import (  # noqa: E402
    flood_fill_labels,
    marked_path_ink,
    marker_is_square,
    show_pathfinder_images,
    threshold_accuracy,
    window_ink,
)


@pytest.fixture(scope="module")
def data():
    return make_pathfinder(200, resolution=16, seed=3)


def test_threshold_accuracy_finds_a_perfect_rule():
    stat = np.r_[np.arange(10), np.arange(10)]
    labels = (stat >= 5).astype(int)
    assert threshold_accuracy(stat, labels) == (1.0, 1.0)
    assert threshold_accuracy(-stat, labels) == (1.0, 1.0)  # the sign is fitted too
    with pytest.raises(ValueError, match="same length"):
        threshold_accuracy([1, 2, 3], [0, 1])


def test_solver_and_statistics(data):
    assert (flood_fill_labels(data) == data.labels).all()
    assert marker_is_square(data)
    per_marker, unmarked = marked_path_ink(data)
    assert (
        per_marker.shape == (200, 2)
        and unmarked.shape == (200,)
        and (per_marker > 0).all()
    )
    ink = window_ink(data, w=1)
    assert ink.shape == (200,) and np.all(ink >= 18)  # two lit 3x3 squares at least
    with pytest.raises(ValueError, match="w must"):
        window_ink(data, w=-1)
    with pytest.raises(TypeError, match="PathfinderData"):
        window_ink(data.images)


def test_show_images(data):
    fig = show_pathfinder_images(data, per_class=3)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "connected"
    plt.close(fig)


def test_marker_path_masks(data):
    from lib.pathfinder_checks import marker_path_masks

    for i in range(5):
        ink, own = marker_path_masks(data, i)
        assert ink.shape == own.shape == (256,) and own.any() and not (own & ~ink).any()
        row, col = data.marker_coords[i, 0].tolist()
        assert not own[row * 16 + col]  # the marker square is left out
        other_row, other_col = data.marker_coords[i, 1].tolist()
        if data.labels[i] == 0:  # not connected: the other marker is on another path
            assert not own[other_row * 16 + other_col]
