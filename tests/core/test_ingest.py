"""Foreign checkpoint readers: .pt (weights_only), safetensors, Parameter Golf .ptz; hostile and malformed files."""

from __future__ import annotations

import hashlib
import io
import pickletools
import zipfile
import zlib

import pytest
import torch
from safetensors.torch import save_file

from common.errors import CheckpointError
from core.ingest import detect_format, load_state_dict_file
from core.pgolf_model import PGolfGPT, infer_pgolf_config

CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")  # train_gpt keeps fp32


def _pgolf(shared_data, name: str, file: str):
    return shared_data / "pgolf" / name / file


def _write_ptz(path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(zlib.compress(buf.getvalue(), 9))


@pytest.mark.parametrize("name", ["taleef7", "nolanvild"])
def test_ptz_matches_pt_tensor_by_tensor(shared_data, name):
    pt_path, ptz_path = _pgolf(shared_data, name, "final_model.pt"), _pgolf(shared_data, name, "final_model.int8.ptz")
    pt = load_state_dict_file(pt_path)
    ptz = load_state_dict_file(ptz_path)
    assert (pt.source_format, ptz.source_format) == ("pt", "ptz")
    assert ptz.source_sha256 == hashlib.sha256(ptz_path.read_bytes()).hexdigest()
    assert set(pt.tensors) == set(ptz.tensors)
    assert set(ptz.notes["int8_tensors"]) | set(ptz.notes["passthrough_tensors"]) == set(pt.tensors)
    for key, ref in pt.tensors.items():
        got = ptz.tensors[key]
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        if key in ptz.notes["int8_tensors"]:
            # per-row int8: within one quantization step; train_gpt's step is max(clip/127, 1/127) per row
            step = torch.clamp(ref.float().abs().amax(dim=1) / 127.0, min=1.0 / 127.0)
            err = (got.float() - ref.float()).abs().amax(dim=1)
            assert bool((err <= step * 1.001).all()), key
            assert err.max() > 0, key
        elif any(p in key for p in CONTROL_PATTERNS):
            assert torch.equal(got, ref), key                                     # kept float32
        else:
            assert torch.equal(got, ref.to(torch.float16).to(ref.dtype)), key     # fp16 round trip
    expected_int8 = {"taleef7": [], "nolanvild": ["tok_emb.weight"]}[name]
    assert ptz.notes["int8_tensors"] == expected_int8


def test_inputs_are_not_modified(shared_data):
    path = _pgolf(shared_data, "nolanvild", "final_model.int8.ptz")
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    ck = load_state_dict_file(path)
    assert ck.source_sha256 == before[0]
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def _ce(tensors, tokens, power) -> float:
    model = PGolfGPT(infer_pgolf_config(tensors, mlp_power=power))
    model.load_state_dict(tensors)
    with torch.no_grad():
        logits = model.eval()(tokens[:, :-1])
    return torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:]).item()


def test_pt_and_ptz_score_alike_on_real_text(shared_data):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(shared_data / "tokenizers" / "fineweb_1024_bpe.model"))
    text = (shared_data / "text" / "wikitext2_test.raw").read_text(encoding="utf-8")[:8000]
    tokens = torch.tensor(([sp.bos_id()] + sp.encode(text))[:513])[None]
    for name, power in (("taleef7", 2), ("nolanvild", 3)):
        ce_pt = _ce(load_state_dict_file(_pgolf(shared_data, name, "final_model.pt")).tensors, tokens, power)
        ce_ptz = _ce(load_state_dict_file(_pgolf(shared_data, name, "final_model.int8.ptz")).tensors, tokens, power)
        assert abs(ce_pt - ce_ptz) < 0.05, (name, ce_pt, ce_ptz)


def test_format_is_detected_by_content_not_suffix(shared_data, tmp_path):
    renamed = tmp_path / "looks_like.pt"
    renamed.write_bytes(_pgolf(shared_data, "taleef7", "final_model.int8.ptz").read_bytes())
    ck = load_state_dict_file(renamed)
    assert ck.source_format == "ptz" and "suffix_mismatch" in ck.notes


