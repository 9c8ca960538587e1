"""A small Transformer encoder classifier with a switchable attention kernel (the
real-task model).

    model = TransformerClassifier(vocab_size=20_000, max_len=256)           # IMDb:
    token ids (B, L) model = TransformerClassifier(input_dim=1, max_len=1024,
    pooling="cls")  # Pathfinder: pixels (B, L) logits = model(x)
    # (B, num_classes) model.set_kernel("gaussian")          # every layer switches;
    the weights are kept

Architecture (pre-LayerNorm encoder):

    x_0 = embed(x) + P                                  token or pixel embedding +
    learned positions x_l = x_{l-1} + MHA_l(LN(x_{l-1}))                  attention
    with the chosen kernel x_l = x_l + MLP_l(LN(x_l))
    Linear(D, mlp_dim), GELU, Linear(mlp_dim, D) logits = head(pool(LN(x_L)))
    masked mean over real tokens, or the CLS token

Everything except the attention kernel is shared by the Softmax and Gaussian models.
"""
from __future__ import annotations


import torch
from torch import nn

from .attention import attention_matrix, get_kernel
from .fused_attention import fusable, fused_attention
from .validation import (
    check_choice,
    check_finite,
    check_positive_float,
    check_positive_int,
)

__all__ = ["TransformerClassifier", "MultiHeadAttention", "EncoderBlock", "POOLINGS"]

POOLINGS = ("mean", "cls")


def _check_kernel(kernel: str, gamma: float | None) -> float | None:
    get_kernel(kernel)  # ValueError listing the valid names
    return None if gamma is None else check_positive_float(gamma, "gamma")


