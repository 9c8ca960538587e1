"""lib.kernel_anatomy: the link identity, row statistics, group shares and hull tests
against direct computations."""
import math

import numpy as np
import pytest
import torch

from lib.attention import gaussian_kernel, softmax_kernel
from lib.kernel_anatomy import (group_share, inside_hull, link_factors, row_stats,
                                row_stats_table)

DT = torch.float64


def test_link_identity_holds_and_factors_have_shapes():
    gen = torch.Generator().manual_seed(0)
    Q, K = (torch.randn(5, 3, generator=gen, dtype=DT) for _ in range(2))
    Z, a, b = link_factors(Q, K)
    assert Z.shape == (5, 1) and a.shape == (5, 1) and b.shape == (1, 5)
    err = (gaussian_kernel(Q, K) - softmax_kernel(Q, K) * Z * a * b).abs().max()
    assert err < 1e-12
    # Z is the Softmax normaliser itself.
    assert torch.allclose(Z[:, 0], torch.exp(Q @ K.T / math.sqrt(3)).sum(-1))
    with pytest.raises(ValueError, match="same width d"):
        link_factors(Q, torch.randn(5, 4, dtype=DT))
    with pytest.raises(ValueError, match="Q must have 2 dimensions"):
        link_factors(Q[None], K)


def test_row_stats_uniform_and_one_hot_limits():
    sums, H = row_stats(torch.full((3, 4), 0.5, dtype=DT))
    assert torch.allclose(sums, torch.full((3,), 2.0, dtype=DT))
    assert torch.allclose(H, torch.full((3,), math.log(4), dtype=DT))
    S = torch.tensor([[1.0, 1e-30], [0.3, 0.7]], dtype=DT)
    _, H = row_stats(S)
    p = torch.tensor([0.3, 0.7], dtype=DT)
    assert H[0] < 1e-20 and abs(H[1] + (p * p.log()).sum()) < 1e-15
    with pytest.raises(ValueError, match="positive entries"):
        row_stats(torch.zeros(2, 2, dtype=DT))


def test_row_stats_table():
    S = softmax_kernel(torch.eye(3, dtype=DT), torch.eye(3, dtype=DT))
    table = row_stats_table({"Softmax": S})
    assert table.header[0] == "kernel" and [r[0] for r in table.rows] == [
        "Softmax", "uniform"]
    assert table.rows[0][1] == table.rows[0][2] == "1.000"
    assert table.rows[1][3] == f"{math.log(3):.3f}" and table.rows[1][4] == "3.00"
    with pytest.raises(ValueError, match="at least one"):
        row_stats_table({})


def test_group_share():
    S = torch.tensor([[1.0, 3.0, 0.0], [1.0, 1.0, 2.0], [0.0, 0.0, 5.0]], dtype=DT)
    share = group_share(S, torch.tensor([0, 0, 1]))
    assert torch.allclose(share, torch.tensor([1.0, 0.5, 1.0], dtype=DT))
    with pytest.raises(ValueError, match="groups"):
        group_share(S, torch.tensor([0, 1]))


def test_inside_hull():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=DT)
    points = np.array([[0.5, 0.5], [1.5, 0.5], [0.0, 0.0], [-0.1, 0.2]])
    assert inside_hull(points, square).tolist() == [True, False, True, False]
    weights = torch.softmax(torch.randn(6, 4, dtype=DT), -1)  # convex combinations
    assert inside_hull(weights @ square, square).all()
    with pytest.raises(ValueError, match=r"points must be \(m, k\)"):
        inside_hull(np.zeros((2, 3)), square)
