"""Record-scale Parameter Golf checkpoints with trained-like weight statistics, for the scale benchmark.

The tensors carry the baseline train_gpt.py state_dict names (core/pgolf_model.py `pgolf_state_shapes`) and
the statistics of trained weight matrices that matter to quantization and entropy coding (measured on the
real checkpoints in ../shared/data/pgolf/ and on published records, not fitted to them):
  - heavy tails: each matrix is Student-t with 4 degrees of freedom (kurtosis far above a Gaussian's);
  - per-row scale spread: each row's scale is log-normal (sigma 0.35), per-column (input) scales too (0.2);
  - a few outlier rows: 0.5% of rows (at least one) are 6x larger;
  - base scale 0.5 / sqrt(fan_in) for matrices, 0.05 for the tied embedding (log-normal row norms);
  - control tensors near their initial values: attn/mlp scales ~ |N(1, 0.3)|, resid_mix rows ~ (1, 0) +
    N(0, 0.1), q_gain ~ 1.5 + N(0, 0.2), skip_weights ~ |N(1, 0.3)|.
Seeded and deterministic. Shapes: (a) the 9 x 512 baseline (MLP 2x, vocabulary 1024: 17.1M parameters);
(b) the record shape, 11 x 512, MLP 4x, vocabulary 8192, layers 3-5 looped twice more (17 applied layers,
8 skip weights: 36.0M parameters). Saved as a plain state_dict (`final_model.pt`, torch.save, tensors only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.pgolf_model import PGolfConfig, pgolf_state_shapes

SHAPES = {
    "pgtiny": {"vocab_size": 1024, "num_layers": 2, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2, "mlp_hidden": 128,
               "layer_schedule": (0, 1, 1)},       # bench/gpu_check.py --tiny only: seconds on a CPU
    "pg17m": {"vocab_size": 1024, "num_layers": 9, "model_dim": 512, "num_heads": 8, "num_kv_heads": 4, "mlp_hidden": 1024},
    "pg36m": {"vocab_size": 8192, "num_layers": 11, "model_dim": 512, "num_heads": 8, "num_kv_heads": 4, "mlp_hidden": 2048,
                  "layer_schedule": (0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10)},
}


def trained_like_matrix(rng: np.random.Generator, rows: int, cols: int, base: float) -> np.ndarray:
    w = rng.standard_t(4, size=(rows, cols)).astype(np.float32) / np.sqrt(2.0)      # t(4) has variance 2
    w *= np.exp(rng.normal(0, 0.35, size=(rows, 1))).astype(np.float32)
    w *= np.exp(rng.normal(0, 0.2, size=(1, cols))).astype(np.float32)
    outliers = rng.choice(rows, size=max(1, rows // 200), replace=False)
    w[outliers] *= 6.0
    return w * np.float32(base)


def state_dict(name: str, seed: int = 0) -> tuple[PGolfConfig, dict[str, torch.Tensor]]:
    cfg = PGolfConfig(**SHAPES[name])
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in pgolf_state_shapes(cfg).items():
        if key == "tok_emb.weight":
            w = rng.standard_normal(shape).astype(np.float32) * 0.05
            w *= np.exp(rng.normal(0, 0.3, size=(shape[0], 1))).astype(np.float32)
        elif key.endswith(("attn_scale", "mlp_scale")) or key == "skip_weights":
            w = np.abs(rng.normal(1.0, 0.3, size=shape)).astype(np.float32)
        elif key.endswith("resid_mix"):
            w = (np.stack([np.ones(shape[1]), np.zeros(shape[1])]) + rng.normal(0, 0.1, size=shape)).astype(np.float32)
        elif key.endswith("q_gain"):
            w = (1.5 + rng.normal(0, 0.2, size=shape)).astype(np.float32)
        else:
            w = trained_like_matrix(rng, shape[0], shape[1], 0.5 / np.sqrt(shape[1]))
        out[key] = torch.from_numpy(np.ascontiguousarray(w))
    return cfg, out


def write_checkpoint(name: str, folder: Path, seed: int = 0) -> Path:
    """`folder/<name>/final_model.pt` (made once; reused when present)."""
    path = Path(folder) / name / "final_model.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict(name, seed)[1], path)
    return path


def layer_schedule(name: str) -> tuple[int, ...] | None:
    return SHAPES[name].get("layer_schedule")
