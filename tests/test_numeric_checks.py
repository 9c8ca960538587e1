"""lib.numeric_checks: max |difference| of tensors, arrays and numbers; failing checks
raise an AssertionError that names them."""
import math

import numpy as np
import pytest
import torch

from lib.numeric_checks import check_max_diff, max_abs_diff


def test_max_abs_diff_broadcasts_and_mixes_types():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.5]], dtype=torch.float64)
    assert max_abs_diff(a, a.clone()) == 0.0
    assert max_abs_diff(a, torch.tensor([1.0, 2.0])) == 2.5  # broadcast over rows
    assert max_abs_diff(a.sum(-1), 3.0) == 4.5
    assert max_abs_diff(np.array([1, 2]), np.array([1, 5])) == 3.0  # integers
    assert max_abs_diff(1.5, 1) == 0.5
    x = torch.ones(2, requires_grad=True)
    assert max_abs_diff(2 * x, 1.0) == 1.0  # tensors that require grad
    assert math.isnan(max_abs_diff(torch.tensor([0.0, math.nan]), 0.0))
    with pytest.raises(ValueError, match="no entries"):
        max_abs_diff(torch.zeros(0), 1.0)


def test_check_max_diff_prints_and_passes(capsys):
    S = torch.softmax(torch.randn(4, 5, dtype=torch.float64), -1)
    assert check_max_diff({"row sums vs 1": (S.sum(-1), 1.0), "given": 1e-14}) is None
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("row sums vs 1: max |difference| = ")
    assert out[0].endswith("(tolerance 1e-12)") and out[1].startswith("given: ")
    check_max_diff({"quiet": 0.0}, verbose=False)
    assert capsys.readouterr().out == ""


def test_check_max_diff_names_every_failure():
    with pytest.raises(AssertionError, match=r"tolerance 0.001: b \(2.00e-02\), c"):
        check_max_diff({"a": (1.0, 1.0), "b": (1.0, 1.02), "c": math.nan}, tol=1e-3)


def test_check_max_diff_bad_input():
    with pytest.raises(ValueError, match="non-empty mapping"):
        check_max_diff({})
    with pytest.raises(ValueError, match=r"pairs\['x'\] must be \(a, b\)"):
        check_max_diff({"x": (1.0, 2.0, 3.0)})
    with pytest.raises(ValueError, match="tol"):
        check_max_diff({"x": 0.0}, tol=-1.0)
