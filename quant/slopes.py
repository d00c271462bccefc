"""How much each layer's output error costs in loss, from one gradient pass: the slopes of the planner's
sensitivity proxy at the users' scale (quant/planner.py, mode "proxy").

For an nn.Linear whose weight error E changes its outputs by E x, a second-order expansion of the mean loss
with an isotropic output curvature gives dloss ~ 1/2 * gamma * tr(E H E^T) / N, with H = sum x x^T over its
inputs (quant/calibrate.py's Hessians) and gamma the mean squared gradient of the per-token loss with respect
to one output unit — the diagonal of the Gauss-Newton matrix in output space when the labels are sampled from
the model itself (the true Fisher), measured here by one backward pass. In the planner's units (error =
tr(E H E^T) / rows of H), the slope is alpha = sum(g^2) / (2 N R): N scored tokens, R output units, g
summed over every application of a shared module. The planner calibrates these slopes per group of like
tensors on a few measured joint losses; tensors without a Linear (embeddings, tied heads) are measured.
Windows are cut to SLOPE_WINDOW tokens so that the backward pass's activations stay small. Must not
quantize or choose anything.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.progress import Progress
from quant.calibrate import CALIB_THREADS, torch_threads

SLOPE_WINDOW = 256        # tokens per window of the gradient pass (its activations are kept for backward)
SLOPE_SEED = 0            # the sampled labels' generator seed: the slopes are a deterministic function of the inputs


def output_gradient_slopes(model: nn.Module, windows: np.ndarray, batch_windows: int = 8,
                           progress: bool = True) -> dict[str, float]:
    """weight name -> alpha = sum(g^2) / (2 N R) for every nn.Linear (subclasses included) of `model`, over the
    windows' tokens cut into SLOPE_WINDOW-token windows, labels sampled from the model's own predictions."""
    toks = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))
    L = min(SLOPE_WINDOW, toks.shape[1])
    chunks = toks[:, : toks.shape[1] // L * L].reshape(-1, L)
    sq: dict[str, float] = {}
    width: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def on_output(module, inp, out):
            if out.requires_grad:
                out.register_hook(lambda g: sq.__setitem__(name, sq.get(name, 0.0) + float(g.float().pow(2).sum())))
        return on_output

    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            width[f"{mname}.weight"] = mod.out_features
            handles.append(mod.register_forward_hook(hook_for(f"{mname}.weight")))
    for mod in model.modules():           # start the graph at the embedding output, not at the parameters
        if isinstance(mod, nn.Embedding):
            handles.append(mod.register_forward_hook(lambda m, i, out: out.detach().requires_grad_(True)))
    params = list(model.parameters())
    device = params[0].device                      # the model's device (pack --device)
    saved = [p.requires_grad for p in params]
    gen = torch.Generator().manual_seed(SLOPE_SEED)
    was_training = model.training
    model.eval()
    bar = Progress("planner: output-gradient slopes", len(chunks), enabled=progress)
    n_tokens = 0
    try:
        for p in params:
            p.requires_grad_(False)
        for i in range(0, len(chunks), batch_windows):
            x = chunks[i:i + batch_windows].to(device)
            with torch.enable_grad(), torch_threads(CALIB_THREADS):
                logits = model(x).float()
                flat = logits.reshape(-1, logits.shape[-1])
                probs = torch.softmax(flat.detach(), -1).cpu()      # labels drawn on the CPU on any device
                y = torch.multinomial(probs, 1, generator=gen).squeeze(1).to(device)
                F.cross_entropy(flat, y, reduction="sum").backward()
            n_tokens += x.numel()
            bar.update(min(i + batch_windows, len(chunks)))
    finally:
        for h in handles:
            h.remove()
        for p, s in zip(params, saved):
            p.requires_grad_(s)
        model.train(was_training)
    return {name: sq[name] / (2.0 * n_tokens * width[name]) for name in sq if n_tokens}
