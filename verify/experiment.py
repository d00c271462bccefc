"""The routing experiment: does spending one extra pass on the uncertain positions pay, on full validation?

One row per policy: uniform K, uniform K+1, every legal signal and control at every fraction (thresholds
calibrated on TRAINING tokens with core.route_calibrate, on the artifact's own dequantized model), and the
two oracles (illegal, upper bounds only). Columns: validation bpb, its difference to uniform K and to
uniform K+1 with 95% paired-bootstrap intervals over documents, realized fraction, cap refusals, analytic
FLOPs per token, measured tokens per second, capture efficiency eta and routing overhead ratio
r = (T_adapt - T_K) / (f (T_K+1 - T_K)).

The bpb columns mix per-position losses at K and K+1 computed once (exact: a selected position's output
equals uniform K+1's, the others uniform K's); the timing columns come from real sparse runs of
verify.adaptive on the first `time_tokens` validation tokens, with a fixed thread count, after a warm-up:
each policy is timed in `time_repeats` paired blocks (uniform K, the policy, uniform K+1, back to back), so
that r uses the medians of the paired differences and a shared CPU's drifting load cancels; times are
medians, wall clock and thread CPU time. Those runs' losses and decisions are checked against the mixed
ones. Must not train; never calibrates on validation tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.atomic import check_output, looks_like_png_we_wrote
from common.errors import ConfigError, MismatchError, UsageError, flag
from common.progress import Progress
from core.bpb import bits_per_byte, target_byte_counts
from core.route_calibrate import (
    CAP_MARGIN,
    calibrate_threshold,
    capture_efficiency,
    collect,
    fit_parts,
    rule_for,
    split_halves,
)
from core.routing import ALL_SIGNALS, CONTROL_SIGNALS, ORACLE_SIGNALS, token_bucket
from core.shards import find_shards, load_tokens
from core.signals import oracle_score
from core.tokenizer import Tokenizer
from packer.reader import read_artifact
from quant.unpack import build_model
from verify.adaptive import (
    UNIFORM_K,
    UNIFORM_K1,
    Policy,
    PolicyRunner,
    fixed_mask_flops,
    fixed_nll,
    flops_per_token,
)
from verify.bootstrap import PairedBootstrap, document_ids
from verify.job import load_eval_tokens
from verify.plot import plot_experiment


@dataclass(frozen=True)
class ExperimentOptions:
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5)
    signals: tuple[str, ...] = ALL_SIGNALS
    cap_margin: float = CAP_MARGIN        # cap = fraction + cap_margin (at most 1)
    no_cap: bool = False
    calib_tokens: int = 65_536
    batch_size: int = 32
    n_boot: int = 2000
    time_tokens: int = 8_192
    time_repeats: int = 5
    warmup: int = 1
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f < 1 for f in self.fractions):
            raise ConfigError(f"--fractions {','.join(map(str, self.fractions))}: each must be in (0, 1)")
        unknown = [s for s in self.signals if s not in ALL_SIGNALS]
        if unknown:
            raise ConfigError(f"--signals: unknown {unknown}; known {list(ALL_SIGNALS)}")
        for name in ("calib_tokens", "batch_size", "n_boot", "time_repeats", "threads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{flag(name)} {getattr(self, name)}: must be positive")
        if self.time_tokens < 0 or self.warmup < 0 or not 0 <= self.cap_margin <= 1:
            raise ConfigError("ExperimentOptions: time_tokens and warmup must be >= 0, cap_margin in [0, 1]")

    @classmethod
    def from_options(cls, fractions_csv: str, signals_csv: str | None, **kw) -> ExperimentOptions:
        """From the command line: comma-separated --fractions and --signals (None: every signal)."""
        try:
            fractions = tuple(float(f) for f in fractions_csv.split(",") if f.strip())
        except ValueError:
            raise UsageError(f"--fractions {fractions_csv!r}: give comma-separated numbers in (0, 1)") from None
        if signals_csv:
            kw["signals"] = tuple(x.strip() for x in signals_csv.split(",") if x.strip())
        return cls(fractions=fractions, **kw)

    def cap(self, fraction: float) -> float | None:
        return None if self.no_cap else min(1.0, fraction + self.cap_margin)


@dataclass
class Row:
    policy: str
    signal: str | None
    fraction: float | None
    legal: bool
    rule: object = None                 # RoutingRule for legal adaptive rows
    oracle_threshold: float | None = None
    masks: list | None = None           # per validation batch, bool [B,T]
    refused: int = 0                    # candidates the cap refused over validation
    calib_capture: float | None = None


def _calib_tokens(train: np.ndarray | None, calib_data: Path | None, n: int) -> np.ndarray:
    if calib_data is not None:
        train = load_tokens(find_shards(Path(calib_data), "train"))
    if train is None:
        raise UsageError("the experiment calibrates thresholds on TRAINING tokens: give --data a folder with "
                         "*_train_*.bin shards beside the *_val_*.bin ones, or --calib-data DIR")
    return np.asarray(train)[-(n + 1):]


def _decide_oracle(signal: str, batch, threshold: float, cap: float | None) -> tuple[torch.Tensor, int]:
    cand = oracle_score(signal, batch.nll_k, batch.nll_k1) > threshold
    return token_bucket(cand, cap) if cap is not None else (cand, 0)


def _flat(masks: list[torch.Tensor], batches) -> np.ndarray:
    """Per-batch [B,T] values -> stream order (window starts are ascending within full batches)."""
    n = max(s + m.shape[1] for b, m in zip(batches, masks) for s in b.starts)
    out = np.zeros(n, dtype=np.asarray(masks[0].numpy()).dtype)
    for b, m in zip(batches, masks):
        for s, row in zip(b.starts, m.numpy()):
            out[s:s + len(row)] = row
    return out


def build_rows(model, calib, val, opts: ExperimentOptions, progress: bool) -> list[Row]:
    a, b = split_halves(calib)
    K = model.cfg.n_passes
    rows = [Row(UNIFORM_K, None, None, True, masks=[torch.zeros_like(x.nll_k, dtype=torch.bool) for x in val]),
            Row(UNIFORM_K1, None, None, True, masks=[torch.ones_like(x.nll_k, dtype=torch.bool) for x in val])]
    bar = Progress("calibrate", len(opts.fractions) * len(opts.signals), enabled=progress)
    done = 0
    for f in opts.fractions:
        cap = opts.cap(f)
        legal = [s for s in opts.signals if s not in ORACLE_SIGNALS]
        parts = fit_parts(a, f, 1.0, opts.seed, legal)
        for s in opts.signals:
            if s in ORACLE_SIGNALS:
                thr = calibrate_threshold([oracle_score(s, x.nll_k, x.nll_k1) for x in b], f, cap)
                decided = [_decide_oracle(s, x, thr, cap) for x in val]
                rows.append(Row(f"{s}@{f:g}", s, f, False, oracle_threshold=thr, masks=[d[0] for d in decided],
                                refused=sum(d[1] for d in decided)))
            else:
                rule, eta_cal = rule_for(s, parts, b, f, cap, K)
                decided = [rule.decide(parts.scores(s, x.feats)) for x in val]
                rows.append(Row(f"{s}@{f:g}", s, f, True, rule=rule, masks=[d[0] for d in decided],
                                refused=sum(d[1] for d in decided), calib_capture=eta_cal))
            done += 1
            bar.update(done)
    return rows


def time_rows(model, rows: list[Row], val_tokens: np.ndarray, val_batches, opts: ExperimentOptions,
              progress: bool) -> dict[str, dict]:
    """Real runs on the first time_tokens validation tokens (full windows), round-robin, median per row."""
    L = model.cfg.seq_len
    n_win = min(opts.time_tokens // L, (len(val_tokens) - 1) // L)
    if n_win == 0:
        return {}
    toks = torch.from_numpy(np.asarray(val_tokens[: n_win * L + 1], dtype=np.int64))
    xs = toks[: n_win * L].view(n_win, L)
    ys = toks[1: n_win * L + 1].view(n_win, L)
    chunks = [(xs[i:i + opts.batch_size], ys[i:i + opts.batch_size], i) for i in range(0, n_win, opts.batch_size)]
    win_masks = {r.policy: _window_masks(r.masks, val_batches, n_win, L) for r in rows}
    K = model.cfg.n_passes

    def runner_for(r: Row):
        if r.policy == UNIFORM_K:
            return PolicyRunner(model, Policy(UNIFORM_K, K)), None
        if r.policy == UNIFORM_K1:
            return PolicyRunner(model, Policy(UNIFORM_K1, K + 1)), None
        if r.legal:
            return PolicyRunner(model, Policy(r.policy, K, r.rule)), None
        return None, win_masks[r.policy]

    def run(r: Row, check: bool):
        fn, fixed = runner_for(r)
        nll_all = []
        for x, y, i in chunks:
            nll = fn.nll(x, y) if fn is not None else fixed_nll(model, x, y, fixed[i:i + len(x)])
            if check:
                nll_all.append(nll)
        return nll_all, (fn.stats if fn is not None else None)

    out: dict[str, dict] = {}
    for r in rows:                                   # one checked run each: losses, decisions, fraction
        nll, stats = run(r, True)
        nll = torch.cat(nll).double().numpy().ravel()
        mixed = _mixed_windows(r, val_batches, n_win, L, win_masks[r.policy])
        frac = (stats.fraction if stats is not None else float(win_masks[r.policy].float().mean()))
        out[r.policy] = {"wall": [], "cpu": [], "max_abs_nll_diff": float(np.abs(nll - mixed).max()),
                         "fraction": frac}
    for _ in range(opts.warmup):
        for r in rows:
            run(r, False)

    def timed(r: Row) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.thread_time()
        run(r, False)
        return time.perf_counter() - w0, time.thread_time() - c0

    uk, uk1 = rows[0], rows[1]
    others = [r for r in rows if r.signal is not None] or [uk]
    for v in out.values():
        v.update({"d_wall": [], "d_cpu": [], "dk1_wall": [], "dk1_cpu": []})
    bar = Progress("timing", opts.time_repeats * len(others), enabled=progress)
    for rep in range(opts.time_repeats):              # paired blocks: uniform K, the row, uniform K+1
        for j, r in enumerate(others):
            tk, ta, tk1 = timed(uk), timed(r), timed(uk1)
            for n, key in enumerate(("wall", "cpu")):
                out[uk.policy][key].append(tk[n])
                out[uk1.policy][key].append(tk1[n])
                if r is not uk:
                    out[r.policy][key].append(ta[n])
                    out[r.policy]["d_" + key].append(ta[n] - tk[n])
                    out[r.policy]["dk1_" + key].append(tk1[n] - tk[n])
            bar.update(rep * len(others) + j + 1)
    n_tok = n_win * L
    for v in out.values():
        v["tokens"] = n_tok
        for key in ("wall", "cpu"):
            v[f"{key}_s_per_token"] = float(np.median(v[key])) / n_tok
            if v["d_" + key]:
                denom = v["fraction"] * float(np.median(v["dk1_" + key]))
                v[f"overhead_{key}"] = float(np.median(v["d_" + key])) / denom if denom > 0 else None
    return out


def _window_masks(masks, batches, n_win: int, L: int) -> torch.Tensor:
    flat = _flat(masks, batches)
    return torch.from_numpy(flat[: n_win * L].reshape(n_win, L).astype(bool))


def _mixed_windows(r: Row, batches, n_win: int, L: int, win_mask: torch.Tensor) -> np.ndarray:
    nk = _flat([b.nll_k for b in batches], batches)[: n_win * L]
    nk1 = _flat([b.nll_k1 for b in batches], batches)[: n_win * L]
    return np.where(win_mask.numpy().ravel(), nk1, nk).astype(np.float64)


def run_experiment(artifact: Path, data: list[Path], tokenizer: Path, opts: ExperimentOptions = ExperimentOptions(),
                   calib_data: Path | None = None, progress: bool = True, plot: Path | None = None,
                   force: bool = False) -> dict:
    """Every policy's row on the full validation split (the module docstring says how); the bpb-vs-time chart to
    `plot`, whose path is checked before any work."""
    if plot is not None:
        check_output(plot, [Path(artifact), *map(Path, data)], force, looks_like_png_we_wrote, "a golfpack chart")
    rep = _experiment(artifact, data, tokenizer, opts, calib_data, progress)
    if plot is not None:
        rep["meta"]["plot"] = str(plot_experiment(rep, plot))
    return rep


def _experiment(artifact: Path, data: list[Path], tokenizer: Path, opts: ExperimentOptions,
                calib_data: Path | None, progress: bool) -> dict:
    torch.set_num_threads(opts.threads)
    art = read_artifact(Path(artifact))
    model = build_model(art)
    if art.manifest["model"]["family"] != "recurrent":
        raise UsageError(f"{artifact}: the routing experiment needs a recurrent core, not "
                         f"{art.manifest['model']['family']!r}")
    tok = Tokenizer.load(Path(tokenizer))
    want = art.manifest["tokenizer"].get("sha256")
    if want and want != tok.sha256:
        raise MismatchError(f"tokenizer {tokenizer} (sha256 {tok.sha256[:12]}…) is not the one {artifact} was packed "
                            f"for (sha256 {want[:12]}…); pass the matching --tokenizer")
    val_tokens, train, described = load_eval_tokens(list(data), tok)
    calib_tokens = _calib_tokens(train, calib_data, opts.calib_tokens)
    t0 = time.perf_counter()
    calib = collect(model, calib_tokens, opts.batch_size)
    val = collect(model, val_tokens, opts.batch_size, full_only=False)
    rows = build_rows(model, calib, val, opts, progress)
    timing = time_rows(model, rows, val_tokens, val, opts, progress) if opts.time_tokens else {}
    nll_k, nll_k1 = _flat([b.nll_k for b in val], val).astype(np.float64), _flat([b.nll_k1 for b in val], val)
    nll_k1 = nll_k1.astype(np.float64)
    val_np = np.asarray(val_tokens)
    token_bytes = target_byte_counts(val_np[:-1], val_np[1:], tok.byte_tables()).astype(np.int64)
    boot = PairedBootstrap(document_ids(val_np, tok.bos_id), token_bytes, opts.n_boot, opts.seed)
    gain = nll_k - nll_k1
    cfg = model.cfg
    out_rows = []
    for r in rows:
        mask = _flat(r.masks, val).astype(bool)
        nats = np.where(mask, nll_k1, nll_k)
        f_real = float(mask.mean())
        if r.policy == UNIFORM_K:
            flops = flops_per_token(cfg, Policy(UNIFORM_K, cfg.n_passes), 0.0)
        elif r.policy == UNIFORM_K1:
            flops = flops_per_token(cfg, Policy(UNIFORM_K1, cfg.n_passes + 1), 1.0)
        elif r.legal:
            flops = flops_per_token(cfg, Policy(r.policy, cfg.n_passes, r.rule), f_real)
        else:
            flops = fixed_mask_flops(cfg, f_real)
        tm = timing.get(r.policy)
        row = {"policy": r.policy, "signal": r.signal, "fraction": r.fraction, "legal": r.legal,
               "control": r.signal in CONTROL_SIGNALS, "oracle": r.signal in ORACLE_SIGNALS,
               "val_bpb": bits_per_byte(float(nats.sum()), int(token_bytes.sum())),
               "delta_vs_uniform_k": boot.delta_bpb(nats, nll_k),
               "delta_vs_uniform_k1": boot.delta_bpb(nats, nll_k1),
               "route_fraction_target": r.fraction, "route_fraction_realized": f_real, "cap_bound_count": r.refused,
               "flops_per_token": flops,
               "tokens_per_second": (1.0 / tm["wall_s_per_token"]) if tm else None,
               "us_per_token_wall": tm["wall_s_per_token"] * 1e6 if tm else None,
               "us_per_token_cpu": tm["cpu_s_per_token"] * 1e6 if tm else None,
               "timed_fraction": tm["fraction"] if tm else None,
               "timed_max_abs_nll_diff": tm["max_abs_nll_diff"] if tm else None,
               "capture_efficiency": (capture_efficiency(gain, mask) if r.signal is not None else None),
               "calib_capture_efficiency": r.calib_capture,
               "overhead_ratio": tm.get("overhead_wall") if tm and r.signal else None,
               "overhead_ratio_cpu": tm.get("overhead_cpu") if tm and r.signal else None}
        if r.rule is not None:
            row["threshold"], row["sign"] = r.rule.threshold, r.rule.sign
        elif r.oracle_threshold is not None:
            row["threshold"] = r.oracle_threshold
        out_rows.append(row)
    meta = {"artifact": str(artifact), "sha256": art.file_sha256, "data": described, "passes": cfg.n_passes,
            "seq_len": cfg.seq_len, "val_tokens": len(nll_k), "val_bytes": int(token_bytes.sum()),
            "documents": boot.n_docs, "calib_tokens": int(len(calib_tokens) - 1), "threads": opts.threads,
            "bootstrap_samples": opts.n_boot, "time_tokens": next(iter(timing.values()))["tokens"] if timing else 0,
            "time_repeats": opts.time_repeats, "warmup_runs": opts.warmup, "seconds": time.perf_counter() - t0,
            "embedded_routing": art.manifest["routing"], "total_gain_nats": float(gain.sum()),
            "illegal": sorted(ORACLE_SIGNALS)}
    return {"meta": meta, "rows": out_rows}
