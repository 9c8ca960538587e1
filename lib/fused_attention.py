"""Attention outputs S V through PyTorch's fused ``scaled_dot_product_attention``
(SDPA).

    out = fused_attention(Q, K, V, "gaussian", key_mask=mask)   # ==
    attention_matrix(...) @ V

SDPA computes softmax(scores + bias) V without storing the (n, n) matrix S; this module
reaches every kernel of ``lib.attention`` through it, exactly (in exact arithmetic):

* **Softmax**: SDPA with scale 1/sqrt(d) and the key mask.
* **Gaussian** (not row-normalised): with q, k the centred queries and keys,
  G_kj = exp(-gamma ||q_k - k_j||^2) = exp(s_kj - a_k), where s_kj = 2 gamma q_k.k_j -
  gamma ||k_j||^2 and a_k = gamma ||q_k||^2. SDPA normalises each row, so the row sum
  must be undone. One extra *sink* key per row does it: give it the score a_k and a
  value e that is zero on V's columns and 1 on one extra column. Then the softmax over
  the real keys and the sink has weights G_kj / (1 + sum_i G_ki) and 1 / (1 + sum_i
  G_ki), so

      o_k = [sum_j G_kj v_j, 1] / (1 + sum_i G_ki),   and   out_k = o_k[:d_v] /
      o_k[d_v].

  The scores are dot products of augmented vectors, q'_k = [2 gamma q_k, a_k, 1] with
  k'_j = [k_j, 0, -gamma ||k_j||^2] and the sink key [0, 1, 0], so the whole
  computation is one SDPA call (scale 1) and autograd differentiates it through Q and
  K. It is well conditioned: G_kj <= 1 gives o_k[d_v] >= 1 / (n + 1), and the sink's
  score is the row maximum.
  On the CPU, when d = d_v and the dtype is float32 or float64, a shorter route avoids
  the sink and the extra columns (``_GaussianCPU``): PyTorch's fused CPU kernel also
  returns the row log-sum-exp lse_k of its scores, so with the scores 2 gamma q_k.k_j
  and the per-key bias -gamma ||k_j||^2 (an additive mask, broadcast over the queries)
  out_k = exp(lse_k - a_k) * (softmax-weighted sum)_k = sum_j G_kj v_j, where
  lse_k - a_k = log sum_j G_kj <= log n. Its backward is the fused kernel's backward
  with the upstream gradient g_k exp(lse_k - a_k) and a zero "output" (the gradient
  through lse cancels the row term of the softmax backward exactly, since the result
  is linear in exp(score)); the bias gets sum_j v_j . dV_j, a_k gets -g_k . out_k.
* **Row-normalised Gaussian**: the row normalisation cancels a_k: softmax(s) with the
augmented
  q'_k = [2 gamma q_k, 1], k'_j = [k_j, -gamma ||k_j||^2].

Masked keys get weight 0; a row without any real key gives 0, as in
``attention_matrix``. The plain implementation (``lib.attention.attention_matrix``) is
the reference; ``tests/test_fused_attention.py`` checks forward values and gradients
against it in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .attention import _check_qk, default_gamma, get_kernel
from .validation import check_positive_float

__all__ = ["fused_attention", "fusable"]

_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu",
                     None)
_FLASH_CPU_BACKWARD = getattr(
    torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


class _GaussianCPU(torch.autograd.Function):
    """out = G V with G_kj = exp(-gamma ||q_k - k_j||^2) = exp(2 gamma q_k.k_j - b_j -
    a_k), a_k = gamma ||q_k||^2, b_j = gamma ||k_j||^2, for q, k, v: (B, H, n, d) and
    a key mask ``keep``: (B, 1 or H, 1, n) bool or None (masked keys get weight 0;
    every row needs a kept key). Once differentiable."""

    @staticmethod
    def forward(ctx, q, k, v, keep, gamma):
        a = gamma * torch.linalg.vector_norm(q, dim=-1).square()  # (B, H, n)
        bias = (-gamma * torch.linalg.vector_norm(k, dim=-1).square()).unsqueeze(-2)
        if keep is not None:
            bias = bias.masked_fill(~keep, float("-inf"))
        out, lse = _FLASH_CPU(q, k, v, 0.0, False, attn_mask=bias, scale=2.0 * gamma)
        w = torch.exp(lse - a).unsqueeze(-1)  # (B, H, n, 1): sum_j G_kj
        ctx.save_for_backward(q, k, v, bias, out, lse, w)
        ctx.gamma = gamma
        return out * w

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, k, v, bias, out, lse, w = ctx.saved_tensors
        gamma = ctx.gamma
        grad_q, grad_k, grad_v = _FLASH_CPU_BACKWARD(
            grad * w, q, k, v, torch.zeros_like(out), lse, 0.0, False,
            attn_mask=bias, scale=2.0 * gamma)
        # Through a_k = gamma ||q_k||^2 (d out_k / d a_k = -out_k) and through the
        # bias -b_j (its gradient is sum_k dS_kj = v_j . dV_j).
        grad_a = torch.linalg.vecdot(grad, out) * w.squeeze(-1)  # -dL/da_k
        grad_q.addcmul_(q, grad_a.unsqueeze(-1), value=-2.0 * gamma)
        grad_b = torch.linalg.vecdot(v, grad_v)  # -dL/db_j
        grad_k.addcmul_(k, grad_b.unsqueeze(-1), value=-2.0 * gamma)
        return grad_q, grad_k, grad_v, None, None


def _gaussian_cpu(q, k, V, key_mask, gamma):
    """The Gaussian kernel through ``_GaussianCPU``: q, k (centred), V: (..., n, d);
    key_mask as in ``fused_attention``. Rows without a real key give 0."""
    shape, n, d = q.shape, q.shape[-2], q.shape[-1]
    if q.dim() != 4:  # the fused kernel takes (B, H, n, d)
        q, k, V = (t.reshape(-1, 1, n, t.shape[-1]) for t in (q, k, V))
        if key_mask is not None:
            key_mask = key_mask.expand(*shape[:-1]).reshape(-1, 1, n)
    keep = has_key = None
    if key_mask is not None:  # (B, 1 or H, 1, n)
        keep, has_key = _keys_to_use(key_mask.unsqueeze(-2))
    out = _GaussianCPU.apply(q, k, V, keep, float(gamma))
    if has_key is not None:
        out = out * has_key.transpose(-1, -2).to(out.dtype)
    return out.reshape(*shape[:-1], V.shape[-1])


def fusable(t: torch.Tensor) -> bool:
    """Whether the fused routine can differentiate through ``t``: False inside
    ``torch.func`` transforms (e.g. the Hessian-vector products of ``lib.hessian``,
    forward-over-reverse), for which PyTorch's fused CPU kernel has no forward-mode
    derivative; use the plain kernels there.
    """
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return not (wrapped is not None and wrapped(t))


def _centred(Q: torch.Tensor, K: torch.Tensor, key_mask: torch.Tensor | None):
    """Q, K minus the (detached) mean of the real queries and keys, as in
    ``attention_matrix``."""
    if key_mask is None:
        centre = 0.5 * (Q.mean(dim=-2, keepdim=True) + K.mean(dim=-2, keepdim=True))
    else:
        w = key_mask.unsqueeze(-1).to(Q.dtype)  # (..., n, 1)
        count = w.sum(dim=-2, keepdim=True).clamp_min(1.0)
        centre = (
            0.5
            * ((Q * w).sum(dim=-2, keepdim=True) + (K * w).sum(dim=-2, keepdim=True))
            / count
        )
    centre = centre.detach()
    return Q - centre, K - centre


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """t: (..., m) padded with zeros to (..., width)."""
    return F.pad(t, (0, width - t.shape[-1])) if t.shape[-1] < width else t


def _keys_to_use(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the keys a row attends to, whether the row has a real key): a row without any
    real key attends to all keys and is zeroed afterwards (no NaN). mask: (..., n)
    bool -> (..., n), (..., 1)."""
    has_key = mask.any(dim=-1, keepdim=True)
    return mask | ~has_key, has_key


