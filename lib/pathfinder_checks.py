"""Checks of generated Pathfinder images (``lib.pathfinder``): shortcuts, ink
statistics, a solver.

    held_out, in_sample = threshold_accuracy(statistic, labels)   # best threshold
    rule, half/half marker_is_square(data)            # every marker centre has a
    lit 3x3 square around it per_marker, unmarked = marked_path_ink(data)   # ink of
    each marker's path, of the unmarked one window_ink(data, w=3)             # ink
    in the (2w+1)^2 windows at the two markers, summed flood_fill_labels(data)
    # the label recovered from the pixels and marker positions fig =
    show_pathfinder_images(data, per_class=5)

A model that solves Pathfinder must follow the curves; these functions check that
nothing simpler (marker distance, total ink, local ink) predicts the label, and that the
label is recoverable.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .pathfinder import PathfinderData
from .plotting import new_figure

__all__ = [
    "threshold_accuracy",
    "marker_is_square",
    "marked_path_ink",
    "window_ink",
    "flood_fill_labels",
    "show_pathfinder_images",
    "marker_path_masks",
]


def _check_data(data: object) -> PathfinderData:
    if not isinstance(data, PathfinderData):
        raise TypeError(
            f"data must be a lib.pathfinder.PathfinderData, got {type(data).__name__}"
        )
    return data


def threshold_accuracy(stat: object, labels: object) -> tuple[float, float]:
    """Best threshold rule ("label 1 when sign * (stat - t) >= 0") fitted on the
    first half of the
    samples: (accuracy on the second half, accuracy on the first half). stat,
    labels: (N,), N >= 2.
    """
    stat, labels = np.asarray(stat, dtype=float), np.asarray(labels)
    if stat.ndim != 1 or stat.shape != labels.shape or len(stat) < 2:
        raise ValueError(
            f"stat and labels must be 1-D of the same length >= 2, got {stat.shape},"
            f" {labels.shape}"
        )
    half = len(stat) // 2
    s_fit, y_fit, s_test, y_test = (
        stat[:half],
        labels[:half],
        stat[half:],
        labels[half:],
    )
    best, rule = -1.0, (0.0, 1)
    for t in np.unique(s_fit):
        for sign in (1, -1):
            acc = float(np.mean((sign * (s_fit - t) >= 0) == y_fit))
            if acc > best:
                best, rule = acc, (t, sign)
    t, sign = rule
    return float(np.mean((sign * (s_test - t) >= 0) == y_test)), best


def marker_is_square(data: PathfinderData) -> bool:
    """Are all 3x3 pixels around every marker centre lit?"""
    data = _check_data(data)
    (n, _, _), R = data.marker_coords.shape, data.resolution
    rows = data.marker_coords[..., 0, None, None] + torch.arange(-1, 2)[:, None]
    cols = data.marker_coords[..., 1, None, None] + torch.arange(-1, 2)[None, :]
    values = data.images[
        torch.arange(n)[:, None, None, None], rows.clamp(0, R - 1), cols.clamp(0, R - 1)
    ]
    return bool((values == 1).all())


def _components(image: np.ndarray, r: int) -> tuple[np.ndarray, int]:
    """8-connected pieces of the ink after a dilation by a (2r+1) square (the paths)."""
    square = np.ones((2 * r + 1, 2 * r + 1), dtype=bool)
    return ndimage.label(
        ndimage.binary_dilation(image > 0.5, structure=square),
        structure=np.ones((3, 3)),
    )


def marked_path_ink(data: PathfinderData) -> tuple[np.ndarray, np.ndarray]:
    """Ink of each marker's own path with both marker squares removed: (N, 2); and
    the ink of the largest path that carries no marker: (N,). Paths are the pieces
    of ``_components``.
    """
    data = _check_data(data)
    per_marker, unmarked = [], []
    for image, marks in zip(data.images.numpy(), data.marker_coords.numpy()):
        components, n = _components(image, data.bridge_radius)
        clean = image > 0.5
        for row, col in marks:
            clean[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = False
        own = [components[row, col] for row, col in marks]
        sizes = np.bincount(components[clean], minlength=n + 1)
        per_marker.append(sizes[own])
        sizes[own], sizes[0] = 0, 0
        unmarked.append(sizes.max())
    return np.array(per_marker), np.array(unmarked)


def window_ink(data: PathfinderData, w: int = 3) -> np.ndarray:
    """Ink in the (2w + 1) x (2w + 1) window around each marker, summed over the two
    markers: (N,)."""
    data = _check_data(data)
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
        raise ValueError(f"w must be a non-negative integer, got {w!r}")
    padded = torch.nn.functional.pad(data.images, (w, w, w, w))
    rows, cols = data.marker_coords[..., 0], data.marker_coords[..., 1]
    total = torch.zeros(len(data))
    for dy in range(2 * w + 1):
        for dx in range(2 * w + 1):
            total += padded[torch.arange(len(data))[:, None], rows + dy, cols + dx].sum(
                1
            )
    return total.numpy()


def flood_fill_labels(data: PathfinderData) -> torch.Tensor:
    """1 where both marker centres fall in the same path piece (``_components``),
    else 0: (N,)."""
    data = _check_data(data)
    out = []
    for image, (a, b) in zip(data.images.numpy(), data.marker_coords.numpy()):
        components, _ = _components(image, data.bridge_radius)
        out.append(int(components[tuple(a)] == components[tuple(b)]))
    return torch.tensor(out)


def show_pathfinder_images(data: PathfinderData, per_class: int, title_size: int = 9):
    """Grid of images: first row connected, second row not connected; ink is black.
    Returns the figure."""
    data = _check_data(data)
    fig, axes = new_figure(per_class, 2, width=1.45, height=1.6, squeeze=False)
    for row, label in enumerate((1, 0)):
        idx = torch.nonzero(data.labels == label).flatten()[:per_class]
        for ax, i in zip(axes[row], idx.tolist()):
            ax.imshow(
                data.images[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_title(
                "connected" if label == 1 else "not connected", fontsize=title_size
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("0.6")
    fig.tight_layout()
    return fig


def marker_path_masks(
    data: PathfinderData, i: int, marker: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major masks (R*R,) of image i: all ink, and the ink of the path carrying
    ``marker`` (its piece of ``_components``) without that marker's 3x3 square."""
    data = _check_data(data)
    R = data.resolution
    image = data.images[i]
    row, col = data.marker_coords[i, marker].tolist()
    components, _ = _components(image.numpy(), data.bridge_radius)
    ink = image.flatten() > 0.5
    rr, cc = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    square = (((rr - row).abs() <= 1) & ((cc - col).abs() <= 1)).flatten()
    own = ink & torch.from_numpy(components == components[row, col]).flatten() & ~square
    return ink, own
