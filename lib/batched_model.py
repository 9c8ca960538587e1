"""The batched attention layer: M independent copies of ``lib.model.AttentionLayer``
evaluated in one computation (the M models stacked along a leading axis of every
weight).

``BatchedAttentionLayer`` evaluates all models at once; ``per_model_loss`` gives their M
losses.
``lib.batched`` trains them (``train_batched``).

Two evaluation layouts compute the same function (``IMPLEMENTATIONS``): batched matrix
products with the kernels of ``lib.attention`` (GPUs, long sequences) and, on the CPU
for short sequences, a broadcast layout with one forward pass (``_broadcast_forward``)
whose intermediates the hand-derived backward (``_broadcast_loss_and_grads``, checked
against autograd in the tests) reuses. Where a sequence is short, a batched product of
thousands of n x n matrices is dominated by per-matrix overhead; the broadcast layout
turns it into a few vectorised elementwise operations.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from .attention import default_gamma
from .model import WEIGHT_NAMES, AttentionLayer, LayerSettings
from .validation import (
    check_choice,
    check_int,
    check_positive_int,
    check_seed,
    check_matches,
    check_tensor,
)

__all__ = [
    "BatchedAttentionLayer",
    "IMPLEMENTATIONS",
    "per_model_loss",
    "squared_losses",
    "model_index",
    "check_data",
]

# : How ``BatchedAttentionLayer`` evaluates the attention of all models (``impl``
# argument).
IMPLEMENTATIONS = {
    "auto": (
        "'broadcast' on the CPU for short sequences (n <= 32, temporaries of at most"
        " 2**22 entries), else 'bmm'"
    ),
    "bmm": (
        "batched matrix products with the kernels of lib.attention (models, samples and"
        " heads as the leading batch axes); best on GPUs and for long sequences"
    ),
    "broadcast": (
        "per model, a features x tokens x samples layout (samples contiguous): the"
        " projections are single matrix products and the n x n products are broadcast"
        " products summed over the short axis, vectorised over models, heads and"
        " samples; much faster on the CPU for short sequences, where batched products"
        " of tiny matrices and softmaxes over short rows are slow. Implements the"
        " kernels softmax, gaussian and gaussian_normalized with the formulas of"
        " lib.attention"
    ),
}
_BROADCAST_KERNELS = ("softmax", "gaussian", "gaussian_normalized")
_BROADCAST_MAX_ELEMENTS = 2**22
_BROADCAST_MAX_TOKENS = 32


def model_index(m: object, M: int) -> int:
    """``m`` as an index in [0, M) (negative values count from the end, as for
    lists)."""
    m = check_int(m, "m (a model index)")
    if not -M <= m < M:
        raise IndexError(f"model index {m} out of range for M = {M}")
    return m % M


def _per_model_floats(value: object, M: int, name: str) -> list[float]:
    """A scalar broadcast to M floats, or a sequence / 1-D tensor / array of exactly
    M numbers."""
    if isinstance(value, bool):
        raise TypeError(
            f"{name} must be a number or a sequence of {M} numbers, got {value!r}")
    if isinstance(value, (int, float)):
        return [float(value)] * M
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [float(value)] * M
        if value.dim() != 1:
            raise ValueError(
                f"{name} must be a scalar or have shape ({M},), got shape"
                f" {tuple(value.shape)}"
            )
        values = [float(v) for v in value.detach().cpu().tolist()]
    elif isinstance(value, np.ndarray):
        if value.ndim == 0:
            return [float(value)] * M
        if value.ndim != 1:
            raise ValueError(
                f"{name} must be a scalar or have shape ({M},), got shape {value.shape}"
            )
        values = [float(v) for v in value.tolist()]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(
                    f"{name} must contain numbers, got {v!r} ({type(v).__name__})")
            values.append(float(v))
    else:
        raise TypeError(
            f"{name} must be a number or a sequence of {M} numbers, got"
            f" {type(value).__name__}"
        )
    if len(values) != M:
        raise ValueError(
            f"{name} must have one entry per model (M = {M}), got {len(values)}")
    return values


class _BroadcastForward(NamedTuple):
    """Intermediates of the broadcast-layout forward pass (q, k, raw: Gaussian
    kernels only)."""

    Q: torch.Tensor  # (M, H, d, n, N)
    K: torch.Tensor
    V: torch.Tensor  # (M, H, d_v, n, N)
    q: torch.Tensor | None  # centred queries and keys
    k: torch.Tensor | None
    raw: torch.Tensor | None  # squared distances before the clamp at 0: (M, H, n, n, N)
    gamma: float
    S: torch.Tensor  # (M, H, n, n, N)
    heads: torch.Tensor  # (M, H, d_v, n, N)
    out: torch.Tensor  # (M, d_out, n, N)


class BatchedAttentionLayer(nn.Module):
    """M independent copies of ``lib.model.AttentionLayer``, evaluated in one
    batched computation.

    Args:
        M: number of models.
        D and the keyword settings H, d, d_v, d_out, kernel, gamma, init, dtype,
        device: a
            ``lib.model.LayerSettings`` shared by all models (as for
            ``AttentionLayer``).
        qk_scale: one attention scale for all models, or one per model (a
        sequence of length M).
        seeds: one initialisation seed per model (length M). Model m then has
        exactly the weights of
            ``AttentionLayer(..., seed=seeds[m], qk_scale=qk_scale[m])``.
            None: the models draw from torch's global generator one after
            the other, as M successive ``AttentionLayer`` calls do.
        impl: how the attention of all models is evaluated, one of
        ``IMPLEMENTATIONS`` ("auto" by
            default); every choice computes the same function (tested
            against ``AttentionLayer``).

    Parameters: W_Q (M, H, D, d), W_K (M, H, D, d), W_V (M, H, D, d_v), W_O (M,
    H*d_v, d_out).
    """

    def __init__(
        self,
        M: int,
        D: int,
        *,
        qk_scale: float | Sequence[float] = 1.0,
        seeds: Sequence[int] | None = None,
        impl: str = "auto",
        **settings,
    ) -> None:
        super().__init__()
        M = check_positive_int(M, "M")
        self.impl = check_choice(impl, "impl", list(IMPLEMENTATIONS))
        scales = _per_model_floats(qk_scale, M, "qk_scale")
        if seeds is None:
            seed_list: list[int | None] = [None] * M
        else:
            if isinstance(seeds, (str, bytes)) or not isinstance(
                    seeds, (Sequence, range, np.ndarray, torch.Tensor)):
                raise TypeError(
                    f"seeds must be a sequence of {M} non-negative integers, got"
                    f" {type(seeds).__name__}"
                )
            seed_list = [
                int(s) if isinstance(s, (np.integer, torch.Tensor)) else s
                for s in seeds
            ]
            if len(seed_list) != M:
                raise ValueError(
                    f"seeds must have one entry per model (M = {M}), got"
                    f" {len(seed_list)}"
                )
            for s in seed_list:
                try:
                    check_seed(s, "seeds")
                except ValueError:
                    raise ValueError(
                        f"seeds must be non-negative integers below 2**32, got {s!r}"
                    ) from None
        settings = LayerSettings(D, **settings)
        self._setup([
            settings.layer(qk_scale=scale, seed=seed)
            for scale, seed in zip(scales, seed_list)
        ])

    # ------------------------------------------------------------------ set-up
    @classmethod
    def from_layers(cls, layers: Sequence[AttentionLayer],
                    impl: str = "auto") -> "BatchedAttentionLayer":
        """Stack existing layers (same sizes, kernel, gamma, dtype and device)
        into one batched model.

        The weights are copied: training the batched model leaves the layers unchanged.
        """
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj.impl = check_choice(impl, "impl", list(IMPLEMENTATIONS))
        obj._setup(list(layers))
        return obj

    def _setup(self, layers: list[AttentionLayer]) -> None:
        if not layers:
            raise ValueError("layers must contain at least one AttentionLayer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, AttentionLayer):
                raise TypeError(
                    f"layers[{i}] must be a lib.model.AttentionLayer, got"
                    f" {type(layer).__name__}"
                )
        first = layers[0]
        for attr in ("D", "H", "d", "d_v", "d_out", "kernel", "gamma"):
            values = {getattr(layer, attr) for layer in layers}
            if len(values) > 1:
                raise ValueError(
                    f"all layers must share {attr}, got {sorted(map(repr, values))}")
        dtypes = {layer.W_Q.dtype for layer in layers}
        devices = {layer.W_Q.device for layer in layers}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"all layers must share dtype and device, got {dtypes} and {devices}")
        self.M = len(layers)
        self.D, self.H, self.d, self.d_v, self.d_out = (
            first.D,
            first.H,
            first.d,
            first.d_v,
            first.d_out,
        )
        inits = {layer.init for layer in layers}
        self.init = inits.pop() if len(inits) == 1 else "mixed"
        self.qk_scales = tuple(layer.qk_scale for layer in layers)
        self.set_kernel(first.kernel, first.gamma)
        for name in WEIGHT_NAMES:
            stacked = torch.stack([getattr(layer, name).detach()
                                   for layer in layers]).clone()
            self.register_parameter(name, nn.Parameter(stacked))

    # : Switch the attention kernel of every model (weights are kept): as
    # ``AttentionLayer``'s.
    set_kernel = AttentionLayer.set_kernel

    def layer(self, m: int) -> AttentionLayer:
        """A new ``AttentionLayer`` holding (a copy of) model m's weights."""
        m = model_index(m, self.M)
        layer = self.settings.layer(qk_scale=self.qk_scales[m], seed=0)
        with torch.no_grad():
            for name in WEIGHT_NAMES:
                getattr(layer, name).copy_(getattr(self, name)[m])
        return layer

    @property
    def settings(self) -> LayerSettings:
        """The settings every model shares (init "lecun" when the models were
        stacked from layers with different schemes)."""
        init = self.init if self.init != "mixed" else "lecun"
        return LayerSettings(self.D, self.H, self.d, self.d_v, self.d_out, self.kernel,
                             self.gamma, init, self.W_Q.dtype, self.W_Q.device)

    def layers(self) -> list[AttentionLayer]:
        """All M models as separate ``AttentionLayer`` copies."""
        return [self.layer(m) for m in range(self.M)]

    def extra_repr(self) -> str:
        return (
            f"M={self.M}, D={self.D}, H={self.H}, d={self.d}, d_v={self.d_v},"
            f" d_out={self.d_out}, kernel={self.kernel!r}, init={self.init!r},"
            f" impl={self.impl!r}"
        )

    # ---------------------------------------------------------------- forward
    def _check_input(self, X: torch.Tensor) -> torch.Tensor:
        check_tensor(X, "X", ndim=(3, 4), finite=False, nonempty=True)
        if X.dim() == 3:
            check_tensor(X, "X", shape=(None, None, self.D))
        else:
            check_tensor(X, "X", shape=(self.M, None, None, self.D))
        return check_matches(X, "X", self.W_Q, "the layer's weights")

    def _use_broadcast(self, X: torch.Tensor) -> bool:
        if self.impl != "auto":
            return self.impl == "broadcast"
        if self.kernel not in _BROADCAST_KERNELS or X.device.type != "cpu":
            return False
        N, n = X.shape[-3], X.shape[-2]
        largest = n * n * max(
            self.d, self.d_v) * self.H * self.M * N  # entries of the largest temporary
        return n <= _BROADCAST_MAX_TOKENS and largest <= _BROADCAST_MAX_ELEMENTS

    # -- the "bmm" path: models, samples and heads as leading batch axes,
    # lib.attention kernels
    def _project(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """X: (N, n, D) or (M, N, n, D), W: (M, H, D, k) -> X W per model and
        head: (M, N, H, n, k).

        Shared X: one matrix product (N*n, D) @ (D, M*H*k); per-model X: one
        batched product over M.
        """
        M, H, D, k = W.shape
        if X.dim() == 3:
            N, n, _ = X.shape
            out = X.reshape(N * n, D) @ W.permute(2, 0, 1, 3).reshape(D, M * H * k)
            return out.view(N, n, M, H, k).permute(2, 0, 3, 1, 4)
        _, N, n, _ = X.shape
        out = torch.bmm(X.reshape(M, N * n, D),
                        W.permute(0, 2, 1, 3).reshape(M, D, H * k))
        return out.view(M, N, n, H, k).permute(0, 1, 3, 2, 4)

    def _bmm_core(self,
                  X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """S: (M, N, H, n, n), heads: (M, N, H, n, d_v), output: (M, N, n, d_out)."""
        Q, K, V = (self._project(X, W) for W in (self.W_Q, self.W_K, self.W_V))
        if self.kernel.startswith("gaussian"):
            S = self.kernel_fn(Q, K, gamma=self.gamma)
        else:
            S = self.kernel_fn(Q, K)
        heads = S @ V
        M, N, H, n, d_v = heads.shape
        concat = heads.transpose(2, 3).reshape(M, N * n, H * d_v)
        out = torch.bmm(concat, self.W_O).view(M, N, n, self.d_out)
        return S, heads, out

    # -- the "broadcast" path: per model, features x tokens x samples (samples
    # contiguous)
    def _prepare(self, X: torch.Tensor) -> torch.Tensor:
        """X in the layout of the broadcast path: (D, n*N) shared or (M, D,
        n*N), entry [D, i*N + b]."""
        if X.dim() == 3:
            N, n, D = X.shape
            return X.permute(2, 1, 0).reshape(D, n * N).contiguous()
        M, N, n, D = X.shape
        return X.permute(0, 3, 2, 1).reshape(M, D, n * N).contiguous()

    def _broadcast_forward(self, Xp: torch.Tensor, N: int) -> "_BroadcastForward":
        """The broadcast-layout forward pass with its intermediates (Xp from
        ``_prepare``).

        The projections are one matrix product for all models; the n x n
        products are broadcast products summed over the short axis, vectorised
        over the models, heads and samples. The formulas are those of
        ``lib.attention``; ``_broadcast_loss_and_grads`` differentiates them by
        hand, reusing these intermediates.
        """
        if self.kernel not in _BROADCAST_KERNELS:
            raise ValueError(
                f"impl='broadcast' supports the kernels {_BROADCAST_KERNELS}, got"
                f" {self.kernel!r}"
            )
        M, H, d, d_v = self.M, self.H, self.d, self.d_v
        n = Xp.shape[-1] // N
        width = 2 * d + d_v
        W = torch.cat([self.W_Q, self.W_K, self.W_V], dim=-1)  # (M, H, D, 2d + d_v)
        W = W.transpose(2, 3).reshape(M, H * width, self.D)
        T = (W @ Xp).view(M, H, width, n,
                          N)  # queries, keys, values: [m, h, feature, i, b]
        Q, K, V = T.split([d, d, d_v], dim=2)
        q = k = raw = None
        gamma = default_gamma(d) if self.gamma is None else self.gamma
        if self.kernel == "softmax":
            scores = ((Q * (1.0 / math.sqrt(d))).unsqueeze(4) * K.unsqueeze(3)).sum(
                2)  # (M, H, n, n, N)
            S = torch.softmax(scores, dim=3)
        else:
            # As lib.attention.pairwise_sq_distances: centre, expand
            # ||q||^2 + ||k||^2 - 2 q.k, clamp at 0.
            centre = 0.5 * (
                Q.mean(dim=3, keepdim=True) + K.mean(dim=3, keepdim=True)).detach()
            q, k = Q - centre, K - centre
            q_sq = (q * q).sum(2).unsqueeze(3)  # (M, H, n, 1, N)
            k_sq = (k * k).sum(2).unsqueeze(2)  # (M, H, 1, n, N)
            raw = q_sq + k_sq - 2.0 * (q.unsqueeze(4) * k.unsqueeze(3)).sum(2)
            logits = -gamma * raw.clamp_min(0.0)
            S = torch.exp(logits) if self.kernel == "gaussian" else torch.softmax(
                logits, dim=3)
        heads = (S.unsqueeze(2) * V.unsqueeze(3)).sum(4)  # (M, H, d_v, n, N)
        out = self.W_O.transpose(1, 2) @ heads.reshape(M, H * d_v,
                                                       n * N)  # (M, d_out, n*N)
        return _BroadcastForward(Q, K, V, q, k, raw, gamma, S, heads,
                                 out.view(M, self.d_out, n, N))

    def _broadcast_core(self, Xp: torch.Tensor,
                        N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Xp from ``_prepare`` -> S: (M, H, n, n, N), heads: (M, H, d_v, n, N),
        output: (M, d_out, n, N)."""
        forward = self._broadcast_forward(Xp, N)
        return forward.S, forward.heads, forward.out

    def _broadcast_loss_and_grads(
        self, Xp: torch.Tensor, N: int, Yp: torch.Tensor, names: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-model squared loss and its gradients in ``names``, by
        hand-derived backpropagation through the intermediates of
        ``_broadcast_forward``.

        Xp from ``_prepare``; Yp: targets in the output layout (M or 1, d_out,
        n, N). Returns (f: (M,), {name: gradient of f_m in model m's weights,
        shaped like the parameter}). Equal to autograd through the forward pass
        (tested), with fewer and larger operations: this is the training path of
        ``train_batched`` on the CPU.
        """
        with torch.no_grad():
            M, H, d, d_v, D = self.M, self.H, self.d, self.d_v, self.D
            n = Xp.shape[-1] // N
            fw = self._broadcast_forward(Xp, N)
            Q, K, V, S, q, k, raw, gamma = (
                fw.Q,
                fw.K,
                fw.V,
                fw.S,
                fw.q,
                fw.k,
                fw.raw,
                fw.gamma,
            )
            heads = fw.heads.reshape(M, H * d_v, n * N)  # [m, (h, v), (i, b)]
            W_O = self.W_O
            R = fw.out - Yp
            loss = 0.5 * (R * R).sum(dim=(1, 2, 3)) / N
            G = (R / N).reshape(M, self.d_out, n * N)  # d f_m / d output
            grads: dict[str, torch.Tensor] = {}
            if "W_O" in names:
                grads["W_O"] = heads @ G.transpose(1, 2)
            attention_names = [name for name in ("W_Q", "W_K", "W_V") if name in names]
            if attention_names:
                gH = (W_O @ G).view(M, H, d_v, n, N)  # d f / d heads
                parts = {}
                if "W_V" in names:
                    parts["W_V"] = (S.unsqueeze(2) * gH.unsqueeze(4)).sum(3)
                if "W_Q" in names or "W_K" in names:
                    gS = (gH.unsqueeze(4) * V.unsqueeze(3)).sum(2)  # (M, H, n, n, N)
                    if self.kernel == "gaussian":
                        gL = gS * S
                    # softmax rows (the Softmax kernel and the
                    # normalised Gaussian)
                    else:
                        gL = S * (gS - (gS * S).sum(3, keepdim=True))
                    if self.kernel == "softmax":
                        gR = gL / math.sqrt(d)  # d f / d (q_i . k_j)
                        if "W_Q" in names:
                            parts["W_Q"] = (gR.unsqueeze(2) * K.unsqueeze(3)).sum(4)
                        if "W_K" in names:
                            parts["W_K"] = (gR.unsqueeze(2) * Q.unsqueeze(4)).sum(3)
                    else:
                        gD = (-gamma) * gL * (
                            raw >= 0
                        )  # d f / d ||q_i - k_j||^2 (clamp_min passes raw >= 0)
                        if "W_Q" in names:
                            parts["W_Q"] = 2.0 * (
                                q * gD.sum(3).unsqueeze(2) -
                                (gD.unsqueeze(2) * k.unsqueeze(3)).sum(4))
                        if "W_K" in names:
                            parts["W_K"] = 2.0 * (
                                k * gD.sum(2).unsqueeze(2) -
                                (gD.unsqueeze(2) * q.unsqueeze(4)).sum(3))
                widths = [d_v if name == "W_V" else d for name in attention_names]
                gT = torch.cat([parts[name] for name in attention_names],
                               dim=2).reshape(M, H * sum(widths), n * N)
                gW = (gT @ Xp.transpose(-1, -2)).view(M, H, sum(widths),
                                                      D).transpose(2, 3)
                for name, part in zip(attention_names, gW.split(widths, dim=3)):
                    grads[name] = part.contiguous()
            return loss, {name: grads[name] for name in names}

    # -- public evaluation
    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """Attention matrices of every model and head. X: (N, n, D) or (M, N, n,
        D) -> (M, N, H, n, n)."""
        self._check_input(X)
        if self._use_broadcast(X):
            return self._broadcast_core(self._prepare(X),
                                        X.shape[-3])[0].permute(0, 4, 1, 2, 3)
        return self._bmm_core(X)[0]

    def heads(self, X: torch.Tensor) -> torch.Tensor:
        """Per-head outputs S^h X W_V^h. X: (N, n, D) or (M, N, n, D) -> (M, N,
        H, n, d_v)."""
        self._check_input(X)
        if self._use_broadcast(X):
            return self._broadcast_core(self._prepare(X),
                                        X.shape[-3])[1].permute(0, 4, 1, 3, 2)
        return self._bmm_core(X)[1]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X: (N, n, D) shared by all models, or (M, N, n, D) one per model ->
        (M, N, n, d_out)."""
        self._check_input(X)
        return self._evaluator(X)()

    def _evaluator(self, X: torch.Tensor) -> Callable[[], torch.Tensor]:
        """A function returning forward(X) for the current weights (X checked
        and laid out once)."""
        if self._use_broadcast(X):
            Xp, N = self._prepare(X), X.shape[-3]
            return lambda: self._broadcast_core(Xp, N)[2].permute(0, 3, 2, 1)
        return lambda: self._bmm_core(X)[2]


def check_data(model: BatchedAttentionLayer, X: torch.Tensor, Y: torch.Tensor) -> None:
    model._check_input(X)
    check_tensor(Y, "Y", ndim=(3, 4))
    if Y.dim() == 4 and Y.shape[0] != model.M:
        raise ValueError(
            f"Y of shape (M, N, n, d_out) must have M = {model.M} on axis 0, got"
            f" {tuple(Y.shape)}"
        )
    if X.shape[-3:-1] != Y.shape[-3:-1]:
        raise ValueError(
            "X (..., N, n, D) and Y (..., N, n, d_out) must agree in N and n, got"
            f" {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if Y.shape[-1] != model.d_out:
        raise ValueError(
            f"Y must have d_out = {model.d_out} on its last axis, got shape"
            f" {tuple(Y.shape)}"
        )
    if Y.dtype != model.W_Q.dtype or Y.device != model.W_Q.device:
        raise ValueError(
            f"Y must have the model's dtype {model.W_Q.dtype} and device"
            f" {model.W_Q.device}, got {Y.dtype} on {Y.device}"
        )


def squared_losses(prediction: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """(M,) losses 1/(2N) sum_i ||prediction_m,i - Y_m,i||_F^2.

    prediction: (M, N, n, d_out); Y: (M, N, n, d_out) or (N, n, d_out) shared by all
    models.
    """
    return 0.5 * ((prediction - Y) ** 2).sum(dim=(1, 2, 3)) / prediction.shape[1]


def per_model_loss(model: BatchedAttentionLayer, X: torch.Tensor,
                   Y: torch.Tensor) -> torch.Tensor:
    """(M,) losses f_m = 1/(2N) sum_i ||MH_m(X_m,i) - Y_m,i||_F^2 of a batched model.

    X: (N, n, D) shared or (M, N, n, D); Y: (N, n, d_out) shared or (M, N, n,
    d_out). Entry m equals ``lib.model.squared_loss(model.layer(m)(X_m), Y_m)``;
    differentiable.
    """
    if not isinstance(model, BatchedAttentionLayer):
        raise TypeError(
            f"model must be a BatchedAttentionLayer, got {type(model).__name__}")
    check_data(model, X, Y)
    return squared_losses(model(X), Y)
