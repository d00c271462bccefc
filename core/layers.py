"""Building blocks of the recurrent core: RMSNorm, rotary embeddings, grouped-KV causal attention, MLP, block.

Attention is split into `keys_values` and `attend` so that the routing rule's extra pass can compute keys and
values for every position but queries, attention output and MLP for the selected positions only.
Shapes: B batch, T time, D model width, H heads, G kv heads, E head dim, N selected positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq_len: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [seq_len, head_dim // 2] (float32)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim))
    angles = torch.arange(seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dim; cos/sin broadcast against x[..., :E/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.c_q = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.c_k = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.c_v = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def keys_values(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """xn [B,T,D] -> k, v [B,H,T,E] (RoPE applied to k, kv heads repeated to H)."""
        B, T, _ = xn.shape
        k = self.c_k(xn).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(xn).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        k = apply_rope(k, cos[:T], sin[:T])
        rep = self.n_heads // self.n_kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        return k, v

    def forward(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = xn.shape
        q = self.c_q(xn).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos[:T], sin[:T])
        k, v = self.keys_values(xn, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)            # [B,H,T,E]
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))

    def attend_selected(self, xn_sel: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Queries for N selected positions only.

        xn_sel [N,D] normalized inputs at the selected positions, pos [N] their time index, k/v [N,H,T,E]
        the keys/values of each selected position's own sequence. Returns the attention output [N,D].
        """
        N = xn_sel.shape[0]
        T = k.shape[2]
        q = self.c_q(xn_sel).view(N, self.n_heads, 1, self.head_dim)
        q = apply_rope(q, cos[pos][:, None, None, :], sin[pos][:, None, None, :])
        allowed = torch.arange(T, device=pos.device)[None, :] <= pos[:, None]   # [N,T] causal: keys <= t
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :])  # [N,H,1,E]
        return self.proj(y.reshape(N, -1))


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=False)
        self.proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    """Pre-norm transformer block: h + attn(norm(h)), then + mlp(norm(h))."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, mlp_hidden: int, eps: float) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = CausalSelfAttention(d_model, n_heads, n_kv_heads)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = MLP(d_model, mlp_hidden)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.attn_norm(h), cos, sin)
        return h + self.mlp(self.mlp_norm(h))

    def forward_selected(self, h: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
                         cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The block for selected positions (rows[n], pos[n]) of h [B,T,D]; keys/values from all of h.

        Returns [N,D], equal to forward(h)[rows, pos] up to float rounding.
        """
        xn = self.attn_norm(h)
        k, v = self.attn.keys_values(xn, cos, sin)                               # [B,H,T,E]
        h_sel = h[rows, pos]
        h_sel = h_sel + self.attn.attend_selected(xn[rows, pos], pos, k[rows], v[rows], cos, sin)
        return h_sel + self.mlp(self.mlp_norm(h_sel))
