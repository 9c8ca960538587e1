"""The one-layer multi-head attention model of the paper and its squared loss.

For an input X: (n, D) (one sample of n tokens), head h computes

    head_h(X) = S(X W_Q^h, X W_K^h) X W_V^h            (n, d_v)

with S the attention kernel (``lib.attention``), and the layer outputs

    MH(X) = Concat(head_1, ..., head_H) W_O            (n, d_out).

The loss over N samples is f = 1/(2N) sum_i ||MH(X_i) - Y_i||_F^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from .attention import get_kernel
from .device import get_device
from .validation import (
    check_choice,
    check_device,
    check_float_dtype,
    check_number,
    check_param_dict,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_matches,
    check_tensor,
)

__all__ = [
    "AttentionLayer",
    "LayerSettings",
    "squared_loss",
    "functional_loss",
    "INIT_SCHEMES",
    "WEIGHT_NAMES",
]

WEIGHT_NAMES = ("W_Q", "W_K", "W_V", "W_O")

INIT_SCHEMES = {
    "lecun": (
        "every entry i.i.d. N(0, 1/fan_in): fan_in = D for W_Q, W_K, W_V and H*d_v"
        " for W_O"
    ),
    "xavier": (
        "every entry i.i.d. N(0, 2/(fan_in + fan_out)) (Glorot normal), per head for"
        " W_Q, W_K, W_V"
    ),
    "orthogonal": (
        "each head's W_Q, W_K, W_V and each row block W_O^h of W_O has orthonormal rows"
        " or columns (QR of a Gaussian matrix), so every singular value is 1"
    ),
}


@dataclass(frozen=True)
class LayerSettings:
    """The settings of an attention layer, checked once: sizes, kernel,
    initialisation, dtype and device. Shared by ``AttentionLayer``,
    ``lib.batched_model.BatchedAttentionLayer`` (one settings object for all M
    models) and the ``lib.data`` builders.

    D: embedding dimension; H: heads; d, d_v, d_out: query/key, value and output
    dimensions (default D); kernel, gamma: the attention kernel and its Gaussian
    bandwidth (None: the default 1/(2 sqrt(d))); init: one of ``INIT_SCHEMES``;
    dtype: a floating type; device: default ``lib.get_device()``. ``layer(seed=...,
    qk_scale=...)`` builds an ``AttentionLayer``.
    """

    D: int
    H: int = 1
    d: int | None = None
    d_v: int | None = None
    d_out: int | None = None
    kernel: str = "softmax"
    gamma: float | None = None
    init: str = "lecun"
    dtype: torch.dtype = torch.float64
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        D = check_positive_int(self.D, "D")
        checked = {
            "D": D,
            "H": check_positive_int(self.H, "H"),
            "d": check_positive_int(D if self.d is None else self.d, "d"),
            "d_v": check_positive_int(D if self.d_v is None else self.d_v, "d_v"),
            "d_out": check_positive_int(D if self.d_out is None else self.d_out,
                                        "d_out"),
            "gamma": None if self.gamma is None else check_positive_float(
                self.gamma, "gamma"),
            "init": check_choice(self.init, "init", list(INIT_SCHEMES)),
            "dtype": check_float_dtype(self.dtype),
            "device": get_device()
            if self.device is None else check_device(self.device),
        }
        get_kernel(self.kernel)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes) -> "LayerSettings":
        """A copy with some settings changed (checked again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return LayerSettings(**values)

    def layer(self, *, qk_scale: float = 1.0,
              seed: int | None = None) -> "AttentionLayer":
        """An ``AttentionLayer`` with these settings, initialised from ``seed``."""
        return AttentionLayer(**{f.name: getattr(self, f.name) for f in fields(self)},
                              qk_scale=qk_scale, seed=seed)


class AttentionLayer(nn.Module):
    """One multi-head attention layer with a Softmax or Gaussian kernel.

    Args:
        D: embedding dimension of the input tokens.
        H: number of heads.
        d: query/key dimension (default D).
        d_v: value dimension per head (default D).
        d_out: output dimension (default D).
        kernel: attention kernel name (see ``lib.attention.kernel_names()``).
        gamma: Gaussian bandwidth (default 1/(2 sqrt(d))); ignored by the
        Softmax kernel.
        init: initialisation scheme, one of ``INIT_SCHEMES`` (documented there).
        qk_scale: multiplies W_Q and W_K after initialisation (the "attention scale").
        seed: seed of a local generator for the initialisation (None: torch's
        global generator).
        dtype: parameter dtype (float64 by default: the theory chapters need it).
        device: parameter device (default ``lib.get_device()``: CUDA when available).

    Parameters: W_Q (H, D, d), W_K (H, D, d), W_V (H, D, d_v), W_O (H*d_v, d_out).
    """

    def __init__(
        self,
        D: int,
        H: int = 1,
        d: int | None = None,
        d_v: int | None = None,
        d_out: int | None = None,
        kernel: str = "softmax",
        gamma: float | None = None,
        init: str = "lecun",
        qk_scale: float = 1.0,
        seed: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        settings = LayerSettings(D, H, d, d_v, d_out, kernel, gamma, init, dtype,
                                 device)
        self.D, self.H, self.d = settings.D, settings.H, settings.d
        self.d_v, self.d_out = settings.d_v, settings.d_out
        self.set_kernel(settings.kernel, settings.gamma)
        qk_scale = check_number(qk_scale, "qk_scale")
        if seed is not None:
            check_seed(seed)
        dtype, device = settings.dtype, settings.device
        shapes = {
            "W_Q": (self.H, self.D, self.d),
            "W_K": (self.H, self.D, self.d),
            "W_V": (self.H, self.D, self.d_v),
            "W_O": (self.H * self.d_v, self.d_out),
        }
        for name, shape in shapes.items():
            self.register_parameter(
                name, nn.Parameter(torch.empty(shape, dtype=dtype, device=device)))
        self.init = settings.init
        self.qk_scale = float(qk_scale)
        self.reset_parameters(seed)

    # ------------------------------------------------------------------ set-up
    def set_kernel(self, kernel: str, gamma: float | None = None) -> None:
        """Switch the attention kernel (weights are kept)."""
        self.kernel_fn = get_kernel(kernel)
        self.kernel = kernel
        if gamma is not None:
            check_positive_float(gamma, "gamma")
        self.gamma = gamma

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-draw every weight with the layer's ``init`` scheme (seeded when
        ``seed`` is given)."""
        gen = torch.Generator().manual_seed(
            check_seed(seed)) if seed is not None else None

        def normal(shape: tuple[int, ...], std: float) -> torch.Tensor:
            return torch.randn(shape, generator=gen, dtype=torch.float64) * std

        def orthonormal(rows: int, cols: int) -> torch.Tensor:
            A = torch.randn(max(rows, cols), min(rows, cols), generator=gen,
                            dtype=torch.float64)
            Qm, R = torch.linalg.qr(A)
            Qm = Qm * torch.sign(torch.diagonal(R)).unsqueeze(0)
            return Qm if rows >= cols else Qm.T

        H, D, d, d_v, d_out = self.H, self.D, self.d, self.d_v, self.d_out
        if self.init == "lecun":
            W_Q, W_K = normal((H, D, d), 1 / math.sqrt(D)), normal((H, D, d),
                                                                   1 / math.sqrt(D))
            W_V = normal((H, D, d_v), 1 / math.sqrt(D))
            W_O = normal((H * d_v, d_out), 1 / math.sqrt(H * d_v))
        elif self.init == "xavier":
            W_Q = normal((H, D, d), math.sqrt(2 / (D + d)))
            W_K = normal((H, D, d), math.sqrt(2 / (D + d)))
            W_V = normal((H, D, d_v), math.sqrt(2 / (D + d_v)))
            W_O = normal((H * d_v, d_out), math.sqrt(2 / (H * d_v + d_out)))
        else:  # orthogonal
            W_Q = torch.stack([orthonormal(D, d) for _ in range(H)])
            W_K = torch.stack([orthonormal(D, d) for _ in range(H)])
            W_V = torch.stack([orthonormal(D, d_v) for _ in range(H)])
            W_O = torch.cat([orthonormal(d_v, d_out) for _ in range(H)], dim=0)
        for name, value in (("W_Q", W_Q * self.qk_scale), ("W_K", W_K * self.qk_scale),
                            ("W_V", W_V), ("W_O", W_O)):
            param = getattr(self, name)
            param.copy_(value.to(dtype=param.dtype, device=param.device))

    @property
    def settings(self) -> LayerSettings:
        """The layer's current settings (kernel and gamma as set by ``set_kernel``)."""
        return LayerSettings(self.D, self.H, self.d, self.d_v, self.d_out, self.kernel,
                             self.gamma, self.init, self.W_Q.dtype, self.W_Q.device)

    def copy(self, kernel: str | None = None) -> "AttentionLayer":
        """A new layer with the same settings and (a copy of) the weights;
        ``kernel``: switch the copy to another kernel (the weights are kept)."""
        new = self.settings.layer(qk_scale=self.qk_scale, seed=0)
        new.load_state_dict(self.state_dict())
        if kernel is not None:
            new.set_kernel(kernel)
        return new

    def extra_repr(self) -> str:
        return (
            f"D={self.D}, H={self.H}, d={self.d}, d_v={self.d_v}, d_out={self.d_out}, "
            f"kernel={self.kernel!r}, init={self.init!r}, qk_scale={self.qk_scale}"
        )

    # ---------------------------------------------------------------- forward
    def _check_weights(self) -> None:
        """Raise if a weight was replaced by a tensor of the wrong shape (cheap:
        shapes only)."""
        H, D, d, d_v, d_out = self.H, self.D, self.d, self.d_v, self.d_out
        expected = {
            "W_Q": ((H, D, d), "(H, D, d)"),
            "W_K": ((H, D, d), "(H, D, d)"),
            "W_V": ((H, D, d_v), "(H, D, d_v)"),
            "W_O": ((H * d_v, d_out), "(H*d_v, d_out)"),
        }
        for name, (shape, symbols) in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"{name} must have shape {symbols} = {shape} for this layer, got"
                    f" {got}"
                )

    def _check_input(self, X: torch.Tensor) -> torch.Tensor:
        self._check_weights()
        check_tensor(X, "X", shape=(None, None, self.D), nonempty=True)
        return check_matches(X, "X", self.W_Q, "the layer's weights")

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """Attention matrices of every head. X: (N, n, D) -> S: (N, H, n, n)."""
        self._check_input(X)
        Q = torch.einsum("bnD,hDd->bhnd", X, self.W_Q)
        K = torch.einsum("bnD,hDd->bhnd", X, self.W_K)
        if self.kernel.startswith("gaussian"):
            return self.kernel_fn(Q, K, gamma=self.gamma)
        return self.kernel_fn(Q, K)

    def heads(self, X: torch.Tensor) -> torch.Tensor:
        """Per-head outputs S^h X W_V^h. X: (N, n, D) -> (N, H, n, d_v)."""
        S = self.attention(X)
        values = torch.einsum("bnD,hDv->bhnv", X, self.W_V)
        return S @ values

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X: (N, n, D) -> MH(X): (N, n, d_out)."""
        heads = self.heads(X)  # (N, H, n, d_v)
        N, H, n, d_v = heads.shape
        concat = heads.permute(0, 2, 1, 3).reshape(N, n, H * d_v)
        return concat @ self.W_O


def squared_loss(prediction: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """f = 1/(2N) sum_i ||prediction_i - Y_i||_F^2. prediction, Y: (N, n, d_out) ->
    scalar."""
    check_tensor(prediction, "prediction", ndim=3, finite=False, nonempty=True)
    check_tensor(Y, "Y", ndim=3, nonempty=True)
    if prediction.shape != Y.shape:
        raise ValueError(
            f"Y must have the prediction's shape {tuple(prediction.shape)}, got"
            f" {tuple(Y.shape)}"
        )
    N = prediction.shape[0]
    return 0.5 * ((prediction - Y) ** 2).sum() / N


def functional_loss(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = squared_loss,
) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """params -> loss_fn(model_params(X), Y): the loss as a function of parameter
    values.

    ``params`` holds values for any subset of the parameters; the others (and the
    buffers) keep copies of their values at the time of this call, and the model
    itself is never modified. Evaluated with ``torch.func.functional_call``, so the
    result is differentiable in ``params`` (``torch.func.grad`` / ``hessian`` /
    ``jvp``). An unknown name raises ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(X, torch.Tensor) or not isinstance(Y, torch.Tensor):
        raise TypeError("X and Y must be torch.Tensors")
    fixed = {k: v.detach().clone() for k, v in model.named_parameters()}
    fixed.update({k: v.detach().clone() for k, v in model.named_buffers()})

    def loss(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        check_param_dict(params, fixed, "params")
        return loss_fn(functional_call(model, {**fixed, **params}, (X,)), Y)

    return loss
