"""Tests of lib.pathfinder: labels, an independent check of the labels from the pixels,
speed."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy import ndimage

from lib.pathfinder import PathfinderData, make_pathfinder


@pytest.fixture(scope="module")
def data32() -> PathfinderData:
    return make_pathfinder(400, seed=3)


def pixel_labels(data: PathfinderData) -> tuple[np.ndarray, np.ndarray]:
    """From the pixels alone: dilate the ink by a square of radius ``bridge_radius``
    (joins the dashes of a path), take 8-connected components; connected = both
    markers in one component. Returns (connected (N,) bool, number of components
    (N,))."""
    r = data.bridge_radius
    square = np.ones((2 * r + 1, 2 * r + 1), dtype=bool)
    connected, counts = [], []
    for img, (a, b) in zip(data.images.numpy(), data.marker_coords.numpy()):
        comp, n = ndimage.label(ndimage.binary_dilation(img > 0.5, structure=square),
                                structure=np.ones((3, 3)))
        connected.append(comp[a[0], a[1]] > 0 and comp[a[0], a[1]] == comp[b[0], b[1]])
        counts.append(n)
    return np.array(connected), np.array(counts)


def test_shapes_types_values(data32):
    n = len(data32)
    assert n == 400 and data32.resolution == 32
    assert data32.images.shape == (n, 32, 32) and data32.images.dtype == torch.float32
    assert data32.labels.shape == (n,) and data32.labels.dtype == torch.long
    assert data32.marker_paths.shape == (n,
                                         2) and data32.marker_paths.dtype == torch.long
    assert data32.marker_coords.shape == (n, 2, 2) and data32.num_paths.shape == (n,)
    assert set(data32.images.unique().tolist()) <= {0.0, 1.0}
    assert 0.0 <= data32.images.min() and data32.images.max() <= 1.0
    seq = data32.as_sequences()
    assert seq.shape == (n, 1024, 1) and torch.equal(seq[:, :, 0],
                                                     data32.images.reshape(n, -1))
    assert "N=400" in repr(data32)


def test_patch_sequences(data32):
    n = len(data32)
    patches = data32.as_sequences(patch=4)
    assert patches.shape == (n, 64, 16)
    # token t = 8 * (row block) + (column block); inside it, row-major pixels
    for t, (i, j, k) in enumerate([(0, 0, 0), (0, 5, 7), (1, 2, 3)]):
        token = 8 * i + j
        assert torch.equal(patches[:, token, 4 * (k // 4) + k % 4],
                           data32.images[:, 4 * i + k // 4, 4 * j + k % 4])
    assert torch.equal(patches.sum((1, 2)), data32.images.sum((1, 2)))
    assert torch.equal(data32.as_sequences(patch=1), data32.as_sequences())
    for bad in (3, 0, 64, 2.0):
        with pytest.raises((ValueError, TypeError), match="patch"):
            data32.as_sequences(patch=bad)


def test_exact_balance():
    assert make_pathfinder(200, seed=1).labels.sum().item() == 100
    assert make_pathfinder(7, seed=1).labels.sum().item() == 3
    labels = make_pathfinder(200, seed=1).labels
    assert 0 < labels[:100].sum().item() < 100  # shuffled, not sorted


def test_labels_agree_with_marker_paths(data32):
    mp = data32.marker_paths
    assert torch.equal(data32.labels, (mp[:, 0] == mp[:, 1]).long())
    assert ((mp >= 0) & (mp[:, :1] < data32.num_paths[:, None])).all()
    assert (data32.num_paths >= 2).all()  # the two main curves
    assert (mp.min(dim=1).values == 0).all()  # the first marker is always on curve 0


def test_labels_agree_with_the_pixels_exactly(data32):
    # The rendering keeps different paths >= 2 r + 2 px apart and the dashes of one path
    # <= 2 r + 1 px apart, so the pixel-derived label must agree on every image
    # (tolerance 0).
    connected, counts = pixel_labels(data32)
    assert np.array_equal(connected, data32.labels.numpy().astype(bool))
    assert np.array_equal(counts,
                          data32.num_paths.numpy())  # one component per path drawn


def test_markers_are_discs_at_the_recorded_places(data32):
    imgs, coords = data32.images.numpy(), data32.marker_coords.numpy()
    for img, pts in zip(imgs[:100], coords[:100]):
        for r, c in pts:
            assert 1 <= r <= 30 and 1 <= c <= 30
            assert img[r - 1:r + 2,
                       c - 1:c + 2].all()  # a 3x3 disc (radius 1.5) at 32x32


def test_marker_distance_does_not_predict_the_label():
    data = make_pathfinder(2000, seed=5)
    c = data.marker_coords.numpy().astype(float)
    dist = np.linalg.norm(c[:, 0] - c[:, 1], axis=1)
    y = data.labels.numpy()
    best = best_threshold_accuracy(dist, y)
    assert best < 0.6, f"a threshold on the marker distance reaches accuracy {best:.3f}"


def marked_path_ink(data: PathfinderData) -> np.ndarray:
    """Ink pixels of the path leaving the first marker, its own marker discs not
    counted: the 8-connected piece of the dilated ink that holds the marker, minus
    the disc pixels. (N,)"""
    r = data.bridge_radius
    square = np.ones((2 * r + 1, 2 * r + 1), dtype=bool)
    out = []
    for img, pts in zip(data.images.numpy(), data.marker_coords.numpy()):
        comp, _ = ndimage.label(ndimage.binary_dilation(img > 0.5, structure=square),
                                structure=np.ones((3, 3)))
        piece = (comp == comp[pts[0, 0], pts[0, 1]]) & (img > 0.5)
        for row, col in pts:
            piece[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = False
        out.append(piece.sum())
    return np.array(out)


def best_threshold_accuracy(feature: np.ndarray, y: np.ndarray) -> float:
    return max(max(((feature < t) == y).mean(), ((feature >= t) == y).mean())
               for t in np.unique(feature))


@pytest.mark.parametrize("resolution", [16, 32])
def test_length_of_the_marked_path_does_not_depend_on_the_label(resolution):
    # Each marker sits on a main curve of path_length points in both classes, so
    # the ink of the
    # path leaving a marker (a local cue: it needs no look at the other marker)
    # has nearly the
    # same mean in both. Paths have a fixed length, so this feature is almost
    # deterministic;
    # what differs is only that a connected curve's far end lies under the second
    # disc, which
    # hides one or two of its pixels. A design with cut negatives (marked pieces
    # of 1/4 to 1/2
    # of the curve) gave differences of 4.5 (16x16) and 9.3 (32x32) pixels here.
    data = make_pathfinder(1000, resolution=resolution, seed=6)
    y = data.labels.numpy()
    ink = marked_path_ink(data)
    gap = abs(ink[y == 1].mean() - ink[y == 0].mean())
    assert (
        gap < 2.0
    ), f"mean ink of the marked path differs by {gap:.2f} pixels between classes"
    total = data.images.flatten(1).sum(1).numpy()
    best_total = best_threshold_accuracy(total, y)
    assert (
        best_total < 0.6
    ), f"the total ink predicts the label with accuracy {best_total:.3f}"


def test_deterministic_per_seed_and_seeds_differ():
    a, b = make_pathfinder(50, seed=7), make_pathfinder(50, seed=7)
    for field in ("images", "labels", "marker_paths", "marker_coords", "num_paths"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    c = make_pathfinder(50, seed=8)
    assert not torch.equal(a.images, c.images)
    assert (a.images != c.images).flatten(1).any(1).all()  # every image differs


def test_resolution_64():
    data = make_pathfinder(100, resolution=64, seed=2)
    assert data.images.shape == (100, 64, 64) and data.as_sequences().shape == (100,
                                                                                4096, 1)
    assert data.labels.sum().item() == 50
    connected, counts = pixel_labels(data)
    assert np.array_equal(connected, data.labels.numpy().astype(bool))
    assert np.array_equal(counts, data.num_paths.numpy())


def test_larger_gaps_need_a_larger_bridge():
    data = make_pathfinder(100, resolution=48, gap_length=3, seed=4)
    assert data.bridge_radius == 2
    connected, _ = pixel_labels(data)
    assert np.array_equal(connected, data.labels.numpy().astype(bool))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_images=0), ValueError, "num_images"),
        (dict(num_images=-5), ValueError, "num_images"),
        (dict(num_images=2.5), TypeError, "num_images"),
        (dict(num_images=True), TypeError, "num_images"),
        (dict(num_images=10, resolution=8), ValueError, "resolution"),
        (dict(num_images=10, resolution=32.0), TypeError, "resolution"),
        (dict(num_images=10, seed=-1), ValueError, "seed"),
        (dict(num_images=10, path_length=2), ValueError, "path_length"),
        (dict(num_images=10, path_length=200), ValueError, "path_length"),
        (dict(num_images=10, max_tries=0), ValueError, "max_tries"),
        (dict(num_images=10, marker_radius=5.0), ValueError, "marker_radius"),
        (dict(num_images=10, num_distractors=-1), ValueError, "num_distractors"),
        (dict(num_images=10, curvature="0.2"), TypeError, "curvature"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    n = kwargs.pop("num_images")
    with pytest.raises(error, match=match):
        make_pathfinder(n, **kwargs)


def test_unplaceable_curves_raise_a_clear_error():
    with pytest.raises(RuntimeError, match="max_tries=1"):
        make_pathfinder(200, resolution=16, path_length=20, max_tries=1, seed=0)


def test_markers_are_3x3_discs_at_16x16():
    data = make_pathfinder(100, resolution=16, seed=2)
    for img, pts in zip(data.images.numpy(), data.marker_coords.numpy()):
        for r, c in pts:
            assert img[r - 1:r + 2, c - 1:c + 2].all()
    connected, counts = pixel_labels(data)
    assert np.array_equal(connected, data.labels.numpy().astype(bool))
    assert np.array_equal(counts, data.num_paths.numpy())



def test_difficulty_knob():
    from lib.pathfinder_checks import flood_fill_labels

    hard = make_pathfinder(60, resolution=16, seed=3)
    assert torch.equal(hard.images,
                       make_pathfinder(60, resolution=16, seed=3,
                                       difficulty="hard").images)
    for name, length in (("easy", 6), ("medium", 10)):
        data = make_pathfinder(300, resolution=16, seed=3, difficulty=name)
        assert (data.num_paths == 2).all() and data.bridge_radius == 0  # solid lines
        assert data.labels.sum() == 150
        assert (flood_fill_labels(data) == data.labels.numpy()).all()
        # explicit arguments override the preset
        more = make_pathfinder(50, resolution=16, seed=3, difficulty=name,
                               num_distractors=1, path_length=length + 1)
        assert (more.num_paths <= 3).all()
    easy = make_pathfinder(300, resolution=16, seed=3, difficulty="easy")
    ink_easy = easy.images.sum((1, 2)).mean()
    assert ink_easy < hard.images.sum((1, 2)).mean()
    with pytest.raises(ValueError, match="difficulty"):
        make_pathfinder(10, resolution=16, difficulty="trivial")