def test_safetensors_and_wrapped_state_dicts(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64)}
    st = tmp_path / "m.safetensors"
    save_file(tensors, str(st))
    ck = load_state_dict_file(st)
    assert ck.source_format == "safetensors"
    assert all(torch.equal(ck.tensors[k], v) for k, v in tensors.items())
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"model": tensors, "step": 7, "note": "x"}, wrapped)
    ck = load_state_dict_file(wrapped)
    assert ck.notes["wrapped_under"] == "model" and set(ck.tensors) == set(tensors)
    assert detect_format(st.read_bytes()[:16], st.stat().st_size) == "safetensors"
    legacy = tmp_path / "legacy.pt"
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)
    ck = load_state_dict_file(legacy)
    assert ck.source_format == "pt" and torch.equal(ck.tensors["a.weight"], tensors["a.weight"])


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))    # unpickling it would create the marker file

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Exploit()}, evil)
    # the payload is real: the pickle inside the zip calls builtins.open (inspected statically, never run)
    with zipfile.ZipFile(evil) as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    assert any(name == "GLOBAL" and str(arg).endswith(" open") for name, arg in ops) and ("REDUCE", None) in ops
    with pytest.raises(CheckpointError, match="refuses to unpickle arbitrary objects"):
        load_state_dict_file(evil)
    assert not marker.exists()
    ptz = tmp_path / "evil.ptz"                 # the same payload inside a .ptz export
    _write_ptz(ptz, {"__quant_format__": "int8_clean_per_row_v1", "quantized": {}, "scales": {}, "dtypes": {},
                     "passthrough": {"x": Exploit()}})
    with pytest.raises(CheckpointError, match="refuses to unpickle arbitrary objects"):
        load_state_dict_file(ptz)
    assert not marker.exists()


def test_malformed_files_give_checkpoint_errors(shared_data, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(7, 250)) * 10)
    with pytest.raises(CheckpointError, match="accepted formats.*safetensors.*ptz"):
        load_state_dict_file(junk)
    raw = _pgolf(shared_data, "taleef7", "final_model.int8.ptz").read_bytes()
    short = tmp_path / "short.ptz"
    short.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict_file(short)
    with pytest.raises(CheckpointError, match="more than 1000 bytes"):
        load_state_dict_file(_pgolf(shared_data, "taleef7", "final_model.int8.ptz"), max_decompressed_bytes=1000)
    broken_zip = tmp_path / "broken.pt"
    broken_zip.write_bytes(_pgolf(shared_data, "taleef7", "final_model.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable torch.save file"):
        load_state_dict_file(broken_zip)
    st = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(64, 64)}, str(st))
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="malformed safetensors"):
        load_state_dict_file(st)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_state_dict_file(tmp_path / "absent.pt")


def test_ptz_structure_errors_name_the_fault(tmp_path):
    good = {"__quant_format__": "int8_clean_per_row_v1",
            "quantized": {"w": torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)},
            "scales": {"w": torch.tensor([0.5, 0.25], dtype=torch.float16)},
            "dtypes": {"w": "float32"},
            "passthrough": {"g": torch.tensor([1.5], dtype=torch.float16)},
            "passthrough_orig_dtypes": {"g": "bfloat16"}}
    path = tmp_path / "m.ptz"
    _write_ptz(path, good)
    ck = load_state_dict_file(path)
    assert torch.equal(ck.tensors["w"], torch.tensor([[0.5, -1.0], [0.75, 1.0]]))
    assert ck.tensors["g"].dtype == torch.bfloat16
    cases = [
        ({**good, "__quant_format__": "mixed_intN_per_row_v1"}, "'mixed_intN_per_row_v1' is not supported"),
        ({k: v for k, v in good.items() if k != "scales"}, "lacks its 'scales' entry"),
        ({**good, "scales": {"w": torch.tensor([0.5, 0.25, 1.0])}}, "'w' has 2 rows but 3 scales"),
        ({**good, "dtypes": {"w": "complex64"}}, "'w' names dtype 'complex64'"),
        ({**good, "passthrough": {"w": torch.zeros(2, 2)}}, "'w' is both quantized and passthrough"),
        ({"quantized": {}}, "tag None is not supported"),
        ([1, 2, 3], "expected a tagged dict"),
    ]
    for obj, message in cases:
        _write_ptz(path, obj)
        with pytest.raises(CheckpointError, match=message):
            load_state_dict_file(path)
    scalar = {**good, "quantized": {"v": torch.tensor([2, -4], dtype=torch.int8)},
              "scales": {"v": torch.tensor(0.5)}, "dtypes": {"v": "float16"}}
    _write_ptz(path, scalar)
    assert torch.equal(load_state_dict_file(path).tensors["v"], torch.tensor([1.0, -2.0], dtype=torch.float16))


def test_pt_with_non_tensor_values_names_the_key(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"a": torch.zeros(2), "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="key 'lr' holds a float"):
        load_state_dict_file(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_state_dict_file(path)
