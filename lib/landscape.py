"""Loss-landscape slices: the loss along lines and planes through parameter space.

The method of Li, Xu, Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of
Neural Nets", NeurIPS 2018 (bibliography key ``li2018visualizing``): pick a centre theta
(e.g. trained weights) and one or two random Gaussian directions, rescale every *filter*
of a direction to the norm of the corresponding filter of theta ("filter normalisation",
which makes slices of differently scaled networks comparable), and evaluate

    1-D: f(theta + alpha d),                     2-D: f(theta + alpha d1 + beta d2)

on a grid. ``interpolate_1d`` evaluates the straight line between two parameter sets
instead.
``roughness`` turns a 2-D grid of losses into numbers (how many local minima, how much
the surface oscillates), so that "smoother" can be checked by an assert rather than by
eye.

Everything works on dictionaries of parameter tensors {name: Tensor} and on a function
``loss_fn(params) -> float``: ``model_loss_fn`` builds one for an attention layer and a
data set,
``module_loss_fn`` for any ``nn.Module`` and any loss closure (e.g. a batch of a real
task).
``attention_plane`` evaluates a whole plane of an attention layer in one batched
computation,
``symmetry_directions`` spans the directions along which the attention kernel leaves the
loss unchanged, and ``quadratic_fit`` measures how far a 1-D slice is from a parabola.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .batched_model import BatchedAttentionLayer, per_model_loss
from .model import WEIGHT_NAMES, AttentionLayer, functional_loss, squared_loss
from .validation import check_names, check_param_dict, check_positive_int, check_seed

__all__ = [
    "Params",
    "LossFn",
    "get_params",
    "model_loss_fn",
    "module_loss_fn",
    "filter_dims",
    "random_direction",
    "combine",
    "interpolate_1d",
    "slice_1d",
    "slice_2d",
    "roughness",
    "attention_plane",
    "symmetry_directions",
    "quadratic_fit",
]

Params = dict[str, torch.Tensor]
LossFn = Callable[[Mapping[str, torch.Tensor]], float]

# : Names (last dotted component) of the weights of ``lib.model.AttentionLayer``,
# whose filters
#: are columns (see ``filter_dims``).
_ATTENTION_PROJECTIONS = ("W_Q", "W_K", "W_V")


# ----------------------------------------------------------------------------- loss
# functions
def get_params(module: nn.Module, names: Iterable[str] | None = None) -> Params:
    """Detached copies of a module's parameters {name: tensor} (all of them, or
    those in ``names``)."""
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module, got {type(module).__name__}")
    named = dict(module.named_parameters())
    names = list(named) if names is None else check_names(module, list(names),
                                                          noun="parameter name")
    return {name: named[name].detach().clone() for name in names}


def model_loss_fn(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = squared_loss,
) -> LossFn:
    """params -> loss_fn(model_params(X), Y) as a float, by
    ``torch.func.functional_call``.

    ``params`` may hold any subset of the parameters; the others keep copies of
    their values at the time of this call. The model itself is never modified.
    """
    loss_at = functional_loss(model, X, Y, loss_fn)

    def loss(params: Mapping[str, torch.Tensor]) -> float:
        with torch.no_grad():
            return float(loss_at(params))

    return loss


def module_loss_fn(module: nn.Module,
                   loss_closure: Callable[[nn.Module], torch.Tensor | float]) -> LossFn:
    """params -> loss_closure(module) with the module's parameters temporarily set
    to ``params``.

    For any ``nn.Module`` and any way of computing its loss (several batches,
    dropout off, ...):
    ``loss_closure(module)`` returns a scalar. The named parameters are copied in
    (the others are unchanged), the closure runs under ``torch.no_grad()``, and the
    original values are restored afterwards, also when the closure raises. Put the
    module in ``eval()`` mode first if it has dropout or batch normalisation.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not callable(loss_closure):
        raise TypeError("loss_closure must be callable: module -> scalar loss")
    named = dict(module.named_parameters())

    def loss(params: Mapping[str, torch.Tensor]) -> float:
        check_param_dict(params, named, "params")
        saved = {name: named[name].detach().clone() for name in params}
        try:
            with torch.no_grad():
                for name, value in params.items():
                    named[name].copy_(value)
                return float(loss_closure(module))
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    named[name].copy_(value)

    return loss


