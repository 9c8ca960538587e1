"""Tests of lib.plotting: opaque figures, fixed kernel colours, loss curves, kernel heat
maps."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import same_color, to_rgba  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from lib.plotting import (  # noqa: E402
    KERNEL_COLORS,
    KERNEL_LABELS,
    kernel_color,
    new_figure,
    plot_kernel_matrix,
    plot_loss_curves,
    use_book_style,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_kernel_colours_fixed_and_distinct():
    assert KERNEL_COLORS["softmax"].upper() == "#0072B2"  # Okabe-Ito blue
    assert KERNEL_COLORS["gaussian"].upper() == "#D55E00"  # Okabe-Ito vermillion
    rgba = [to_rgba(c) for c in KERNEL_COLORS.values()]
    assert len(set(rgba)) == len(rgba)
    for name in ("softmax", "gaussian", "gaussian_normalized"):
        assert kernel_color(name) == KERNEL_COLORS[name]
        assert name in KERNEL_LABELS


def test_kernel_color_unknown():
    with pytest.raises(ValueError, match="unknown kernel 'foo'.*softmax.*gaussian"):
        kernel_color("foo")


def test_new_figure_is_opaque_white():
    fig, axes = new_figure(ncols=2, nrows=1, width=3, height=2)
    assert same_color(fig.get_facecolor(), "white") and fig.get_facecolor()[3] == 1.0
    assert len(axes) == 2
    assert tuple(fig.get_size_inches()) == pytest.approx((6.0, 2.0))
    for ax in axes:
        assert same_color(ax.get_facecolor(), "white") and ax.get_facecolor()[3] == 1.0


def test_saved_figure_has_no_transparent_pixel():
    fig, ax = new_figure()
    plot_loss_curves(ax, {"softmax": [[1.0, 0.5, 0.25]], "gaussian": [[1.0, 0.3, 0.1]]})
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=30)
    buffer.seek(0)
    image = imread(buffer)
    assert image.shape[-1] == 4
    assert float(image[..., 3].min()) == 1.0


def test_book_style_settings():
    use_book_style()
    assert same_color(matplotlib.rcParams["figure.facecolor"], "white")
    assert same_color(matplotlib.rcParams["savefig.facecolor"], "white")
    assert matplotlib.rcParams["savefig.transparent"] is False
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    assert same_color(cycle[0], KERNEL_COLORS["softmax"]) and same_color(
        cycle[1], KERNEL_COLORS["gaussian"])


def _runs(seed: int, count: int, length: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [
        list(np.exp(-0.1 * np.arange(length)) * (1 + 0.1 * rng.random()))
        for _ in range(count)
    ]


def test_loss_curves_one_line_per_kernel_in_its_colour():
    fig, ax = new_figure()
    curves = {
        "softmax": _runs(0, 5, 20),
        "gaussian": _runs(1, 5, 20),
        "gaussian_normalized": _runs(2, 1, 20)
    }
    plot_loss_curves(ax, curves)
    assert len(ax.lines) == 3
    for line, name in zip(ax.lines, curves):
        assert same_color(line.get_color(), KERNEL_COLORS[name])
        assert KERNEL_LABELS[name] in line.get_label()
    assert ax.get_yscale() == "log"
    # a band for each kernel with more than one run, in the kernel's colour
    assert len(ax.collections) == 2
    for band, name in zip(ax.collections, ("softmax", "gaussian")):
        assert same_color(band.get_facecolor()[0][:3], to_rgba(KERNEL_COLORS[name])[:3])
    assert ax.get_legend() is not None


def test_loss_curves_median_and_different_lengths():
    fig, ax = new_figure()
    runs = [[4.0, 2.0, 1.0, 0.5], [8.0, 4.0],
            [2.0, 1.0, 0.5]]  # early stops: padded with the last value
    plot_loss_curves(ax, {"softmax": runs})
    x, y = ax.lines[0].get_data()
    assert list(x) == [0, 1, 2, 3]
    padded = np.array([[4.0, 2.0, 1.0, 0.5], [8.0, 4.0, 4.0, 4.0], [2.0, 1.0, 0.5,
                                                                    0.5]])
    assert np.allclose(y, np.median(padded, axis=0))


def test_loss_curves_linear_scale_and_iqr_band():
    fig, ax = new_figure()
    plot_loss_curves(ax, {"gaussian": _runs(3, 8, 10)}, band="iqr", log=False)
    assert ax.get_yscale() == "linear"
    assert len(ax.lines) == 1 and len(ax.collections) == 1


def test_loss_curves_unknown_names_get_other_colours():
    fig, ax = new_figure()
    plot_loss_curves(ax, {"linear": [[1.0, 0.5]], "softmax": [[1.0, 0.4]]})
    assert not any(
        same_color(ax.lines[0].get_color(), c) for c in KERNEL_COLORS.values())
    assert same_color(ax.lines[1].get_color(), KERNEL_COLORS["softmax"])


def test_loss_curves_bad_band():
    fig, ax = new_figure()
    with pytest.raises(ValueError, match="band must be 'minmax' or 'iqr'"):
        plot_loss_curves(ax, {"softmax": [[1.0]]}, band="std")


def test_loss_curves_empty_run_list():
    fig, ax = new_figure()
    with pytest.raises(ValueError, match=r"curves\['softmax'\] is empty"):
        plot_loss_curves(ax, {"softmax": []})


def test_kernel_matrix_heat_map():
    fig, ax = new_figure()
    S = torch.softmax(torch.randn(5, 5, generator=torch.Generator().manual_seed(0)),
                      dim=-1)
    plot_kernel_matrix(ax, S, title="Softmax")
    assert len(ax.images) == 1
    assert np.allclose(ax.images[0].get_array(), S.numpy())
    assert ax.get_title() == "Softmax"
    assert len(fig.axes) == 2  # the colour bar
    fig2, ax2 = new_figure()
    plot_kernel_matrix(ax2, np.eye(3), cbar=False, vmax=2.0)
    assert len(fig2.axes) == 1 and ax2.images[0].get_clim() == (0.0, 2.0)


@pytest.mark.parametrize("shape", [(3, 4), (3,), (2, 3, 3)])
def test_kernel_matrix_rejects_non_square(shape):
    fig, ax = new_figure()
    with pytest.raises(ValueError, match="S must be a square"):
        plot_kernel_matrix(ax, np.ones(shape))


def test_plot_seed_band_draws_mean_and_t_band():
    from lib.plotting import new_figure, plot_seed_band
    from lib.seed_stats import mean_interval

    runs = np.array([[0.5, 0.7, 0.8], [0.5, 0.6, 0.9], [0.5, 0.65, 0.85]])
    fig, ax = new_figure()
    plot_seed_band(ax, [0, 10, 20], runs, "gaussian")
    (line,) = ax.get_lines()
    assert np.allclose(line.get_ydata(),
                       runs.mean(0)) and "mean of 3" in line.get_label()
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    _, lo, hi = mean_interval(runs)
    assert np.isclose(band.min(), lo.min()) and np.isclose(band.max(), hi.max())
    fig2, ax2 = new_figure()
    plot_seed_band(ax2, [0, 10, 20], runs[:1], "softmax")
    assert not ax2.collections
    plt.close(fig)
    plt.close(fig2)


def test_plot_test_curves():
    from lib.plotting import plot_test_curves

    runs = np.array([[0.5, 0.7, 0.8], [0.5, 0.6, 0.9]])
    fig = plot_test_curves([0, 1, 2], {
        "softmax": runs,
        "gaussian": runs
    }, {"softmax": 1 - runs}, "t")
    ax_acc, ax_loss = fig.axes
    assert len(
        ax_acc.get_lines()) == 3 and len(ax_loss.get_lines()) == 2  # curves + chance
    assert np.isclose(ax_loss.get_lines()[-1].get_ydata()[0], np.log(2))
    assert fig._suptitle.get_text() == "t"
    plt.close(fig)


def test_plot_log_contours_shares_one_scale():
    from lib.plotting import plot_log_contours

    a = np.linspace(-1, 1, 9)
    bowl = 1 + a[:, None] ** 2 + a[None, :] ** 2
    fig, axes = plot_log_contours([("one", "#000000", a, bowl),
                                   ("two", "#0072B2", a, 3 * bowl)], (-1, 1), "alpha",
                                  "beta", marks=[(-1, -1, "wo")])
    assert len(
        axes) == 2 and axes[0].get_title() == "one" and axes[1].get_xlabel() == "alpha"
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert fig.get_facecolor()[3] == 1.0
    with pytest.raises(ValueError, match="at least one"):
        plot_log_contours([], (-1, 1), "a", "b")
