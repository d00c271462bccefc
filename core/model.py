"""The recurrent core: token embedding tied with the head, `n_blocks` distinct blocks applied over K passes.

Each pass i first adds a learned per-pass embedding `pass_emb[i]` to the stream (so passes can differ at
D parameters each), then applies block `i % n_blocks`. After the last pass: final RMSNorm, tied head.
`forward_exits` returns the states after passes K-1 and K and the K-exit logits, which the routing rule's
signals need; `extra_pass` / `extra_pass_selected` run pass K+1 densely or for chosen positions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ModelConfig
from core.layers import Block, RMSNorm, rope_tables


@dataclass
class Exits:
    """States after passes K-1 (h_prev) and K (h_k), each [B,T,D], and the K-exit logits [B,T,V]."""

    h_prev: torch.Tensor
    h_k: torch.Tensor
    logits: torch.Tensor


class RecurrentLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pass_emb = nn.Parameter(torch.zeros(cfg.max_passes, cfg.d_model))
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden, cfg.norm_eps)
            for _ in range(cfg.n_blocks))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.embed_init_std
        nn.init.normal_(self.tok_emb.weight, std=std)
        nn.init.normal_(self.pass_emb, std=std)
        out_std = 0.02 / (2 * self.cfg.max_passes) ** 0.5
        for block in self.blocks:
            for name, p in block.named_parameters():
                if p.ndim == 2:
                    nn.init.normal_(p, std=out_std if name.endswith("proj.weight") else 0.02)

    # --- passes -------------------------------------------------------------------------------------------
    def _pass(self, h: torch.Tensor, i: int) -> torch.Tensor:
        block = self.blocks[self.cfg.block_for_pass(i)]
        return block(h + self.pass_emb[i], self.rope_cos, self.rope_sin)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] > self.cfg.seq_len:
            raise ValueError(f"tokens must be [B, T<= {self.cfg.seq_len}], got {tuple(tokens.shape)}")

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm_f(h), self.tok_emb.weight)

    def forward(self, tokens: torch.Tensor, n_passes: int | None = None) -> torch.Tensor:
        """Logits [B,T,V] after `n_passes` passes (default K; up to K + extra_passes)."""
        self._check_tokens(tokens)
        n = self.cfg.n_passes if n_passes is None else n_passes
        if not 1 <= n <= self.cfg.max_passes:
            raise ValueError(f"n_passes={n} outside 1..{self.cfg.max_passes}")
        h = self.tok_emb(tokens)
        for i in range(n):
            h = self._pass(h, i)
        return self.head(h)

    def states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States after passes K-1 and K, each [B,T,D], without the head."""
        self._check_tokens(tokens)
        h = self.tok_emb(tokens)
        h_prev = h
        for i in range(self.cfg.n_passes):
            h_prev = h
            h = self._pass(h, i)
        return h_prev, h

    def forward_exits(self, tokens: torch.Tensor) -> Exits:
        h_prev, h = self.states(tokens)
        return Exits(h_prev=h_prev, h_k=h, logits=self.head(h))

    def extra_pass(self, h_k: torch.Tensor) -> torch.Tensor:
        """Pass K+1 for every position: logits [B,T,V]."""
        return self.head(self._pass(h_k, self.cfg.n_passes))

    def extra_state_selected(self, h_k: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """State after pass K+1 for selected positions only: [N,D] for (rows[n], pos[n]), rows non-decreasing.

        Keys and values come from the pass-K states of all positions (they exist already); queries,
        attention output and MLP run for the N selected positions alone.
        """
        i = self.cfg.n_passes
        block = self.blocks[self.cfg.block_for_pass(i)]
        return block.forward_selected(h_k + self.pass_emb[i], rows, pos, self.rope_cos, self.rope_sin)

    def extra_pass_selected(self, h_k: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Pass K+1 for selected positions only: logits [N,V] for (rows[n], pos[n]); final norm and head
        run for the N selected positions alone."""
        return self.head(self.extra_state_selected(h_k, rows, pos))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
