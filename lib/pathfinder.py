"""Procedural Pathfinder images (Linsley et al., 2018; the Long Range Arena 32x32 task).

Each image shows dashed, smoothly curving paths and two circular markers. The label is 1
("connected") when the two markers sit on the two ends of the same path, 0 when they sit
on ends of two different paths. Every image has the same ingredients whatever its label:
two *main* curves of the same length and up to ``num_distractors`` shorter distractor
paths, which never carry a marker. The two main curves are drawn in the same way in both
classes (the second one starts where the first one starts, moved by the end-to-end
displacement of an independent curve of the same law), so the unmarked images of the two
classes have the same distribution. The first marker is on the start of curve 0; the
second on the other end of curve 0 (connected) or on the start of curve 1 (not
connected). So neither the marker distance, nor the number or lengths of the paths, nor
the length of the path leaving a marker tells the classes apart; only following the
curve from one marker does.

Rendering rules (these make the label recoverable from the pixels, exactly):

* a path is a chain of points one pixel apart (a heading that turns by a small random
angle at
  each step), rounded to pixels; it is drawn as dashes: ``dash_length`` points on, then
  ``gap_length`` points off, with a random phase;
* so two consecutive drawn pixels of one path are at most ``gap_length + 1`` apart
(Chebyshev
  distance), and a dilation by a square of radius ``bridge_radius = ceil(gap_length /
  2)`` joins each path into one 8-connected piece;
* different paths (with their marker discs) are placed at least ``2 * bridge_radius +
2``
  pixels apart (Chebyshev), so after that dilation they stay separate pieces. A
  distractor that cannot be placed after a few tries is left out (``num_paths``
  records what was drawn).

The images are binary (0 background, 1 ink), float32. As a sequence model's input, read
an image row by row as ``resolution**2`` pixel tokens with one channel:
``data.as_sequences()`` of shape (N, resolution**2, 1) (LRA: 1,024 tokens at 32x32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .validation import check_choice, check_int, check_number, check_seed

__all__ = ["DIFFICULTIES", "PathfinderData", "make_pathfinder"]

# The difficulty knob: path length, distractors and gaps (defaults of make_pathfinder,
# as multiples of s = resolution / 32), after the original task's versions that differ
# in contour length. "hard" is the Long Range Arena-like default.
DIFFICULTIES = {
    "easy": dict(path_length=12, num_distractors=0, gap_length=0),
    "medium": dict(path_length=20, num_distractors=0, gap_length=0),
    "hard": dict(path_length=24, num_distractors=2, gap_length=1),
}

_CHUNK = 4096  # images generated at once (bounds the memory of the vectorised steps)
_MIN_RESOLUTION = 16


@dataclass
class PathfinderData:
    """Pathfinder images and their record.

    images: (N, R, R) float32 in [0, 1]; labels: (N,) long, 1 = connected;
    marker_paths: (N, 2) long, the path carrying each marker (0 and 1 are the main
    paths);
    marker_coords: (N, 2, 2) long, (row, col) of each marker's centre;
    num_paths: (N,) long, paths drawn (2 main + distractors placed);
    bridge_radius: radius of the square dilation that joins the dashes of one path.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    marker_paths: torch.Tensor = field(repr=False)
    marker_coords: torch.Tensor = field(repr=False)
    num_paths: torch.Tensor = field(repr=False)
    resolution: int
    bridge_radius: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def as_sequences(self, patch: int = 1) -> torch.Tensor:
        """The images as token sequences in row-major order.

        patch = 1: one token per pixel, (N, resolution**2, 1) float32 (as in the Long
        Range Arena). patch = p > 1: one token per p x p square of pixels (as in a
        vision Transformer), its pixels in row-major order: (N, (resolution / p)**2,
        p * p); p must divide the resolution.
        """
        p = check_int(patch, "patch", 1, self.resolution)
        if self.resolution % p:
            raise ValueError(
                f"patch must divide the resolution {self.resolution}, got {p}")
        n, g = len(self), self.resolution // p
        tiles = self.images.reshape(n, g, p, g, p).permute(0, 1, 3, 2, 4)
        return tiles.reshape(n, g * g, p * p)

    def __repr__(self) -> str:
        return (
            f"PathfinderData(N={len(self)}, resolution={self.resolution}, "
            f"connected={int(self.labels.sum())}, bridge_radius={self.bridge_radius})"
        )