class MultiHeadAttention(nn.Module):
    """H heads of dimension D/H. x: (B, L, D) -> (B, L, D); projections W_Q, W_K,
    W_V, W_O: D -> D.

    Head h: S^h = kernel(x W_Q^h, x W_K^h) (``lib.attention.attention_matrix``, with
    the key padding mask), output S^h x W_V^h; the heads are concatenated and mapped
    by W_O.
    """

    def __init__(self, D: int, H: int, kernel: str = "softmax",
                 gamma: float | None = None, dropout: float = 0.0):
        super().__init__()
        check_positive_int(D, "D")
        check_positive_int(H, "H")
        if D % H != 0:
            raise ValueError(
                f"D (embedding dimension, {D}) must be divisible by H (number of heads,"
                f" {H})"
            )
        self.D, self.H, self.head_dim = D, H, D // H
        self.W_Q = nn.Linear(D, D)
        self.W_K = nn.Linear(D, D)
        self.W_V = nn.Linear(D, D)
        self.W_O = nn.Linear(D, D)
        self.dropout = nn.Dropout(dropout)
        self.set_kernel(kernel, gamma)

    def set_kernel(self, kernel: str, gamma: float | None = None) -> None:
        """Switch the attention kernel (weights are kept). gamma: Gaussian
        bandwidth, None = default."""
        self.gamma = _check_kernel(kernel, gamma)
        self.kernel = kernel

    def extra_repr(self) -> str:
        return (
            f"D={self.D}, H={self.H}, head_dim={self.head_dim}, kernel={self.kernel!r},"
            f" gamma={self.gamma}"
        )

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, self.H, self.head_dim).transpose(1,
                                                             2)  # (B, H, L, head_dim)

    def attention(self, x: torch.Tensor,
                  key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention matrices. x: (B, L, D), key_mask: (B, L) bool or None -> S:
        (B, H, L, L)."""
        Q, K = self._split(self.W_Q(x)), self._split(self.W_K(x))
        mask = None if key_mask is None else key_mask[:, None, :]
        return attention_matrix(Q, K, self.kernel, gamma=self.gamma, key_mask=mask)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                need_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, L, D) -> (output (B, L, D), S (B, H, L, L) or None).

        ``need_weights=True``: the plain (reference) computation, S =
        ``attention_matrix``, then S V. ``need_weights=False``: the same output
        through PyTorch's fused
        ``scaled_dot_product_attention``
        (``lib.fused_attention.fused_attention``), without forming S; S is
        returned as None. Inside ``torch.func`` transforms (Hessian-vector
        products) the plain computation is used either way
        (``lib.fused_attention.fusable``).
        """
        V = self._split(self.W_V(x))
        if need_weights or not fusable(x):
            S = self.attention(x, key_mask)
            heads = S @ V  # (B, H, L, head_dim)
        else:
            S = None
            Q, K = self._split(self.W_Q(x)), self._split(self.W_K(x))
            mask = None if key_mask is None else key_mask[:, None, :]
            heads = fused_attention(Q, K, V, self.kernel, gamma=self.gamma,
                                    key_mask=mask)
        B, H, L, hd = heads.shape
        out = self.W_O(heads.transpose(1, 2).reshape(B, L, H * hd))
        return self.dropout(out), S


class EncoderBlock(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN(x)), then x + MLP(LN(x)). x: (B, L, D) -> (B,
    L, D)."""

    def __init__(self, D: int, H: int, mlp_dim: int, kernel: str, gamma: float | None,
                 dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.attn = MultiHeadAttention(D, H, kernel, gamma, dropout)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, mlp_dim), nn.GELU(),
                                 nn.Linear(mlp_dim, D), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                need_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, S = self.attn(self.ln1(x), key_mask, need_weights)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, S


class TransformerClassifier(nn.Module):
    """Transformer encoder classifier; the attention kernel is the only switch
    between models.

    Inputs:
        * ``vocab_size`` given: token ids x: (B, L) of an integer dtype, 0 <= id
        < vocab_size.
          Tokens equal to ``pad_id`` are padding: no token attends to them and
          they are left out of the mean pooling, so appending padding does not
          change the logits. ``pad_id=None`` disables masking (every token is real).
        * ``vocab_size=None``: real-valued features, x: (B, L, input_dim) float,
        or (B, L) float
          when ``input_dim == 1`` (e.g. a flattened image, ``images.reshape(N,
          -1)``), embedded by a linear map. Float inputs are cast to the
          parameters' dtype; nothing is masked.
        * ``forward(x, mask)``: an explicit bool mask (B, L) (True = real token)
        overrides the
          padding rule, for either kind of input.

    Args:
        vocab_size: vocabulary size (token inputs) or None (feature inputs).
        input_dim: features per position for ``vocab_size=None``.
        max_len: longest sequence accepted (size of the learned positional embedding).
        num_classes: number of classes (>= 2).
        D: embedding dimension (the paper's D = 64).
        H: number of heads (the paper's H = 2); each has dimension D / H.
        mlp_dim: width of the MLP of each block. The paper's "hidden dimension d
        = 128" is read as
            this width: the paper does not say which hidden size it means,
            and the Long Range Arena configurations use an MLP twice as wide
            as the embedding (D = 64, 128).
        num_layers: number of encoder blocks (the paper's 2).
        kernel: "softmax", "gaussian" or "gaussian_normalized"
        (``lib.attention.kernel_names()``).
        gamma: Gaussian bandwidth; None means 1 / (2 sqrt(head_dim))
        (``lib.attention.default_gamma``).
        dropout: dropout rate after the attention output projection and after the MLP.
        pooling: "mean" (masked mean of the final token states) or "cls" (a
        learned CLS token is
            prepended and its final state is classified).
        pad_id: padding token id for token inputs (default 0), or None.
        seed: when given, the initialisation uses this seed (the global
        generator is left as it was).

    Attention: ``model.fused`` (default True) computes the attention outputs with
    PyTorch's fused
    ``scaled_dot_product_attention`` (``lib.fused_attention``), without forming the
    (L, L) matrices; ``model.fused = False`` uses the plain reference
    (``lib.attention``). Both give the same outputs and gradients up to rounding;
    ``attention_maps`` always uses the plain one.

    Initialisation: token/positional/CLS embeddings N(0, 0.02^2) (the padding row is
    0), linear layers PyTorch's default, LayerNorm (1, 0). The model is created on
    the CPU in float32; move it with ``model.to(device)`` (e.g.
    ``lib.get_device()``) or ``model.double()``.
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        input_dim: int = 1,
        max_len: int,
        num_classes: int = 2,
        D: int = 64,
        H: int = 2,
        mlp_dim: int = 128,
        num_layers: int = 2,
        kernel: str = "softmax",
        gamma: float | None = None,
        dropout: float = 0.0,
        pooling: str = "mean",
        pad_id: int | None = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size is not None:
            check_positive_int(vocab_size, "vocab_size")
        check_positive_int(input_dim, "input_dim")
        check_positive_int(max_len, "max_len")
        check_positive_int(num_classes, "num_classes")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        for value, name in ((D, "D"), (H, "H"), (mlp_dim, "mlp_dim"), (num_layers,
                                                                       "num_layers")):
            check_positive_int(value, name)
        if D % H != 0:
            raise ValueError(
                f"D (embedding dimension, {D}) must be divisible by H (number of heads,"
                f" {H})"
            )
        gamma = _check_kernel(kernel, gamma)
        if isinstance(dropout,
                      bool) or not isinstance(dropout,
                                              (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not isinstance(pooling, str):
            raise TypeError(
                f"pooling must be a str, one of {list(POOLINGS)}, got"
                f" {type(pooling).__name__}"
            )
        check_choice(pooling, "pooling", POOLINGS)
        if pad_id is not None and vocab_size is not None:
            if isinstance(pad_id, bool) or not isinstance(
                    pad_id, int) or not 0 <= pad_id < vocab_size:
                raise ValueError(
                    f"pad_id must be an integer in [0, vocab_size={vocab_size}) or"
                    f" None, got {pad_id!r}"
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or seed < 0):
            raise ValueError(
                f"seed must be a non-negative integer or None, got {seed!r}")

        self.vocab_size, self.input_dim, self.max_len = vocab_size, input_dim, max_len
        self.num_classes, self.D, self.H, self.mlp_dim, self.num_layers = (
            num_classes,
            D,
            H,
            mlp_dim,
            num_layers,
        )
        self.pooling, self.dropout_rate = pooling, float(dropout)
        self.pad_id = pad_id if vocab_size is not None else None
        self.kernel, self.gamma = kernel, gamma
        self.fused = True

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            extra = 1 if pooling == "cls" else 0
            if vocab_size is not None:
                self.embed = nn.Embedding(vocab_size, D, padding_idx=self.pad_id)
            else:
                self.embed = nn.Linear(input_dim, D)
            self.pos = nn.Parameter(torch.zeros(1, max_len + extra, D))
            self.cls = nn.Parameter(torch.zeros(1, 1, D)) if extra else None
            self.blocks = nn.ModuleList(
                EncoderBlock(D, H, mlp_dim, kernel, gamma, self.dropout_rate)
                for _ in range(num_layers))
            self.norm = nn.LayerNorm(D)
            self.head = nn.Linear(D, num_classes)
            with torch.no_grad():
                if vocab_size is not None:
                    nn.init.normal_(self.embed.weight, std=0.02)
                    if self.pad_id is not None:
                        self.embed.weight[self.pad_id].zero_()
                nn.init.normal_(self.pos, std=0.02)
                if self.cls is not None:
                    nn.init.normal_(self.cls, std=0.02)

    # ------------------------------------------------------------------ set-up
    @property
    def head_dim(self) -> int:
        return self.D // self.H

    def set_kernel(self, kernel: str, gamma: float | None = None) -> None:
        """Switch the attention kernel of every layer (all weights are kept)."""
        gamma = _check_kernel(kernel, gamma)
        for block in self.blocks:
            block.attn.set_kernel(kernel, gamma)
        self.kernel, self.gamma = kernel, gamma

    def extra_repr(self) -> str:
        inputs = (
            f"vocab_size={self.vocab_size}"
            if self.vocab_size is not None
            else f"input_dim={self.input_dim}"
        )
        return (
            f"{inputs}, max_len={self.max_len}, num_classes={self.num_classes},"
            f" D={self.D}, H={self.H}, mlp_dim={self.mlp_dim},"
            f" num_layers={self.num_layers}, kernel={self.kernel!r},"
            f" pooling={self.pooling!r}, pad_id={self.pad_id}"
        )

    # ---------------------------------------------------------------- forward
    def _embed(self, x: object,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check x and embed it: -> (h (B, L', D), key mask (B, L') or None); L'
        = L (+1 with CLS)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        weight = self.pos
        if x.device != weight.device:
            raise ValueError(
                f"x is on {x.device} but the model is on {weight.device}; move x with"
                " .to()"
            )
        if self.vocab_size is not None:
            if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
                raise TypeError(
                    "x must hold integer token ids (B, L) (this model has"
                    f" vocab_size={self.vocab_size}), got dtype {x.dtype}; for"
                    " real-valued inputs build the model with vocab_size=None"
                )
            if x.dim() != 2:
                raise ValueError(
                    f"x must have shape (B, L) of token ids, got {tuple(x.shape)}")
        else:
            if not x.is_floating_point():
                raise TypeError(
                    "x must be a floating-point tensor (B, L[, input_dim]) (this model"
                    f" takes real-valued inputs), got dtype {x.dtype}; scale integer"
                    " pixels to [0, 1] (e.g. x.float() / 255), or build the model with"
                    " vocab_size for token ids"
                )
            if x.dim() == 2 and self.input_dim == 1:
                x = x.unsqueeze(-1)
            if x.dim() != 3 or x.shape[-1] != self.input_dim:
                want = (
                    "(B, L) or (B, L, 1)"
                    if self.input_dim == 1
                    else f"(B, L, {self.input_dim})"
                )
                raise ValueError(f"x must have shape {want}, got {tuple(x.shape)}")
        B, L = x.shape[0], x.shape[1]
        if B == 0 or L == 0:
            raise ValueError(
                "x must have at least one sequence and one position, got shape"
                f" {tuple(x.shape)}"
            )
        if L > self.max_len:
            raise ValueError(
                f"sequence length {L} exceeds max_len={self.max_len}; truncate x or"
                " build a larger model"
            )
        if self.vocab_size is not None:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, vocab_size={self.vocab_size}), found"
                    f" ids from {lo} to {hi}"
                )
            h = self.embed(x.long())
            if mask is None and self.pad_id is not None:
                mask = x != self.pad_id
        else:
            check_finite(x, "x")
            h = self.embed(x.to(weight.dtype))
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(
                    "mask must be a bool tensor (B, L) with True for real tokens")
            if mask.shape != (B, L):
                raise ValueError(
                    f"mask must have shape (B, L) = {(B, L)}, got {tuple(mask.shape)}")
            if mask.device != h.device:
                raise ValueError(
                    f"mask is on {mask.device} but the model is on {h.device}")
        if self.cls is not None:
            h = torch.cat([self.cls.expand(B, -1, -1), h], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)
        h = h + self.pos[:, : h.shape[1]]
        return h, mask

    def _encode(self, x: torch.Tensor, mask: torch.Tensor | None, collect: bool):
        h, key_mask = self._embed(x, mask)
        maps = []
        for block in self.blocks:
            h, S = block(h, key_mask, need_weights=collect or not self.fused)
            if collect:
                maps.append(S)
        return self.norm(h), key_mask, maps

    def forward(self, x: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L) token ids, or (B, L[, input_dim]) floats -> logits (B,
        num_classes)."""
        h, key_mask, _ = self._encode(x, mask, collect=False)
        if self.pooling == "cls":
            pooled = h[:, 0]
        elif key_mask is None:
            pooled = h.mean(dim=1)
        else:
            w = key_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(
                1.0)  # an all-padding row pools to 0
        return self.head(pooled)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor,
                       mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention matrices of every layer (no gradient): a list of num_layers
        tensors (B, H, L', L').

        L' = L, or L + 1 with CLS pooling (position 0 is the CLS token). Padding
        keys have weight 0.
        """
        return self._encode(x, mask, collect=True)[2]

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
