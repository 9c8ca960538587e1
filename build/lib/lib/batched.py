"""Many independent attention layers trained in one batched computation.

The seed studies of the book (how often does a kernel reach the global optimum? how does the rate
depend on the step size?) train the same small layer from dozens of initialisations. Training them
one at a time with ``lib.trainer.train`` costs one Python-level step per model and per iteration;
here the M models are stacked along a leading axis and every GD step is a single set of batched
tensor operations for all of them.

    model = BatchedAttentionLayer(64, D=8, seeds=range(64))       # 64 copies of AttentionLayer
    history = train_batched(model, X, Y, steps=200, lr=0.01)      # X: (N, n, D) or (64, N, n, D)
    history.loss          # (steps_run + 1, 64) numpy array, NaN after a model stopped
    history.run(3)        # model 3's record as a lib.trainer.History
    train_batched(model, X, Y, steps=200, lr=[0.01, 0.02, ...])   # one step size per model

Model m follows the trajectory ``lib.trainer.train`` produces for
``AttentionLayer(..., seed=seeds[m], qk_scale=qk_scale[m])`` up to floating-point rounding (the
sums are evaluated in a different order; the tests require agreement to 1e-10 in float64),
including the stopping rules, which act per model: a model that reaches ``loss_tol``, diverges or
produces non-finite values is frozen from that step on while the others continue.

Two evaluation layouts compute the same function (``IMPLEMENTATIONS``): batched matrix products
with the kernels of ``lib.attention`` (GPUs, long sequences) and, on the CPU for short sequences, a
broadcast layout in which training uses hand-derived gradients (checked against autograd in the
tests). Where a sequence is short, a batched product of thousands of n x n matrices is dominated by
per-matrix overhead; the broadcast layout turns it into a few vectorised elementwise operations.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .attention import default_gamma, get_kernel
from .model import WEIGHT_NAMES, AttentionLayer
from .trainer import GDConfig, History, TrainingError, progress_bar
from .validation import check_choice, check_positive_float, check_positive_int, check_tensor

__all__ = ["BatchedAttentionLayer", "BatchedStepState", "BatchedHistory", "train_batched", "IMPLEMENTATIONS"]

#: How ``BatchedAttentionLayer`` evaluates the attention of all models (``impl`` argument).
IMPLEMENTATIONS = {
    "auto": "'broadcast' on the CPU for short sequences (n <= 32, temporaries of at most 2**22 entries), "
    "else 'bmm'",
    "bmm": "batched matrix products with the kernels of lib.attention (models, samples and heads as the "
    "leading batch axes); best on GPUs and for long sequences",
    "broadcast": "per model, a features x tokens x samples layout (samples contiguous): the projections "
    "are single matrix products and the n x n products are broadcast products summed over the short "
    "axis, vectorised over models, heads and samples; much faster on the CPU for short sequences, where "
    "batched products of tiny matrices and softmaxes over short rows are slow. Implements the kernels "
    "softmax, gaussian and gaussian_normalized with the formulas of lib.attention",
}
_BROADCAST_KERNELS = ("softmax", "gaussian", "gaussian_normalized")
_BROADCAST_MAX_ELEMENTS = 2**22
_BROADCAST_MAX_TOKENS = 32


def _per_model_floats(value: object, M: int, name: str) -> list[float]:
    """A scalar broadcast to M floats, or a sequence / 1-D tensor / array of exactly M numbers."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a sequence of {M} numbers, got {value!r}")
    if isinstance(value, (int, float)):
        return [float(value)] * M
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [float(value)] * M
        if value.dim() != 1:
            raise ValueError(f"{name} must be a scalar or have shape ({M},), got shape {tuple(value.shape)}")
        values = [float(v) for v in value.detach().cpu().tolist()]
    elif isinstance(value, np.ndarray):
        if value.ndim == 0:
            return [float(value)] * M
        if value.ndim != 1:
            raise ValueError(f"{name} must be a scalar or have shape ({M},), got shape {value.shape}")
        values = [float(v) for v in value.tolist()]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must contain numbers, got {v!r} ({type(v).__name__})")
            values.append(float(v))
    else:
        raise TypeError(f"{name} must be a number or a sequence of {M} numbers, got {type(value).__name__}")
    if len(values) != M:
        raise ValueError(f"{name} must have one entry per model (M = {M}), got {len(values)}")
    return values