def _sdpa(q, k, v, mask, scale):
    """SDPA with a key mask (..., n) (None: all keys); rows without a real key give
    0."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    allowed, has_key = _keys_to_use(mask)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=allowed.unsqueeze(-2), scale=scale
    )
    if bool(has_key.all()):
        return out
    return out * has_key.unsqueeze(-1).to(out.dtype)


def fused_attention(
    Q: torch.Tensor,
    K: torch.Tensor,
    V: torch.Tensor,
    kernel: str,
    *,
    gamma: float | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """S V for the kernel S = ``attention_matrix(Q, K, kernel, gamma=...,
    key_mask=...)``.

    Q, K: (..., n, d); V: (..., n, d_v); key_mask: bool (..., n), leading axes
    broadcastable to Q's (e.g. (B, 1, n) for Q: (B, H, n, d)), True = real token.
    Returns (..., n, d_v).
    """
    get_kernel(kernel)  # ValueError listing the valid names
    _check_qk(Q, K)
    if not isinstance(V, torch.Tensor) or V.shape[:-1] != K.shape[:-1]:
        got = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
        raise ValueError(
            f"V must have shape (..., n, d_v) = {tuple(K.shape[:-1])} + (d_v,), got"
            f" {got}"
        )
    n, d = Q.shape[-2], Q.shape[-1]
    if key_mask is not None:
        if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
            raise TypeError(
                "key_mask must be a bool tensor (..., n) with True for real tokens"
            )
        if key_mask.shape[-1] != n:
            raise ValueError(
                f"key_mask must have shape (..., n) with n = {n}, got"
                f" {tuple(key_mask.shape)}"
            )
    if kernel == "softmax":
        return _sdpa(Q, K, V, key_mask, 1.0 / math.sqrt(d))
    gamma = default_gamma(d) if gamma is None else check_positive_float(gamma, "gamma")
    q, k = _centred(Q, K, key_mask)
    if (kernel == "gaussian" and _FLASH_CPU is not None
            and _FLASH_CPU_BACKWARD is not None and Q.device.type == "cpu"
            and V.shape[-1] == d and Q.dtype in (torch.float32, torch.float64)):
        return _gaussian_cpu(q, k, V, key_mask, gamma)
    a = gamma * (q * q).sum(-1, keepdim=True)  # (..., n, 1): gamma ||q_k||^2
    b = gamma * (k * k).sum(-1, keepdim=True)  # (..., n, 1): gamma ||k_j||^2
    one = torch.ones_like(a)
    if kernel == "gaussian_normalized":
        return _sdpa(
            torch.cat([q * (2.0 * gamma), one], -1),
            torch.cat([k, -b], -1),
            V,
            key_mask,
            1.0,
        )
    # Unnormalised Gaussian: real keys plus one sink key (score a_k, value e) per
    # sequence.
    # q, k and v are padded with zeros to one width w (the fused CPU kernel wants
    # equal widths).
    dv = V.shape[-1]
    w = max(d + 2, dv + 1)
    q_aug = torch.cat(
        [q * (2.0 * gamma), a, one, q.new_zeros(1).expand(*a.shape[:-1], w - d - 2)], -1
    )
    k_rows = F.pad(
        k, (0, 0, 0, 1)
    )  # (..., n + 1, d): the sink key appended as a zero row
    sink = k_rows.new_zeros(n + 1, 1)
    sink[n] = 1.0  # (n + 1, 1): 1 on the sink's row
    lead = k_rows.shape[:-2]
    sink = sink.expand(*lead, n + 1, 1)
    k_all = torch.cat(
        [
            k_rows,
            sink,
            -F.pad(b, (0, 0, 0, 1)),
            k_rows.new_zeros(1).expand(*lead, n + 1, w - d - 2),
        ],
        -1,
    )
    v_rows = F.pad(V, (0, 0, 0, 1))  # (..., n + 1, dv)
    v_all = torch.cat(
        [
            v_rows,
            v_rows.new_zeros(1).expand(*v_rows.shape[:-1], w - dv - 1),
            sink.expand(*v_rows.shape[:-2], n + 1, 1),
        ],
        -1,
    )
    mask = None
    if key_mask is not None:
        mask = torch.cat([key_mask, key_mask.new_ones(*key_mask.shape[:-1], 1)], -1)
    o = _sdpa(q_aug, k_all, v_all, mask, 1.0)
    return o[..., :dv] / o[..., -1:]