# -----------------------------------------------------------------------------
# directions
def filter_dims(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The axes that index the *filters* of a parameter (the norm is taken over the
    other axes).

    * 0-D and 1-D parameters (biases, LayerNorm gains): the whole vector is one
    filter (``()``);
      ``random_direction`` sets them to zero unless ``keep_1d=True``, as Li et al. do.
    * Attention projections of ``lib.model.AttentionLayer``, W_Q / W_K / W_V of
    shape (H, D, d): one
      filter per head and output column, W^h[:, j] (the weights producing one
      query/key/value feature of one head): axes (0, 2).
    * W_O of ``lib.model.AttentionLayer``, shape (H*d_v, d_out), applied as x @ W_O:
    one filter per
      output unit, the column W_O[:, j]: axis (1,).
    * Any other parameter with >= 2 axes (``nn.Linear`` weights (out, in),
    embeddings, convolution
      kernels (out, in, ...)): one filter per slice along axis 0, i.e. per output
      unit / row.

    The attention rules match on the last dotted component of ``name`` (so
    "blocks.0.W_Q" counts).
    """
    ndim = len(shape)
    if ndim <= 1:
        return ()
    last = name.rsplit(".", 1)[-1]
    if last in _ATTENTION_PROJECTIONS and ndim == 3:
        return (0, 2)
    if last == "W_O" and ndim == 2:
        return (1,)
    return (0,)


def random_direction(
    params: Mapping[str, torch.Tensor],
    *,
    seed: int,
    filter_normalize: bool = True,
    keep_1d: bool = False,
    dims: Mapping[str, Sequence[int]] | None = None,
) -> Params:
    """A Gaussian direction with the shapes of ``params``, filter-normalised (Li et
    al., 2018).

    Every entry is drawn i.i.d. N(0, 1) from a generator seeded with ``seed`` (in
    the order of
    ``params``). With ``filter_normalize``, each filter d_f is rescaled to the norm
    of the matching filter of the parameters: d_f <- d_f / ||d_f|| * ||theta_f||
    (filters as in ``filter_dims``, or the axes given in ``dims[name]``). 0-D/1-D
    parameters are set to zero unless ``keep_1d`` (then the whole vector is one
    filter). Without ``filter_normalize`` the raw Gaussian draw is returned.
    """
    check_seed(seed)
    _check_params(params, "params")
    gen = torch.Generator().manual_seed(seed)
    direction: Params = {}
    for name, theta in params.items():
        d = torch.randn(tuple(theta.shape), generator=gen,
                        dtype=torch.float64).to(dtype=theta.dtype, device=theta.device)
        if theta.dim() <= 1 and not keep_1d:
            direction[name] = torch.zeros_like(theta)
            continue
        if filter_normalize:
            axes = tuple(
                dims[name]) if dims is not None and name in dims else filter_dims(
                    name, theta.shape)
            for axis in axes:
                if not -theta.dim() <= axis < theta.dim():
                    raise ValueError(
                        f"filter axis {axis} out of range for {name} of shape"
                        f" {tuple(theta.shape)}"
                    )
            reduce = tuple(a for a in range(theta.dim())
                           if a not in {ax % theta.dim()
                                        for ax in axes})
            if reduce:
                d_norm = torch.linalg.vector_norm(d, dim=reduce, keepdim=True)
                t_norm = torch.linalg.vector_norm(theta.detach(), dim=reduce,
                                                  keepdim=True)
            else:  # every entry is its own filter
                d_norm, t_norm = d.abs(), theta.detach().abs()
            d = d / d_norm.clamp_min(torch.finfo(d.dtype).tiny) * t_norm
        direction[name] = d
    return direction


def _check_params(params: Mapping[str, torch.Tensor], what: str) -> None:
    if not isinstance(params, Mapping) or not params:
        raise TypeError(f"{what} must be a non-empty dict {{name: tensor}}")
    for name, value in params.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{what}[{name!r}] must be a torch.Tensor, got {type(value).__name__}")


def combine(center: Mapping[str, torch.Tensor], *terms:
            tuple[float, Mapping[str, torch.Tensor]]) -> Params:
    """center + sum_k c_k d_k, name by name; a direction without some name counts as
    zero there."""
    _check_params(center, "center")
    out = {}
    for name, value in center.items():
        total = value.detach().clone()
        for coefficient, direction in terms:
            if name in direction:
                step = direction[name]
                if step.shape != value.shape:
                    raise ValueError(
                        f"direction[{name!r}] has shape {tuple(step.shape)}, expected"
                        f" {tuple(value.shape)}"
                    )
                total = total + coefficient * step
        out[name] = total
    for _, direction in terms:
        extra = set(direction) - set(center)
        if extra:
            raise ValueError(
                f"direction has names that the centre lacks: {sorted(extra)}")
    return out


# ----------------------------------------------------------------------------- slices
def _grid(span: tuple[float, float], num: int, name: str) -> np.ndarray:
    check_positive_int(num, name)
    if len(span) != 2 or not all(math.isfinite(float(s))
                                 for s in span) or not span[0] < span[1]:
        raise ValueError(f"span must be (low, high) with low < high, got {span!r}")
    return np.linspace(float(span[0]), float(span[1]), num)


def interpolate_1d(
    loss_fn: LossFn,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    *,
    num: int = 51,
    extend: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The loss along the line (1 - alpha) start + alpha end, alpha in ``extend``
    (default [0, 1]).

    Returns (alphas (num,), losses (num,)). With the default range, losses[0] =
    loss(start) and losses[-1] = loss(end) exactly. ``extend=(-0.5, 1.5)`` also
    shows the loss beyond both ends.
    """
    _check_params(start, "start")
    if set(start) != set(end):
        raise ValueError(
            f"start and end must hold the same names, got {sorted(start)} and"
            f" {sorted(end)}"
        )
    alphas = _grid(extend, num, "num")
    losses = np.empty(num)
    for i, alpha in enumerate(alphas):
        point = {
            name: (1.0 - alpha) * start[name] + alpha * end[name]
            for name in start
        }
        losses[i] = loss_fn(point)
    return alphas, losses


def slice_1d(
    loss_fn: LossFn,
    center: Mapping[str, torch.Tensor],
    direction: Mapping[str, torch.Tensor],
    *,
    span: tuple[float, float] = (-1.0, 1.0),
    num: int = 51,
) -> tuple[np.ndarray, np.ndarray]:
    """The loss along center + alpha direction. Returns (alphas (num,), losses
    (num,))."""
    alphas = _grid(span, num, "num")
    losses = np.array([loss_fn(combine(center, (float(a), direction))) for a in alphas])
    return alphas, losses


def slice_2d(
    loss_fn: LossFn,
    center: Mapping[str, torch.Tensor],
    dir1: Mapping[str, torch.Tensor],
    dir2: Mapping[str, torch.Tensor],
    *,
    span: tuple[float, float] = (-1.0, 1.0),
    num: int = 41,
    span2: tuple[float, float] | None = None,
    num2: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loss on the plane center + alpha dir1 + beta dir2.

    Returns (alphas (num,), betas (num2,), Z (num, num2)) with Z[i, j] = loss(center
    + alphas[i] dir1
    + betas[j] dir2); ``span2`` / ``num2`` default to ``span`` / ``num``. For
    ``contourf`` use
    ``ax.contourf(alphas, betas, Z.T)``.
    """
    alphas = _grid(span, num, "num")
    betas = _grid(span if span2 is None else span2, num if num2 is None else num2,
                  "num2")
    Z = np.empty((len(alphas), len(betas)))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            Z[i, j] = loss_fn(combine(center, (float(a), dir1), (float(b), dir2)))
    return alphas, betas, Z


# -----------------------------------------------------------------------------
# roughness
def roughness(Z: np.ndarray) -> dict[str, float | int]:
    """Numbers that describe how rugged a 2-D grid of losses Z (num_alpha, num_beta) is.

    * ``num_local_minima``: interior grid points strictly below all 8 neighbours
    (boundary points
      are not counted: their neighbourhood is incomplete). A convex bowl has
      exactly one.
    * ``total_variation``: sum over every grid line (rows and columns) of sum
    |Z[k+1] - Z[k]|,
      divided by (number of lines x value range): the average distance a grid line
      travels up and down, in units of the range. A surface monotone along every
      line gives at most 1 (a square grid of a plane tilted along one axis:
      exactly 0.5), a bowl at most 2; every extra oscillation adds to it.
    * ``laplacian``: the mean |discrete Laplacian| over interior points (5-point
    stencil in grid
      units, Z[i+1,j] + Z[i-1,j] + Z[i,j+1] + Z[i,j-1] - 4 Z[i,j]) divided by the
      range: mean local curvature relative to the relief; small for smooth
      surfaces, large for rugged ones.
    * ``range``: max(Z) - min(Z) (the two normalised measures are 0 when it is 0).
    * ``min``, ``max``: the extreme values.
    * ``non_convex_fraction``: the fraction of interior points where the discrete
    2-D Hessian
      (central differences) is not positive semi-definite.
    * ``relief``: range / Z(centre), and ``boundary_ratio``: the lowest value on the
    grid's edge /
      Z(centre) (centre: the middle grid point; NaN when Z(centre) <= 0).
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[0] < 3 or Z.shape[1] < 3:
        raise ValueError(
            f"Z must be a 2-D grid of at least 3 x 3 values, got shape {Z.shape}")
    if not np.isfinite(Z).all():
        raise ValueError(
            f"Z must contain only finite values, found {int((~np.isfinite(Z)).sum())}"
            " NaN/inf entries"
        )
    center = Z[1:-1, 1:-1]
    is_min = np.ones_like(center, dtype=bool)
    rows, cols = Z.shape
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == 0 and dj == 0:
                continue
            neighbour = Z[1 + di : rows - 1 + di, 1 + dj : cols - 1 + dj]
            is_min &= center < neighbour
    value_range = float(Z.max() - Z.min())
    variation = float(
        np.abs(np.diff(Z, axis=0)).sum() + np.abs(np.diff(Z, axis=1)).sum())
    laplacian = Z[2:, 1:-1] + Z[:-2, 1:-1] + Z[1:-1, 2:] + Z[1:-1, :-2] - 4.0 * center
    lines = rows + cols
    fxx = Z[2:, 1:-1] - 2 * center + Z[:-2, 1:-1]
    fyy = Z[1:-1, 2:] - 2 * center + Z[1:-1, :-2]
    fxy = (Z[2:, 2:] - Z[2:, :-2] - Z[:-2, 2:] + Z[:-2, :-2]) / 4
    middle = float(Z[rows // 2, cols // 2])
    edge = float(min(Z[0].min(), Z[-1].min(), Z[:, 0].min(), Z[:, -1].min()))
    return {
        "num_local_minima": int(is_min.sum()),
        "total_variation": variation /
        (lines * value_range) if value_range > 0 else 0.0,
        "laplacian": float(np.abs(laplacian).mean()) / value_range
        if value_range > 0 else 0.0,
        "range": value_range,
        "min": float(Z.min()),
        "max": float(Z.max()),
        "non_convex_fraction": float(
            ((fxx * fyy - fxy**2 < 0) | (fxx + fyy < 0)).mean()),
        "relief": value_range / middle if middle > 0 else float("nan"),
        "boundary_ratio": edge / middle if middle > 0 else float("nan"),
    }


# -----------------------------------------------------------------------------
# attention layers
@torch.no_grad()
def attention_plane(
    layer: AttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    dir1: Mapping[str, torch.Tensor],
    dir2: Mapping[str, torch.Tensor],
    *,
    span: tuple[float, float] = (-1.0, 1.0),
    num: int = 25,
) -> tuple[np.ndarray, np.ndarray]:
    """(alphas (num,), Z (num, num)): the squared loss of ``layer`` on the plane
    theta + alpha dir1
    + beta dir2, alpha and beta on the same grid, Z[i, j] as ``slice_2d``'s (equal
    to it, tested).

    All num^2 grid points are evaluated as the models of one
    ``BatchedAttentionLayer``; a direction that lacks a weight counts as zero there.
    """
    if not isinstance(layer, AttentionLayer):
        raise TypeError(
            f"layer must be a lib.model.AttentionLayer, got {type(layer).__name__}")
    alphas = _grid(span, num, "num")
    for what, direction in (("dir1", dir1), ("dir2", dir2)):
        check_param_dict(direction, dict(layer.named_parameters()), what)
    grid = [torch.tensor(v.ravel(), dtype=layer.W_Q.dtype, device=layer.W_Q.device)
            for v in np.meshgrid(alphas, alphas, indexing="ij")]
    batch = BatchedAttentionLayer.from_layers([layer] * num**2, impl="bmm")
    for name in WEIGHT_NAMES:
        W = getattr(layer, name).detach()
        shape = (-1,) + (1,) * W.dim()
        zero = torch.zeros_like(W)
        moved = (W + grid[0].view(shape) * dir1.get(name, zero)
                 + grid[1].view(shape) * dir2.get(name, zero))
        getattr(batch, name).copy_(moved)
    Z = per_model_loss(batch, X, Y)
    return alphas, Z.view(num, num).cpu().numpy()


@torch.no_grad()
def symmetry_directions(
    layer: AttentionLayer,
    names: Sequence[str] = ("W_Q", "W_K", "W_V")) -> torch.Tensor:
    """An orthonormal basis (P, k) of the tangent directions of the kernel's
    symmetry group at the layer's weights, in the flattened ``names``
    (``lib.hessian.flatten_params`` order; W_Q, W_K first, the other weights get
    zeros). One head only.

    Softmax depends on Q K^T only: (W_Q, W_K) -> (W_Q A, W_K A^-T) leaves the loss
    unchanged for every invertible A, tangent (W_Q E, -W_K E^T) for all E (k = d^2).
    The Gaussian kernel depends on distances only: A orthogonal, tangent (W_Q E, W_K
    E) for skew-symmetric E (k = d(d-1)/2).
    """
    if not isinstance(layer, AttentionLayer):
        raise TypeError(
            f"layer must be a lib.model.AttentionLayer, got {type(layer).__name__}")
    if layer.H != 1 or tuple(names[:2]) != ("W_Q", "W_K"):
        raise ValueError(
            "symmetry_directions needs a one-head layer and names starting with"
            " W_Q, W_K"
        )
    if layer.kernel not in ("softmax", "gaussian"):
        raise ValueError(
            f"symmetry_directions covers 'softmax' and 'gaussian', got {layer.kernel!r}"
        )
    W_Q, W_K, d = layer.W_Q[0], layer.W_K[0], layer.d
    rest = sum(getattr(layer, name).numel() for name in names[2:])
    zeros = torch.zeros(rest, dtype=W_Q.dtype, device=W_Q.device)
    columns = []
    for i in range(d):
        for j in range(d):
            E = torch.zeros(d, d, dtype=W_Q.dtype, device=W_Q.device)
            E[i, j] = 1.0
            if layer.kernel == "gaussian":
                if j <= i:
                    continue
                E[j, i] = -1.0
            dK = -W_K @ E.T if layer.kernel == "softmax" else W_K @ E
            columns.append(torch.cat([(W_Q @ E).ravel(), dK.ravel(), zeros]))
    U, R = torch.linalg.qr(torch.stack(columns, dim=1))
    diag = torch.diagonal(R).abs()
    if diag.min() <= 1e-8 * diag.max():
        raise ValueError(
            "the symmetry directions are linearly dependent at these weights")
    return U


def quadratic_fit(t: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares parabola through the points (t, g): (coefficients, highest
    first; the largest
    |fit - g| divided by the range of g)."""
    t, g = np.asarray(t, dtype=float), np.asarray(g, dtype=float)
    if t.ndim != 1 or t.shape != g.shape or t.size < 3:
        raise ValueError(
            f"t and g must be 1-D of the same length >= 3, got {t.shape} and {g.shape}")
    coef = np.polyfit(t, g, 2)
    spread = g.max() - g.min()
    residual = float(
        np.abs(np.polyval(coef, t) - g).max() / spread) if spread > 0 else 0.0
    return coef, residual