class BatchedAttentionLayer(nn.Module):
    """M independent copies of ``lib.model.AttentionLayer``, evaluated in one batched computation.

    Args:
        M: number of models.
        D, H, d, d_v, d_out, kernel, gamma, init: as for ``AttentionLayer`` (shared by all models).
        qk_scale: one attention scale for all models, or one per model (a sequence of length M).
        seeds: one initialisation seed per model (length M). Model m then has exactly the weights of
            ``AttentionLayer(..., seed=seeds[m], qk_scale=qk_scale[m])``. None: the models draw from
            torch's global generator one after the other, as M successive ``AttentionLayer`` calls do.
        dtype, device: parameter dtype and device (default float64, ``lib.get_device()``).
        impl: how the attention of all models is evaluated, one of ``IMPLEMENTATIONS`` ("auto" by
            default); every choice computes the same function (tested against ``AttentionLayer``).

    Parameters: W_Q (M, H, D, d), W_K (M, H, D, d), W_V (M, H, D, d_v), W_O (M, H*d_v, d_out).
    """

    def __init__(
        self,
        M: int,
        D: int,
        H: int = 1,
        d: int | None = None,
        d_v: int | None = None,
        d_out: int | None = None,
        kernel: str = "softmax",
        gamma: float | None = None,
        init: str = "lecun",
        qk_scale: float | Sequence[float] = 1.0,
        seeds: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        M = check_positive_int(M, "M")
        self.impl = check_choice(impl, "impl", list(IMPLEMENTATIONS))
        scales = _per_model_floats(qk_scale, M, "qk_scale")
        if seeds is None:
            seed_list: list[int | None] = [None] * M
        else:
            if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, range, np.ndarray, torch.Tensor)):
                raise TypeError(f"seeds must be a sequence of {M} non-negative integers, got {type(seeds).__name__}")
            seed_list = [int(s) if isinstance(s, (np.integer, torch.Tensor)) else s for s in seeds]
            if len(seed_list) != M:
                raise ValueError(f"seeds must have one entry per model (M = {M}), got {len(seed_list)}")
            for s in seed_list:
                if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                    raise ValueError(f"seeds must be non-negative integers, got {s!r}")
        layers = [
            AttentionLayer(
                D, H=H, d=d, d_v=d_v, d_out=d_out, kernel=kernel, gamma=gamma, init=init,
                qk_scale=scale, seed=seed, dtype=dtype, device=device,
            )
            for scale, seed in zip(scales, seed_list)
        ]
        self._setup(layers)

    # ------------------------------------------------------------------ set-up
    @classmethod
    def from_layers(cls, layers: Sequence[AttentionLayer], impl: str = "auto") -> "BatchedAttentionLayer":
        """Stack existing layers (same sizes, kernel, gamma, dtype and device) into one batched model.

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
                raise TypeError(f"layers[{i}] must be a lib.model.AttentionLayer, got {type(layer).__name__}")
        first = layers[0]
        for attr in ("D", "H", "d", "d_v", "d_out", "kernel", "gamma"):
            values = {getattr(layer, attr) for layer in layers}
            if len(values) > 1:
                raise ValueError(f"all layers must share {attr}, got {sorted(map(repr, values))}")
        dtypes = {layer.W_Q.dtype for layer in layers}
        devices = {layer.W_Q.device for layer in layers}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"all layers must share dtype and device, got {dtypes} and {devices}")
        self.M = len(layers)
        self.D, self.H, self.d, self.d_v, self.d_out = first.D, first.H, first.d, first.d_v, first.d_out
        inits = {layer.init for layer in layers}
        self.init = inits.pop() if len(inits) == 1 else "mixed"
        self.qk_scales = tuple(layer.qk_scale for layer in layers)
        self.set_kernel(first.kernel, first.gamma)
        for name in WEIGHT_NAMES:
            stacked = torch.stack([getattr(layer, name).detach() for layer in layers]).clone()
            self.register_parameter(name, nn.Parameter(stacked))

    def set_kernel(self, kernel: str, gamma: float | None = None) -> None:
        """Switch the attention kernel of every model (weights are kept)."""
        self.kernel_fn = get_kernel(kernel)
        self.kernel = kernel
        if gamma is not None:
            check_positive_float(gamma, "gamma")
        self.gamma = gamma

    def layer(self, m: int) -> AttentionLayer:
        """A new ``AttentionLayer`` holding (a copy of) model m's weights."""
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise TypeError(f"m must be an integer model index, got {type(m).__name__}")
        if not -self.M <= m < self.M:
            raise IndexError(f"model index {m} out of range for M = {self.M}")
        m = int(m) % self.M
        layer = AttentionLayer(
            self.D, H=self.H, d=self.d, d_v=self.d_v, d_out=self.d_out, kernel=self.kernel, gamma=self.gamma,
            init=self.init if self.init != "mixed" else "lecun", qk_scale=self.qk_scales[m], seed=0,
            dtype=self.W_Q.dtype, device=self.W_Q.device,
        )
        with torch.no_grad():
            for name in WEIGHT_NAMES:
                getattr(layer, name).copy_(getattr(self, name)[m])
        return layer

    def layers(self) -> list[AttentionLayer]:
        """All M models as separate ``AttentionLayer`` copies."""
        return [self.layer(m) for m in range(self.M)]

    def extra_repr(self) -> str:
        return (
            f"M={self.M}, D={self.D}, H={self.H}, d={self.d}, d_v={self.d_v}, d_out={self.d_out}, "
            f"kernel={self.kernel!r}, init={self.init!r}, impl={self.impl!r}"
        )

    # ---------------------------------------------------------------- forward
    def _check_input(self, X: torch.Tensor) -> torch.Tensor:
        check_tensor(X, "X", ndim=(3, 4), finite=False)
        if X.dim() == 3:
            check_tensor(X, "X", shape=(None, None, self.D))
        else:
            check_tensor(X, "X", shape=(self.M, None, None, self.D))
        if X.dtype != self.W_Q.dtype:
            raise TypeError(f"X has dtype {X.dtype} but the layer's weights are {self.W_Q.dtype}; convert X with .to()")
        if X.device != self.W_Q.device:
            raise ValueError(f"X is on {X.device} but the layer's weights are on {self.W_Q.device}")
        return X

    def _use_broadcast(self, X: torch.Tensor) -> bool:
        if self.impl != "auto":
            return self.impl == "broadcast"
        if self.kernel not in _BROADCAST_KERNELS or X.device.type != "cpu":
            return False
        N, n = X.shape[-3], X.shape[-2]
        largest = n * n * max(self.d, self.d_v) * self.H * self.M * N  # entries of the largest temporary
        return n <= _BROADCAST_MAX_TOKENS and largest <= _BROADCAST_MAX_ELEMENTS

    # -- the "bmm" path: models, samples and heads as leading batch axes, lib.attention kernels
    def _project(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """X: (N, n, D) or (M, N, n, D), W: (M, H, D, k) -> X W per model and head: (M, N, H, n, k).

        Shared X: one matrix product (N*n, D) @ (D, M*H*k); per-model X: one batched product over M.
        """
        M, H, D, k = W.shape
        if X.dim() == 3:
            N, n, _ = X.shape
            out = X.reshape(N * n, D) @ W.permute(2, 0, 1, 3).reshape(D, M * H * k)
            return out.view(N, n, M, H, k).permute(2, 0, 3, 1, 4)
        _, N, n, _ = X.shape
        out = torch.bmm(X.reshape(M, N * n, D), W.permute(0, 2, 1, 3).reshape(M, D, H * k))
        return out.view(M, N, n, H, k).permute(0, 1, 3, 2, 4)

    def _bmm_core(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    # -- the "broadcast" path: per model, features x tokens x samples (samples contiguous)
    def _prepare(self, X: torch.Tensor) -> torch.Tensor:
        """X in the layout of the broadcast path: (D, n*N) shared or (M, D, n*N), entry [D, i*N + b]."""
        if X.dim() == 3:
            N, n, D = X.shape
            return X.permute(2, 1, 0).reshape(D, n * N).contiguous()
        M, N, n, D = X.shape
        return X.permute(0, 3, 2, 1).reshape(M, D, n * N).contiguous()

    def _broadcast_core(self, Xp: torch.Tensor, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Xp from ``_prepare`` -> S: (M, H, n, n, N), heads: (M, H, d_v, n, N), output: (M, d_out, n, N).

        The projections are one matrix product for all models; the n x n products are broadcast
        products summed over the short axis, vectorised over the models, heads and samples. The
        formulas are those of ``lib.attention``.
        """
        if self.kernel not in _BROADCAST_KERNELS:
            raise ValueError(f"impl='broadcast' supports the kernels {_BROADCAST_KERNELS}, got {self.kernel!r}")
        M, H, d, d_v = self.M, self.H, self.d, self.d_v
        n = Xp.shape[-1] // N
        width = 2 * d + d_v
        W = torch.cat([self.W_Q, self.W_K, self.W_V], dim=-1)  # (M, H, D, 2d + d_v)
        W = W.transpose(2, 3).reshape(M, H * width, self.D)
        T = (W @ Xp).view(M, H, width, n, N)  # queries, keys, values: [m, h, feature, i, b]
        Q, K, V = T.split([d, d, d_v], dim=2)
        if self.kernel == "softmax":
            scores = (Q.unsqueeze(4) * K.unsqueeze(3)).sum(2) / math.sqrt(d)  # (M, H, n, n, N)
            S = torch.softmax(scores, dim=3)
        else:
            # As lib.attention.pairwise_sq_distances: centre, expand ||q||^2 + ||k||^2 - 2 q.k, clamp at 0.
            gamma = default_gamma(d) if self.gamma is None else self.gamma
            centre = 0.5 * (Q.mean(dim=3, keepdim=True) + K.mean(dim=3, keepdim=True)).detach()
            q, k = Q - centre, K - centre
            q_sq = (q * q).sum(2).unsqueeze(3)  # (M, H, n, 1, N)
            k_sq = (k * k).sum(2).unsqueeze(2)  # (M, H, 1, n, N)
            dist = (q_sq + k_sq - 2.0 * (q.unsqueeze(4) * k.unsqueeze(3)).sum(2)).clamp_min(0.0)
            logits = -gamma * dist
            S = torch.exp(logits) if self.kernel == "gaussian" else torch.softmax(logits, dim=3)
        heads = (S.unsqueeze(2) * V.unsqueeze(3)).sum(4)  # (M, H, d_v, n, N)
        out = self.W_O.transpose(1, 2) @ heads.reshape(M, H * d_v, n * N)  # (M, d_out, n*N)
        return S, heads, out.view(M, self.d_out, n, N)

    def _broadcast_loss_and_grads(
        self, Xp: torch.Tensor, N: int, Yp: torch.Tensor, names: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-model squared loss and its gradients in ``names``, by hand-derived backpropagation.

        Xp from ``_prepare``; Yp: targets in the output layout (M or 1, d_out, n, N). Returns
        (f: (M,), {name: gradient of f_m in model m's weights, shaped like the parameter}). Equal to
        autograd through ``_broadcast_core`` (tested), with fewer and larger operations: this is the
        training path of ``train_batched`` on the CPU.
        """
        with torch.no_grad():
            M, H, d, d_v, D = self.M, self.H, self.d, self.d_v, self.D
            width = 2 * d + d_v
            n = Xp.shape[-1] // N
            W = torch.cat([self.W_Q, self.W_K, self.W_V], dim=-1).transpose(2, 3).reshape(M, H * width, D)
            T = (W @ Xp).view(M, H, width, n, N)
            Q, K, V = T.split([d, d, d_v], dim=2)  # [m, h, feature, token, sample]
            gaussian = self.kernel != "softmax"
            if not gaussian:
                S = torch.softmax((Q.unsqueeze(4) * K.unsqueeze(3)).sum(2) / math.sqrt(d), dim=3)
            else:
                gamma = default_gamma(d) if self.gamma is None else self.gamma
                centre = 0.5 * (Q.mean(dim=3, keepdim=True) + K.mean(dim=3, keepdim=True))
                q, k = Q - centre, K - centre
                raw = (q * q).sum(2).unsqueeze(3) + (k * k).sum(2).unsqueeze(2) - 2.0 * (q.unsqueeze(4) * k.unsqueeze(3)).sum(2)
                logits = -gamma * raw.clamp_min(0.0)
                S = torch.exp(logits) if self.kernel == "gaussian" else torch.softmax(logits, dim=3)
            heads = (S.unsqueeze(2) * V.unsqueeze(3)).sum(4).reshape(M, H * d_v, n * N)  # [m, (h, v), (i, b)]
            W_O = self.W_O
            R = (W_O.transpose(1, 2) @ heads).view(M, self.d_out, n, N) - Yp
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
                    else:  # softmax rows (the Softmax kernel and the normalised Gaussian)
                        gL = S * (gS - (gS * S).sum(3, keepdim=True))
                    if not gaussian:
                        gR = gL / math.sqrt(d)  # d f / d (q_i . k_j)
                        if "W_Q" in names:
                            parts["W_Q"] = (gR.unsqueeze(2) * K.unsqueeze(3)).sum(4)
                        if "W_K" in names:
                            parts["W_K"] = (gR.unsqueeze(2) * Q.unsqueeze(4)).sum(3)
                    else:
                        gD = (-gamma) * gL * (raw >= 0)  # d f / d ||q_i - k_j||^2 (clamp_min passes raw >= 0)
                        if "W_Q" in names:
                            parts["W_Q"] = 2.0 * (q * gD.sum(3).unsqueeze(2) - (gD.unsqueeze(2) * k.unsqueeze(3)).sum(4))
                        if "W_K" in names:
                            parts["W_K"] = 2.0 * (k * gD.sum(2).unsqueeze(2) - (gD.unsqueeze(2) * q.unsqueeze(4)).sum(3))
                widths = [d_v if name == "W_V" else d for name in attention_names]
                gT = torch.cat([parts[name] for name in attention_names], dim=2).reshape(M, H * sum(widths), n * N)
                gW = (gT @ Xp.transpose(-1, -2)).view(M, H, sum(widths), D).transpose(2, 3)
                for name, part in zip(attention_names, gW.split(widths, dim=3)):
                    grads[name] = part.contiguous()
            return loss, {name: grads[name] for name in names}

    # -- public evaluation
    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """Attention matrices of every model and head. X: (N, n, D) or (M, N, n, D) -> (M, N, H, n, n)."""
        self._check_input(X)
        if self._use_broadcast(X):
            return self._broadcast_core(self._prepare(X), X.shape[-3])[0].permute(0, 4, 1, 2, 3)
        return self._bmm_core(X)[0]

    def heads(self, X: torch.Tensor) -> torch.Tensor:
        """Per-head outputs S^h X W_V^h. X: (N, n, D) or (M, N, n, D) -> (M, N, H, n, d_v)."""
        self._check_input(X)
        if self._use_broadcast(X):
            return self._broadcast_core(self._prepare(X), X.shape[-3])[1].permute(0, 4, 1, 3, 2)
        return self._bmm_core(X)[1]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X: (N, n, D) shared by all models, or (M, N, n, D) one per model -> (M, N, n, d_out)."""
        self._check_input(X)
        return self._evaluator(X)()

    def _evaluator(self, X: torch.Tensor) -> Callable[[], torch.Tensor]:
        """A function returning forward(X) for the current weights (X checked and laid out once)."""
        if self._use_broadcast(X):
            Xp, N = self._prepare(X), X.shape[-3]
            return lambda: self._broadcast_core(Xp, N)[2].permute(0, 3, 2, 1)
        return lambda: self._bmm_core(X)[2]


# ===================================================================== training
@dataclass
class BatchedStepState:
    """What a batched callback sees at step t.

    model: the batched model at theta_t (all M models; use ``model.layer(m)`` for one of them).
    loss: (M,) tensor of f_m(theta_t). grads: {name: (M, ...) gradient tensor}.
    active: (M,) bool tensor, the models whose values are recorded at this step (still training and
    finite); a callback may compute values for every model, the others are stored as NaN.
    """

    step: int
    model: BatchedAttentionLayer
    loss: torch.Tensor
    grads: Mapping[str, torch.Tensor]
    active: torch.Tensor


BatchedCallback = Callable[[BatchedStepState], "Mapping[str, object] | None"]


@dataclass
class BatchedHistory:
    """Record of a batched run of M models.

    loss: (steps_run + 1, M) float64 array, ``loss[t, m]`` = f_m(theta_t); NaN after model m stopped.
    grad_norms: {name: array like loss} of ||grad_name f_m(theta_t)||_F.
    status, messages: per model, as ``History.status`` / ``History.message`` of ``lib.trainer``.
    stopped_at: (M,) int array, the step at which each model stopped (its last recorded step).
    lr: (M,) float array of the step sizes.
    diagnostics: {key: (num_records, M) array} from the callbacks (NaN where a model was not recorded),
    diagnostic_steps: the step of each record, diagnostic_mask: {key: (num_records, M) bool array}
    telling which entries were recorded.
    config: the settings (with per-model step sizes, ``config.lr`` is the first; ``run(m).config``
    carries model m's).
    """

    loss: np.ndarray
    grad_norms: dict[str, np.ndarray]
    status: list[str]
    messages: list[str]
    stopped_at: np.ndarray
    lr: np.ndarray
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostic_steps: list[int] = field(default_factory=list)
    diagnostic_mask: dict[str, np.ndarray] = field(default_factory=dict)
    config: GDConfig | None = None

    @property
    def M(self) -> int:
        return self.loss.shape[1]

    @property
    def steps_run(self) -> int:
        """Number of GD updates of the longest-running model."""
        return self.loss.shape[0] - 1

    @property
    def final_loss(self) -> np.ndarray:
        """(M,) the last recorded loss of every model."""
        return self.loss[self.stopped_at, np.arange(self.M)]

    @property
    def failed(self) -> np.ndarray:
        """(M,) bool: the model diverged or produced non-finite values."""
        return np.array([s in ("diverged", "non_finite") for s in self.status], dtype=bool)

    @property
    def messages_by_status(self) -> dict[str, list[int]]:
        """{status: [model indices]}."""
        out: dict[str, list[int]] = {}
        for m, s in enumerate(self.status):
            out.setdefault(s, []).append(m)
        return out

    def run(self, m: int) -> History:
        """Model m's record as a ``lib.trainer.History`` (the structure a single ``train`` run returns)."""
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise TypeError(f"m must be an integer model index, got {type(m).__name__}")
        if not -self.M <= m < self.M:
            raise IndexError(f"model index {m} out of range for M = {self.M}")
        m = int(m) % self.M
        last = int(self.stopped_at[m]) + 1
        history = History(
            loss=self.loss[:last, m].tolist(),
            grad_norms={name: values[:last, m].tolist() for name, values in self.grad_norms.items()},
            status=self.status[m],
            message=self.messages[m],
            config=dataclasses.replace(self.config, lr=float(self.lr[m])) if self.config is not None else None,
        )
        rows = np.zeros(len(self.diagnostic_steps), dtype=bool)
        for mask in self.diagnostic_mask.values():
            rows |= mask[:, m]
        history.diagnostic_steps = [s for s, keep in zip(self.diagnostic_steps, rows) if keep]
        for key, values in self.diagnostics.items():
            mask = self.diagnostic_mask[key][:, m]
            if mask.any():
                history.diagnostics[key] = values[mask, m].tolist()
        return history

    def runs(self) -> list[History]:
        """``run(m)`` for every model."""
        return [self.run(m) for m in range(self.M)]


def _check_data(model: BatchedAttentionLayer, X: torch.Tensor, Y: torch.Tensor) -> None:
    model._check_input(X)
    check_tensor(Y, "Y", ndim=(3, 4))
    if Y.dim() == 4 and Y.shape[0] != model.M:
        raise ValueError(f"Y of shape (M, N, n, d_out) must have M = {model.M} on axis 0, got {tuple(Y.shape)}")
    if X.shape[-3:-1] != Y.shape[-3:-1]:
        raise ValueError(
            f"X (..., N, n, D) and Y (..., N, n, d_out) must agree in N and n, got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if Y.shape[-1] != model.d_out:
        raise ValueError(f"Y must have d_out = {model.d_out} on its last axis, got shape {tuple(Y.shape)}")
    if Y.dtype != model.W_Q.dtype or Y.device != model.W_Q.device:
        raise ValueError(
            f"Y must have the model's dtype {model.W_Q.dtype} and device {model.W_Q.device}, got {Y.dtype} on {Y.device}"
        )


def _as_row(value: object, M: int, key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(M, float(arr))
    if arr.shape != (M,):
        raise ValueError(f"callback value {key!r} must have shape ({M},) (one value per model), got {arr.shape}")
    return arr


def train_batched(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    config: GDConfig | None = None,
    *,
    lr: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
    callbacks: Sequence[BatchedCallback] = (),
    **overrides,
) -> BatchedHistory:
    """Full-batch GD on every model of ``model`` at once, each on its own loss.

    Model m minimises f_m = 1/(2N) sum_i ||MH_m(X_m,i) - Y_m,i||_F^2; the gradient of sum_m f_m
    (autograd, or the hand-derived gradients of the broadcast layout) gives every model its own
    gradient. X: (N, n, D) shared or (M, N, n, D) per model; Y: (N, n, d_out) shared or
    (M, N, n, d_out).

    Settings: ``config`` / keyword ``overrides`` exactly as for ``lib.trainer.train`` (steps,
    trainable, loss_tol, divergence_factor, on_failure, callback_every, progress). ``lr`` is one step
    size or one per model (a step-size sweep; then ``history.lr`` holds them and ``history.config.lr``
    is only the first). The stopping rules act per model: a model that reaches
    ``loss_tol``, diverges or produces non-finite values is frozen (its updates masked) while the
    others continue; training ends when every model has stopped or after ``steps`` updates. Failures
    are reported by one ``RuntimeWarning`` naming the failed models (or a ``TrainingError`` with
    ``on_failure="raise"``, raised at the first failure). Callbacks receive a ``BatchedStepState``
    and return {key: (M,) values}.
    """
    if not isinstance(model, BatchedAttentionLayer):
        raise TypeError(f"model must be a BatchedAttentionLayer, got {type(model).__name__}")
    if config is None:
        config = GDConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    M = model.M
    if lr is None:
        lrs = [config.lr] * M
    else:
        lrs = _per_model_floats(lr, M, "lr")
        for value in lrs:
            check_positive_float(value, "lr (the step size)")
        config = dataclasses.replace(config, lr=lrs[0])
    _check_data(model, X, Y)
    named = dict(model.named_parameters())
    for name in config.trainable:
        if name not in named:
            raise ValueError(f"unknown name {name!r} in trainable; valid: {', '.join(named)}")
    names = list(config.trainable)
    if len(set(names)) != len(names):
        raise ValueError(f"trainable must not repeat a name, got {config.trainable}")
    params = [named[name] for name in names]
    dtype, device = model.W_Q.dtype, model.W_Q.device
    N = X.shape[-3]
    Yb = Y if Y.dim() == 4 else Y.unsqueeze(0)
    Y_like: torch.Tensor | None = None
    lr_t = torch.tensor(lrs, dtype=dtype, device=device)
    lr_views = [lr_t.view((M,) + (1,) * (p.dim() - 1)) for p in params]

    loss_rows: list[np.ndarray] = []
    norm_rows: list[np.ndarray] = []
    diag_rows: dict[str, list[np.ndarray]] = {}
    mask_rows: dict[str, list[np.ndarray]] = {}
    diag_steps: list[int] = []
    status = ["running"] * M
    messages = [""] * M
    stopped_at = np.full(M, -1, dtype=np.int64)
    active_np = np.ones(M, dtype=bool)
    active_t = torch.ones(M, dtype=torch.bool, device=device)
    masks = [active_t.view((M,) + (1,) * (p.dim() - 1)) for p in params]
    all_active = True
    zero = torch.zeros((), dtype=dtype, device=device)
    initial: np.ndarray | None = None
    threshold = np.empty(M)
    P = len(params)

    manual = model._use_broadcast(X)
    if manual:  # hand-derived gradients in the broadcast layout (the fast CPU path)
        Xp = model._prepare(X)
        Yp = Yb.permute(0, 3, 2, 1).contiguous()  # (M or 1, d_out, n, N)
    else:
        evaluate = model._evaluator(X)
    previous_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    try:
        for step in progress_bar(range(config.steps + 1), config.progress, config.steps + 1):
            if manual:
                per_model, grad_map = model._broadcast_loss_and_grads(Xp, N, Yp, names)
                grads = tuple(grad_map[name] for name in names)
            else:
                prediction = evaluate()
                if Y_like is None:  # Y in the memory layout of the predictions (faster elementwise ops)
                    Y_like = torch.empty_like(prediction).copy_(Yb.expand(prediction.shape))
                per_model = 0.5 * ((prediction - Y_like) ** 2).sum(dim=(1, 2, 3)) / N  # (M,)
                total = per_model.sum() if all_active else torch.where(active_t, per_model, zero).sum()
                grads = torch.autograd.grad(total, params)
            flat = [g.reshape(M, -1) for g in grads]
            norms_t = torch.stack([torch.linalg.vector_norm(g, dim=1) for g in flat])  # (P, M)
            summary = torch.cat([per_model.detach().unsqueeze(0), norms_t]).to("cpu", torch.float64).numpy()
            norms = summary[1:]
            grads_finite = np.isfinite(norms).all(axis=0)
            if not grads_finite.all():  # a norm can overflow although every entry is finite: check exactly
                grads_finite = torch.stack([torch.isfinite(g).all(dim=1) for g in flat]).all(dim=0).cpu().numpy()
            values = summary[0]
            acting = active_np
            loss_rows.append(np.where(acting, values, np.nan))
            norm_rows.append(np.where(acting[None, :], norms, np.nan))
            if initial is None:
                initial = values.copy()
                threshold = config.divergence_factor * np.maximum(initial, 1e-300)
            finite = np.isfinite(values) & grads_finite
            last = step == config.steps
            if callbacks and (step % config.callback_every == 0 or last):
                recorded = acting & finite
                if recorded.any():
                    state = BatchedStepState(
                        step, model, per_model.detach(), dict(zip(names, grads)),
                        torch.as_tensor(recorded, device=device),
                    )
                    row = len(diag_steps)
                    diag_steps.append(step)
                    for callback in callbacks:
                        for key, item in (callback(state) or {}).items():
                            arr = _as_row(item, M, key)
                            if key not in diag_rows:
                                diag_rows[key] = [np.full(M, np.nan)] * row
                                mask_rows[key] = [np.zeros(M, dtype=bool)] * row
                            diag_rows[key].append(np.where(recorded, arr, np.nan))
                            mask_rows[key].append(recorded.copy())
                    for key in diag_rows:  # keys a callback did not return this time
                        if len(diag_rows[key]) < row + 1:
                            diag_rows[key].append(np.full(M, np.nan))
                            mask_rows[key].append(np.zeros(M, dtype=bool))
            with np.errstate(invalid="ignore"):
                non_finite = acting & ~finite
                diverged = acting & finite & (values > threshold)
                reached = acting & finite & ~diverged & (values <= config.loss_tol)
            maxed = acting & finite & ~diverged & ~reached & last
            failures = []
            for m in np.flatnonzero(non_finite):
                bad = [n for n, g in zip(names, flat) if not bool(torch.isfinite(g[m]).all())]
                value = float(values[m])
                what = f"the loss is {value}" if not math.isfinite(value) else f"the gradient of {', '.join(bad)} is not finite"
                status[m] = "non_finite"
                messages[m] = f"training stopped at step {step}: {what} (lr={lrs[m]})"
                failures.append(m)
            for m in np.flatnonzero(diverged):
                status[m] = "diverged"
                messages[m] = (
                    f"training diverged at step {step}: loss {values[m]:.3e} > {config.divergence_factor:g} x initial "
                    f"loss {initial[m]:.3e} (lr={lrs[m]}; try a smaller step size)"
                )
                failures.append(m)
            for m in np.flatnonzero(reached):
                status[m] = "tolerance"
                messages[m] = f"loss {values[m]:.3e} <= loss_tol {config.loss_tol:g} at step {step}"
            for m in np.flatnonzero(maxed):
                status[m] = "max_steps"
                messages[m] = f"ran all {config.steps} steps"
            stopping = non_finite | diverged | reached | maxed
            stopped_at[stopping] = step
            if failures and config.on_failure == "raise":
                detail = "; ".join(f"model {m}: {messages[m]}" for m in sorted(failures))
                raise TrainingError(f"{len(failures)} of {M} models failed: {detail}")
            if stopping.any():
                active_np = acting & ~stopping
                if not active_np.any():
                    break
                all_active = False
                active_t = torch.as_tensor(active_np, device=device)
                masks = [active_t.view((M,) + (1,) * (p.dim() - 1)) for p in params]
                lr_eff = torch.where(active_t, lr_t, zero)
                lr_views = [lr_eff.view((M,) + (1,) * (p.dim() - 1)) for p in params]
            with torch.no_grad():
                if all_active or grads_finite[~active_np].all():
                    # Stopped models have step size 0 and finite gradients: p - 0 * g = p leaves them
                    # unchanged; the others get train's update p - lr * g.
                    for p, g, lr_view in zip(params, grads, lr_views):
                        p.sub_(lr_view * g)
                else:  # a stopped model's gradient is not finite: mask it explicitly
                    for p, g, lr_view, mask in zip(params, grads, lr_views, masks):
                        p.sub_(torch.where(mask, lr_view * g, torch.zeros_like(g)))
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(previous_flags[name])

    norms_all = np.stack(norm_rows) if norm_rows else np.empty((0, P, M))
    history = BatchedHistory(
        loss=np.stack(loss_rows),
        grad_norms={name: np.ascontiguousarray(norms_all[:, i, :]) for i, name in enumerate(names)},
        status=status,
        messages=messages,
        stopped_at=stopped_at,
        lr=np.array(lrs, dtype=np.float64),
        diagnostics={key: np.stack(rows) for key, rows in diag_rows.items()},
        diagnostic_steps=diag_steps,
        diagnostic_mask={key: np.stack(rows) for key, rows in mask_rows.items()},
        config=config,
    )
    failed = [m for m in range(M) if status[m] in ("diverged", "non_finite")]
    if failed:
        shown = "; ".join(f"model {m}: {messages[m]}" for m in failed[:10])
        more = f"; ... and {len(failed) - 10} more" if len(failed) > 10 else ""
        warnings.warn(f"{len(failed)} of {M} models failed ({shown}{more})", RuntimeWarning, stacklevel=2)
    return history
