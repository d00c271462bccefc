"""Building blocks of the recurrent core: RMSNorm, rotary embeddings, grouped-KV causal attention, MLP, block.

Attention is split into `kv_heads` / `keys_values` and `attend_selected` so that the routing rule's extra
pass can compute keys and values for every position but queries, attention output and MLP for the selected
positions only.
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
    """Rotate pairs (first half, second half) of the last dim; cos/sin broadcast against x[..., :E/2].

    Computed as x * [cos, cos] + [x2, x1] * [-sin, sin]: bit for bit (x1 cos - x2 sin, x2 cos + x1 sin),
    in four passes over x instead of seven (the tables are small)."""
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return x * torch.cat((cos, cos), dim=-1) + swapped * torch.cat((-sin, sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.c_q = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.c_k = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.c_v = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def kv_heads(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """xn [B,T,D] -> k, v [B,G,T,E], one per kv head (RoPE applied to k, not repeated)."""
        B, T, _ = xn.shape
        k = self.c_k(xn).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)   # the modules' own calls:
        v = self.c_v(xn).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)   # GPTQ's hooks see them
        return apply_rope(k, cos[:T], sin[:T]), v

    def keys_values(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """xn [B,T,D] -> k, v [B,H,T,E] (RoPE applied to k, kv heads repeated to H)."""
        k, v = self.kv_heads(xn, cos, sin)
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

    def attend_selected(self, xn_sel: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, k: torch.Tensor,
                        v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Queries for N selected positions only, against their own sequence's keys/values.

        xn_sel [N,D] normalized inputs at the selected positions (rows[n], pos[n]); rows must be
        non-decreasing (row-major order, as `mask.nonzero()` gives). k/v [B,G,T,E] from `kv_heads`, not
        repeated and not gathered per query: each sequence's queries sit in S slots (its largest
        per-sequence count), grouped by kv head, so one attention call over [B,G,rep*S,T] with a boolean
        causal mask (key <= the query's position) does the work. Returns the attention output [N,D].
        (Splitting the queries by position range, so early ones skip the late keys, measured slower at the
        demo's sizes: the extra calls cost more than the masked work they save.)
        """
        N = xn_sel.shape[0]
        B, G, T, E = k.shape
        rep = self.n_heads // G
        if N > 1 and bool((rows[1:] < rows[:-1]).any()):
            raise ValueError("attend_selected: rows must be non-decreasing (row-major order)")
        q = self.c_q(xn_sel).view(N, self.n_heads, E)
        q = apply_rope(q, cos.index_select(0, pos)[:, None, :], sin.index_select(0, pos)[:, None, :])
        counts = torch.bincount(rows, minlength=B)
        S = int(counts.max()) if N else 0
        slot = rows * S + torch.arange(N, device=rows.device) - (torch.cumsum(counts, 0) - counts).index_select(0, rows)
        q_pad = q.new_zeros(B * S, self.n_heads, E).index_copy_(0, slot, q)
        pos_pad = pos.new_zeros(B * S).index_copy_(0, slot, pos)     # padding slots attend key 0 only; discarded
        q_pad = q_pad.view(B, S, G, rep, E).permute(0, 2, 3, 1, 4).reshape(B, G, rep * S, E)
        allowed = torch.arange(T, device=q.device)[None, :] <= pos_pad[:, None]           # [B*S, T]
        allowed = allowed.view(B, 1, S, T).expand(B, rep, S, T).reshape(B, 1, rep * S, T)
        y = F.scaled_dot_product_attention(q_pad, k, v, attn_mask=allowed)               # [B,G,rep*S,E]
        y = y.view(B, G, rep, S, E).permute(0, 3, 1, 2, 4).reshape(B * S, G * rep * E)
        return self.proj(y.index_select(0, slot))


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

        rows non-decreasing (see attend_selected). Returns [N,D], equal to forward(h)[rows, pos] up to
        float rounding. Only the norm and the K/V projection run for every position.
        """
        B, T, D = h.shape
        xn = self.attn_norm(h)
        k, v = self.attn.kv_heads(xn, cos, sin)                                  # [B,G,T,E]
        flat = rows * T + pos
        h_sel = h.reshape(B * T, D).index_select(0, flat)
        h_sel = h_sel + self.attn.attend_selected(xn.reshape(B * T, D).index_select(0, flat), rows, pos, k, v,
                                                  cos, sin)
        return h_sel + self.mlp(self.mlp_norm(h_sel))
