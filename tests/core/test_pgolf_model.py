"""Parameter Golf baseline GPT: shape inference, strict loading, causality, looped schedules, real-checkpoint CE."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from common.errors import CheckpointError, ConfigError
from core.pgolf_model import PGolfConfig, PGolfGPT, infer_pgolf_config, pgolf_state_shapes

_TALEEF7 = {"num_layers": 2, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2, "mlp_hidden": 64,
            "vocab_size": 1024}
_NOLANVILD = {"num_layers": 3, "model_dim": 128, "num_heads": 4, "num_kv_heads": 2, "mlp_hidden": 256,
              "vocab_size": 1024}
# name: (mlp_power, expected config fields, parameter count), from shared/data/README.md
CHECKPOINTS = {"taleef7": (2, _TALEEF7, 107_080), "nolanvild": (3, _NOLANVILD, 476_812)}


def _load_pt(shared_data, name: str) -> dict[str, torch.Tensor]:
    return torch.load(shared_data / "pgolf" / name / "final_model.pt", map_location="cpu", weights_only=True)


def _small_cfg(**kw) -> PGolfConfig:
    base = {"vocab_size": 64, "num_layers": 3, "model_dim": 32, "num_heads": 4, "num_kv_heads": 2,
            "mlp_hidden": 48}
    return PGolfConfig(**{**base, **kw})


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_infer_config_and_strict_load_of_real_checkpoints(shared_data, name):
    power, want, n_params = CHECKPOINTS[name]
    sd = _load_pt(shared_data, name)
    cfg = infer_pgolf_config(sd, mlp_power=power)
    for field, value in want.items():
        assert getattr(cfg, field) == value, field
    assert cfg.tie_embeddings and cfg.mlp_power == power and cfg.layer_schedule is None
    model = PGolfGPT(cfg)
    model.load_state_dict(sd)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert set(model.state_dict()) == set(sd)
    for key, tensor in sd.items():   # loaded as is (bf16 values are exactly representable in float32)
        assert torch.equal(model.state_dict()[key], tensor.float()), key


def test_strict_load_names_missing_unexpected_and_misshaped(shared_data):
    sd = _load_pt(shared_data, "taleef7")
    model = PGolfGPT(infer_pgolf_config(sd))
    missing = {k: v for k, v in sd.items() if k != "blocks.1.attn.q_gain"}
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.attn.q_gain'\]"):
        model.load_state_dict(missing)
    with pytest.raises(CheckpointError, match="unexpected keys.*'extra.bias'"):
        model.load_state_dict({**sd, "extra.bias": torch.zeros(3)})
    bad = dict(sd)
    bad["blocks.0.mlp.fc.weight"] = torch.zeros(65, 64)
    with pytest.raises(CheckpointError, match=r"'blocks.0.mlp.fc.weight' has shape \[65, 64\]"):
        model.load_state_dict(bad)
    with pytest.raises(CheckpointError, match="strictly"):
        model.load_state_dict(sd, strict=False)


def test_infer_rejects_foreign_state_dicts():
    with pytest.raises(CheckpointError, match="'tok_emb.weight' is missing"):
        infer_pgolf_config({"wte.weight": torch.zeros(8, 4)})
    sd = {k: torch.zeros(s) for k, s in pgolf_state_shapes(_small_cfg()).items()}
    with pytest.raises(CheckpointError, match="blocks.0.attn.q_gain"):
        infer_pgolf_config({k: v for k, v in sd.items() if k != "blocks.0.attn.q_gain"})
    sd_gap = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    with pytest.raises(CheckpointError, match="without gaps"):
        infer_pgolf_config(sd_gap)
    odd = dict(sd, **{"blocks.0.attn.c_k.weight": torch.zeros(12, 32)})   # 12 rows, head dim 8
    with pytest.raises(CheckpointError, match="c_k.weight' has 12 rows"):
        infer_pgolf_config(odd)
    assert infer_pgolf_config(sd) == _small_cfg()


def test_untied_head_round_trips_through_inference():
    cfg = _small_cfg(tie_embeddings=False)
    sd = PGolfGPT(cfg).state_dict()
    assert "lm_head.weight" in sd
    assert infer_pgolf_config(sd) == cfg


def test_config_json_round_trip_and_validation():
    cfg = _small_cfg(mlp_power=3, layer_schedule=(0, 1, 1, 2), softcap=15.0)
    again = PGolfConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.layer_schedule == (0, 1, 1, 2)
    with pytest.raises(ConfigError, match="unknown field.*'mlp_mult'"):
        PGolfConfig.from_dict({**cfg.to_dict(), "mlp_mult": 2})
    with pytest.raises(ConfigError, match="missing field.*'num_kv_heads'"):
        PGolfConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "num_kv_heads"})
    with pytest.raises(ConfigError, match="PGolfConfig.num_kv_heads=3"):
        PGolfConfig.from_dict({**cfg.to_dict(), "num_kv_heads": 3})
    with pytest.raises(ConfigError, match="PGolfConfig.layer_schedule"):
        PGolfConfig.from_dict({**cfg.to_dict(), "layer_schedule": [0, 3]})
    with pytest.raises(ConfigError, match="PGolfConfig.softcap"):
        PGolfConfig.from_dict({**cfg.to_dict(), "softcap": 0})


def test_skip_split_for_odd_and_even_depths():
    # train_gpt: encoder = n // 2 layers, decoder = the rest, skip weights = min of the two
    assert [(_small_cfg(num_layers=n).num_encoder_layers, _small_cfg(num_layers=n).num_skip_weights)
            for n in (1, 2, 3, 4, 5)] == [(0, 0), (1, 1), (1, 1), (2, 2), (2, 2)]
    assert _small_cfg(layer_schedule=(0, 1, 2, 1, 2)).num_skip_weights == 2


@pytest.mark.parametrize("schedule", [None, (0, 1, 2, 1, 2)])
def test_causality(schedule):
    torch.manual_seed(0)
    cfg = _small_cfg(layer_schedule=schedule)
    model = PGolfGPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))
    changed = tokens.clone()
    changed[:, 15] = (changed[:, 15] + 7) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.dtype == torch.float32 and a.shape == (2, 24, cfg.vocab_size)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=0, atol=1e-5)
    assert (a[:, 15:] - b[:, 15:]).abs().max() > 1e-3
    assert a.abs().max() <= cfg.softcap


def test_looped_schedule_reuses_blocks():
    torch.manual_seed(1)
    plain = _small_cfg(num_layers=2)
    looped = _small_cfg(num_layers=2, layer_schedule=(0, 1, 0, 1))
    m_plain, m_loop = PGolfGPT(plain).eval(), PGolfGPT(looped).eval()
    # same blocks, only the skip weights grow with the schedule (2 skips for 4 virtual layers)
    assert sum(p.numel() for p in m_loop.parameters()) - sum(p.numel() for p in m_plain.parameters()) == 32
    sd = m_loop.state_dict()
    assert not any(k.startswith("blocks.2.") for k in sd)
    with pytest.raises(CheckpointError, match="layer_schedule"):
        infer_pgolf_config(sd)
    assert infer_pgolf_config(sd, layer_schedule=(0, 1, 0, 1)) == looped
    explicit = PGolfGPT(_small_cfg(num_layers=2, layer_schedule=(0, 1))).eval()
    explicit.load_state_dict(m_plain.state_dict())
    tokens = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.equal(explicit(tokens), m_plain(tokens))
        assert not torch.allclose(m_loop(tokens), m_plain(tokens))


def _wikitext_tokens(shared_data, n_tokens: int) -> torch.Tensor:
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(shared_data / "tokenizers" / "fineweb_1024_bpe.model"))
    text = (shared_data / "text" / "wikitext2_test.raw").read_text(encoding="utf-8")[:8000]
    ids = [sp.bos_id()] + sp.encode(text)
    assert len(ids) > n_tokens
    return torch.tensor(ids[: n_tokens + 1])[None]


def mean_ce_nats(model: PGolfGPT, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model.eval()(tokens[:, :-1])
    return F.cross_entropy(logits[0], tokens[0, 1:]).item()


def test_trained_checkpoint_predicts_real_text(shared_data):
    """nolanvild (500 steps on FineWeb, relu^3) must beat the uniform ln(1024) = 6.93 nats clearly on WikiText."""
    tokens = _wikitext_tokens(shared_data, 512)
    sd = _load_pt(shared_data, "nolanvild")
    ce = {}
    for power in (3, 2):
        model = PGolfGPT(infer_pgolf_config(sd, mlp_power=power))
        model.load_state_dict(sd)
        ce[power] = mean_ce_nats(model, tokens)
    assert ce[3] < 5.0 < math.log(1024)       # measured 4.47 on these 512 tokens (torch 2.13 CPU)
    assert ce[2] > ce[3] + 0.05               # the wrong activation power is measurably worse