def _disc_offsets(radius: float) -> np.ndarray:
    """Integer (drow, dcol) offsets of a filled disc: (D, 2)."""
    r = int(math.floor(radius))
    d = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    keep = dy**2 + dx**2 <= radius**2 + 1e-9
    return np.stack([dy[keep], dx[keep]], axis=1)


def _random_curves(rng: np.random.Generator, m: int, length: int,
                   sigma: float) -> np.ndarray:
    """m random curves of ``length`` points 1 px apart, starting at the origin: (m,
    length, 2) float (row, col). The heading starts uniform and turns by N(0,
    sigma^2) (clipped) per point."""
    theta0 = rng.uniform(0.0, 2.0 * math.pi, size=(m, 1))
    turns = np.clip(rng.normal(0.0, sigma, size=(m, length - 2)), -2.5 * sigma,
                    2.5 * sigma)
    heading = theta0 + np.concatenate([np.zeros(
        (m, 1)), np.cumsum(turns, axis=1)], axis=1)
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=-1)  # (m, length-1, 2)
    return np.concatenate([np.zeros((m, 1, 2)), np.cumsum(steps, axis=1)], axis=1)


def _to_pixels(pos: np.ndarray) -> np.ndarray:
    # floor(x + 1/2), not np.rint: points 1 px apart then land on pixels at most 1 apart
    return np.floor(pos + 0.5).astype(np.int64)


def _random_paths(rng: np.random.Generator, m: int, length: int, sigma: float, res: int,
                  margin: int) -> tuple[np.ndarray, np.ndarray]:
    """m random curves of ``length`` points 1 px apart, placed uniformly inside the
    image.

    Returns pixels (m, length, 2) int (row, col) in [margin, res-1-margin], and fits
    (m,) bool (False where the curve's bounding box is wider than the image allows:
    resample those).
    """
    rel = _random_curves(rng, m, length, sigma)
    lo, hi = rel.min(axis=1), rel.max(axis=1)
    room = (res - 1 - 2 * margin) - (hi - lo)  # (m, 2)
    fits = (room >= 0).all(axis=1)
    offset = margin + rng.uniform(0.0, 1.0, size=(m, 2)) * np.clip(room, 0.0, None)
    pix = _to_pixels(rel - lo[:, None, :] + offset[:, None, :])
    np.clip(pix, margin, res - 1 - margin, out=pix)  # only moves curves that do not fit
    return pix, fits


