"""lib.kernel_figures: the panels, their contents and opaque backgrounds; bad inputs."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.attention import gaussian_kernel, softmax_kernel  # noqa: E402
from lib.kernel_figures import (kernel_explorer_figure, plot_outputs_and_hull,  # noqa
                                plot_scale_sweep, plot_tokens_and_kernels)
from lib.plotting import KERNEL_COLORS  # noqa: E402
from lib.tokens import make_tokens  # noqa: E402

TOKENS = make_tokens("two clusters", 3.0)


def test_tokens_and_kernels():
    S = softmax_kernel(TOKENS, TOKENS)
    fig = plot_tokens_and_kernels(TOKENS, {"Softmax": S, "Gaussian": gaussian_kernel(
        TOKENS, TOKENS)}, title="tokens", numbered=True)
    axes = fig.axes[:3]
    assert [ax.get_title() for ax in axes] == ["tokens", "Softmax", "Gaussian"]
    assert len(axes[0].texts) == 12  # every token numbered
    assert np.allclose(axes[1].images[0].get_array(), S.numpy())
    assert fig.get_facecolor()[3] == 1.0
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one"):
        plot_tokens_and_kernels(TOKENS, {})
    with pytest.raises(ValueError, match="tokens must have shape"):
        plot_tokens_and_kernels(torch.zeros(4, 3, dtype=torch.float64), {"S": S})


def test_scale_sweep_shares_one_colour_scale():
    sweep = {c: (softmax_kernel(c * TOKENS, c * TOKENS),
                 gaussian_kernel(c * TOKENS, c * TOKENS)) for c in (0.5, 2.0)}
    fig = plot_scale_sweep(sweep)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 4 and all(im.get_clim() == (0.0, 1.0) for im in images)
    assert fig.axes[0].get_title() == "scale c = 0.5"
    plt.close(fig)
    with pytest.raises(ValueError, match="one matrix per kernel"):
        plot_scale_sweep({1.0: (sweep[0.5][0],)})


def test_outputs_and_hull():
    V = TOKENS + torch.tensor([0.0, 3.0], dtype=torch.float64)
    outputs = {"softmax": softmax_kernel(TOKENS, TOKENS) @ V,
               "gaussian": gaussian_kernel(TOKENS, TOKENS) @ V}
    fig = plot_outputs_and_hull(V, outputs)
    left = fig.axes[0]
    colours = [tuple(c.get_facecolor()[0][:3]) for c in left.collections[1:]]
    assert colours == [matplotlib.colors.to_rgb(KERNEL_COLORS[k])
                           for k in outputs]
    assert len(fig.axes[1].texts) == 1  # the far query marked
    plt.close(fig)


def test_explorer_figure_titles_follow_the_controls():
    fig = kernel_explorer_figure(scale=2.0, gamma_factor=4.0, geometry="ring")
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles[1] == "Softmax, temperature 0.25"
    assert titles[2].startswith("Gaussian, bandwidth 5.6")  # 4 * 4 / (2 sqrt 2)
    plt.close(fig)
