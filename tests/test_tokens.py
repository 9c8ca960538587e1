"""lib.tokens: the seeded token arrangements of the kernels chapter."""
from __future__ import annotations

import math

import pytest
import torch

from lib.tokens import GEOMETRIES, make_tokens


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_shape_dtype_and_seed(geometry):
    X = make_tokens(geometry, 3.0)
    assert X.shape == (12, 2) and X.dtype == torch.float64
    assert torch.equal(X, make_tokens(geometry, 3.0))
    assert not torch.equal(X, make_tokens(geometry, 3.0, seed=1))


def test_clusters_are_separated_by_the_separation():
    X = make_tokens("two clusters", 10.0, n=400)
    centres = torch.stack([X[:200].mean(0), X[200:].mean(0)])
    assert math.isclose((centres[0] - centres[1]).norm().item(), 10.0, rel_tol=0.02)
    three = make_tokens("three clusters", 6.0, n=300)
    c = torch.stack([three[i * 100:(i + 1) * 100].mean(0) for i in range(3)])
    sides = [(c[i] - c[j]).norm().item() for i, j in [(0, 1), (1, 2), (0, 2)]]
    assert all(math.isclose(s, 6.0, rel_tol=0.03) for s in sides)


def test_ring_radius():
    radii = make_tokens("ring", 4.0, n=50).norm(dim=1)
    assert (radii - 2.0).abs().max() < 0.25


def test_bad_arguments():
    with pytest.raises(ValueError, match="geometry"):
        make_tokens("square")
    with pytest.raises(ValueError, match="separation"):
        make_tokens("ring", -1.0)
    with pytest.raises((ValueError, TypeError), match="n"):
        make_tokens("ring", n=0)