def _random_pair(rng: np.random.Generator, m: int, length: int, sigma: float, res: int,
                 margin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m pairs of random curves: curve 1 starts at curve 0's start plus the end-to-end
    displacement of an independent "ghost" curve of the same law; the pair is then
    placed uniformly (integer offset) inside the image.

    Returns pixels of curve 0 and curve 1, each (m, length, 2) int in [margin,
    res-1-margin], and fits (m,) bool (False where the pair, or the ghost, is wider
    than the image allows).
    """
    inner = res - 1 - 2 * margin
    rel0, rel1, ghost = (_to_pixels(_random_curves(rng, m, length, sigma))
                         for _ in range(3))
    ghost_fits = ((ghost.max(axis=1) - ghost.min(axis=1)) <= inner).all(axis=1)
    rel1 = rel1 + (ghost[:, -1] - ghost[:, 0])[:, None, :]
    both = np.concatenate([rel0, rel1], axis=1)
    lo, hi = both.min(axis=1), both.max(axis=1)
    room = inner - (hi - lo)  # (m, 2)
    fits = (room >= 0).all(axis=1) & ghost_fits
    shift = np.floor(rng.uniform(0.0, 1.0, size=(m, 2)) * (np.clip(room, 0, None) + 1))
    offset = (margin - lo + shift.astype(np.int64))[:, None, :]
    pair = [np.clip(rel + offset, margin, res - 1 - margin) for rel in (rel0, rel1)]
    return pair[0], pair[1], fits


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation of (C, R, R) bool masks by a (2 radius + 1)^2 square (separable
    shifts)."""
    rows = mask.copy()
    for s in range(1, radius + 1):
        rows[:, s:, :] |= mask[:, :-s, :]
        rows[:, :-s, :] |= mask[:, s:, :]
    out = rows.copy()
    for s in range(1, radius + 1):
        out[:, :, s:] |= rows[:, :, :-s]
        out[:, :, :-s] |= rows[:, :, s:]
    return out


def _too_close(p1: np.ndarray, p2: np.ndarray, threshold: np.ndarray, mask: np.ndarray
               ) -> np.ndarray:
    """Whether some pair of points (i of p1 (m, L1, 2), j of p2 (m, L2, 2)) with
    ``mask`` (m or 1, L1, L2) is closer (Chebyshev) than ``threshold`` (L1, L2):
    (m,) bool."""
    dy = np.abs(p1[:, :, None, 0] - p2[:, None, :, 0])
    dx = np.abs(p1[:, :, None, 1] - p2[:, None, :, 1])
    return ((np.maximum(dy, dx, out=dy) < threshold) & mask).any(axis=(1, 2))


def _chunk(rng: np.random.Generator, labels: np.ndarray, res: int, p: dict
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images (C, R, R), marker_paths (C, 2), marker_coords (C, 2, 2), num_paths
    (C,)."""
    c = len(labels)
    sep = p["sep"]  # minimum Chebyshev distance between pixels of different paths
    disc = p["disc"]
    length = p["path_length"]
    rows = np.arange(c)

    # --- the two main curves
    # ------------------------------------------------------------------
    # Curve 1 starts at curve 0's start plus the end-to-end displacement of an
    # independent
    # "ghost" curve of the same law (see _random_pair). Both classes draw the two
    # curves in exactly this way; only the second marker differs: the other end of
    # curve 0
    # (connected) or the start of curve 1 (not connected). So the marker distance
    # has the same
    # law in both classes, and each marker sits on a curve of the same length in both.
    # Separation test on the curves' points; a marker disc (inside a square of
    # radius rd around
    # a curve's end) is accounted for by raising the threshold of pairs involving
    # an end by rd.
    rd = int(np.abs(disc).max())
    is_end = np.zeros(length, dtype=np.int16)
    is_end[[0, -1]] = rd
    threshold = sep + is_end[:, None] + is_end[None, :]  # (L, L)
    curve0 = np.zeros((c, length, 2), dtype=np.int64)
    curve1 = np.zeros((c, length, 2), dtype=np.int64)
    todo = rows
    for _ in range(p["max_tries"]):
        m = len(todo)
        a, b, fits = _random_pair(rng, m, length, p["sigma"], res, p["margin"])
        ends_apart = np.abs(a[:, -1] - a[:, 0]).max(axis=1) >= threshold[0, -1]
        close = _too_close(a.astype(np.int16), b.astype(np.int16), threshold,
                           np.ones((1, length, length), dtype=bool))
        good = fits & ends_apart & ~close
        curve0[todo[good]], curve1[todo[good]] = a[good], b[good]
        todo = todo[~good]
        if todo.size == 0:
            break
    else:
        raise RuntimeError(
            f"make_pathfinder: could not place two separate paths of length {length} in"
            f" a {res}x{res} image after max_tries={p['max_tries']} tries for"
            f" {todo.size} image(s); use a smaller path_length or a larger max_tries"
        )
    full = np.ones((c, length), dtype=bool)

    occupied = np.zeros((c, res, res), dtype=bool)
    for pts in (curve0, curve1):
        occupied[rows[:, None], pts[..., 0], pts[..., 1]] = True
        ends = (pts[:, [0, -1], None, :] + disc[None, None, :, :]).reshape(c, -1, 2)
        occupied[rows[:, None], ends[..., 0], ends[..., 1]] = True
    forbidden = _dilate(occupied, sep - 1)

    # --- distractors: each tried a few times, left out where it does not fit
    # ------------------
    paths = [(curve0, full), (curve1, full)]
    num_paths = np.full(c, 2, dtype=np.int64)
    for _ in range(p["num_distractors"]):
        pts = np.zeros((c, p["distractor_length"], 2), dtype=np.int64)
        ok = np.zeros(c, dtype=bool)
        todo = rows
        for _ in range(p["distractor_tries"]):
            d, fits = _random_paths(rng, len(todo), p["distractor_length"], p["sigma"],
                                    res, p["margin"])
            hit = forbidden[todo[:, None], d[..., 0], d[..., 1]].any(axis=1)
            good = fits & ~hit
            pts[todo[good]], ok[todo[good]] = d[good], True
            todo = todo[~good]
            if todo.size == 0:
                break
        new = np.zeros((c, res, res), dtype=bool)
        idx = np.flatnonzero(ok)
        new[idx[:, None], pts[idx, :, 0], pts[idx, :, 1]] = True
        forbidden |= _dilate(new, sep - 1)
        paths.append((pts, np.repeat(ok[:, None], pts.shape[1], axis=1)))
        num_paths += ok

    # --- rendering: dashes, then the two marker discs
    # ---------------------------------------
    images = np.zeros((c, res, res), dtype=np.float32)
    period = p["dash_length"] + p["gap_length"]
    for pts, keep in paths:
        phase = rng.integers(0, period, size=(c, 1))
        on = ((np.arange(pts.shape[1])[None, :] + phase) % period
              < p["dash_length"]) & keep
        n_idx, t_idx = np.nonzero(on)
        images[n_idx, pts[n_idx, t_idx, 0], pts[n_idx, t_idx, 1]] = 1.0

    # connected: the two ends of curve 0; not connected: the start of curve 0 and
    # of curve 1
    second = np.where(labels[:, None] == 1, curve0[:, -1], curve1[:, 0])  # (c, 2)
    coords = np.stack([curve0[:, 0], second], axis=1)  # (c, 2, 2)
    swap = rng.integers(0, 2, size=c).astype(bool)
    coords[swap] = coords[swap, ::-1]
    spots = coords[:, :, None, :] + disc[None, None, :, :]  # (c, 2, D, 2)
    images[rows[:, None, None], spots[..., 0], spots[..., 1]] = 1.0

    marker_paths = np.where(labels[:, None] == 1, np.array([[0, 0]]), np.array([[0,
                                                                                 1]]))
    marker_paths[swap] = marker_paths[swap, ::-1]
    return images, marker_paths.astype(np.int64), coords, num_paths


def make_pathfinder(
    num_images: int,
    *,
    resolution: int = 32,
    seed: int = 0,
    difficulty: str = "hard",
    num_distractors: int | None = None,
    path_length: int | None = None,
    distractor_length: int | None = None,
    dash_length: int | None = None,
    gap_length: int | None = None,
    curvature: float = 0.25,
    marker_radius: float | None = None,
    max_tries: int = 5000,
) -> PathfinderData:
    """Generate ``num_images`` Pathfinder images, half connected (label 1), half not.

    Every image has two main curves of ``path_length`` pixels (path indices 0 and 1) and
    distractors (2, 3, ...). Label 1: the markers are on the two ends of curve 0;
    label 0: on the starts of curves 0 and 1. Both classes draw the curves in the
    same way, and the distance between the markers has the same distribution in both
    (with two independently placed curves, that distance alone would predict the
    label about 73% of the time at 32x32).

    Defaults scale with ``s = resolution / 32``: ``path_length = round(24 s)``,
    ``distractor_length = round(10 s)``, ``num_distractors = round(2 s)``,
    ``dash_length = round(3 s)``, ``gap_length = round(s)`` (at least 1),
    for ``difficulty="hard"``; ``"medium"`` and ``"easy"`` shorten the main curves to
    ``round(20 s)`` and ``round(12 s)`` pixels and draw them solid (``gap_length=0``)
    without distractors (``DIFFICULTIES``; an explicit argument overrides them);
    ``marker_radius = 1.5 max(s, 1)`` (a 3x3 disc at 32x32 and below: smaller discs
    would look like line pixels);
    ``curvature`` is the standard deviation (radians) of the turn per pixel at 32x32
    (divided by ``sqrt(s)`` so that shapes look alike at any resolution). Lines are
    1 pixel wide.

    ``max_tries`` bounds the attempts to place the two main curves (each image is
    retried until its curves fit, and a clear error is raised when some image still
    fails): small images or long paths need more. Distractors that do not fit after
    10 tries are left out.

    Labels are exactly balanced (for odd ``num_images`` the classes differ by one)
    and shuffled with ``seed``; the same arguments give identical tensors.
    Returns a :class:`PathfinderData`: images (N, R, R) float32 in [0, 1], labels
    (N,) long, marker_paths (N, 2), marker_coords (N, 2, 2), num_paths (N,).
    """
    num_images = check_int(num_images, "num_images", 1)
    res = check_int(resolution, "resolution", _MIN_RESOLUTION)
    seed = check_seed(seed)
    s = res / 32
    knob = DIFFICULTIES[check_choice(difficulty, "difficulty", list(DIFFICULTIES))]
    if num_distractors is None:
        num_distractors = round(knob["num_distractors"] * s)
    num_distractors = check_int(num_distractors, "num_distractors", 0, 64)
    marker_radius = check_number(
        1.5 * max(s, 1.0) if marker_radius is None else marker_radius, "marker_radius",
        0.0, res / 8)
    margin = int(math.floor(marker_radius))
    inner = res - 1 - 2 * margin
    dash_length = check_int(
        max(1, round(3 * s)) if dash_length is None else dash_length, "dash_length", 1)
    gap_length = check_int(
        (max(1, round(s)) if knob["gap_length"] else 0) if gap_length is None
        else gap_length, "gap_length", 0,
        res // 4)
    bridge = (gap_length + 1) // 2  # ceil(gap / 2)
    sep = 2 * bridge + 2
    path_length = check_int(
        round(knob["path_length"] * s) if path_length is None else path_length,
        "path_length", 3,
        2 * inner)
    distractor_length = check_int(
        round(10 * s) if distractor_length is None else distractor_length,
        "distractor_length", 3, 2 * inner)
    curvature = check_number(curvature, "curvature", 0.0, math.pi / 2)
    max_tries = check_int(max_tries, "max_tries", 1)

    params = dict(
        path_length=path_length,
        distractor_length=distractor_length,
        num_distractors=num_distractors,
        dash_length=dash_length,
        gap_length=gap_length,
        sigma=curvature / math.sqrt(s),
        margin=margin,
        disc=_disc_offsets(marker_radius),
        sep=sep,
        max_tries=max_tries,
        distractor_tries=10,
    )

    rng = np.random.default_rng(seed)
    labels = np.zeros(num_images, dtype=np.int64)
    labels[: num_images // 2] = 1
    labels = rng.permutation(labels)
    parts = [
        _chunk(rng, labels[i:i + _CHUNK], res, params)
        for i in range(0, num_images, _CHUNK)
    ]
    images, marker_paths, coords, num_paths = (np.concatenate(x) for x in zip(*parts))
    return PathfinderData(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        marker_paths=torch.from_numpy(marker_paths),
        marker_coords=torch.from_numpy(np.ascontiguousarray(coords)),
        num_paths=torch.from_numpy(num_paths),
        resolution=res,
        bridge_radius=bridge,
    )
