"""Mistral native checkpoints: rotary layout, round trips, shards and .pth, every way they can be broken, and the
Magistral-style fields (head_dim other than dim / heads, a large rope_theta, max_seq_len, tekken.json)."""

import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM
from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding, apply_rotary_pos_emb

import hf_mistral_kit as kit
from hf_mistral_kit.formats.errors import NativeCheckpointError
from hf_mistral_kit.formats.native import NATIVE_SAFETENSORS
from hf_mistral_kit.formats.tensors import read_rows, rotary_row_order, rotary_to_hf, rotary_to_native
from tiny_configs import TINY_SIZES

SIZES = {**TINY_SIZES, "sliding_window": 4}


def build(kind: str):
    torch.manual_seed(0)
    if kind == "mixtral":
        return MixtralForCausalLM(MixtralConfig(**SIZES, num_local_experts=4)).eval()
    return MistralForCausalLM(MistralConfig(**SIZES)).eval()


@pytest.fixture(scope="module")
def mistral_native(tmp_path_factory):
    """(upstream model, native directory) for a tiny Mistral."""
    model = build("mistral")
    hf_dir = tmp_path_factory.mktemp("hf")
    model.save_pretrained(hf_dir)
    return model, kit.convert_checkpoint(hf_dir, tmp_path_factory.mktemp("native") / "out", to="native")


def broken_copy(native_dir, tmp_path, name="broken"):
    """A copy of `native_dir` to damage."""
    target = tmp_path / name
    target.mkdir()
    for file in native_dir.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def load(directory):
    return kit.AutoModelForCausalLM.from_pretrained(directory)


@torch.no_grad()
def logits(model, seed=1):
    ids = torch.randint(0, SIZES["vocab_size"], (1, 10), generator=torch.Generator().manual_seed(seed))
    return model(ids).logits


def test_rotary_permutation_matches_mistral_reference_attention():
    """Scores from Mistral's complex (interleaved) RoPE on wq/wk equal transformers' rotate-half on permuted rows."""
    torch.manual_seed(0)
    config = MistralConfig(**SIZES)
    heads, kv_heads, head_dim, hidden = 4, 2, 16, SIZES["hidden_size"]
    wq, wk = torch.randn(heads * head_dim, hidden), torch.randn(kv_heads * head_dim, hidden)
    x = torch.randn(7, hidden)
    positions = torch.arange(7)

    # mistral-inference's formulation: consecutive pairs are complex numbers rotated by position * freq.
    freqs = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    cis = torch.polar(torch.ones(7, head_dim // 2), torch.outer(positions.float(), freqs))

    def native_rope(projected, n):
        pairs = torch.view_as_complex(projected.view(7, n, head_dim // 2, 2))
        return torch.view_as_real(pairs * cis[:, None, :]).flatten(2)

    q_native, k_native = native_rope(x @ wq.T, heads), native_rope(x @ wk.T, kv_heads)
    native_scores = torch.einsum("qhd,khd->hqk", q_native, k_native.repeat_interleave(2, dim=1))

    cos, sin = MistralRotaryEmbedding(config)(x, positions[None])
    q_hf = (x @ rotary_to_hf(wq, heads).T).view(1, 7, heads, head_dim).transpose(1, 2)
    k_hf = (x @ rotary_to_hf(wk, kv_heads).T).view(1, 7, kv_heads, head_dim).transpose(1, 2)
    q_hf, k_hf = apply_rotary_pos_emb(q_hf, k_hf, cos, sin)
    hf_scores = torch.einsum("hqd,hkd->hqk", q_hf[0], k_hf[0].repeat_interleave(2, dim=0))

    torch.testing.assert_close(hf_scores, native_scores, atol=1e-4, rtol=1e-5)
    assert torch.equal(rotary_to_native(rotary_to_hf(wk, kv_heads), kv_heads), wk)
    assert not torch.equal(rotary_to_hf(wk, kv_heads), wk)


@pytest.mark.parametrize("kind", ["mistral", "mixtral"])
def test_hf_native_hf_round_trip_is_exact(kind, tmp_path):
    model = build(kind)
    model.save_pretrained(tmp_path / "hf")
    native = kit.convert_checkpoint(tmp_path / "hf", tmp_path / "native", to="native")
    back = kit.convert_checkpoint(native, tmp_path / "back", to="hf")

    original, round_tripped = load_file(tmp_path / "hf" / "model.safetensors"), load_file(back / "model.safetensors")
    assert original.keys() == round_tripped.keys()
    for key, tensor in original.items():
        assert torch.equal(tensor, round_tripped[key]), key

    params = json.loads((native / "params.json").read_text())
    assert params["n_kv_heads"] == 2 and params["head_dim"] == 16 and params["sliding_window"] == 4
    # The context under mistral-inference's name and the one vLLM and llama.cpp's converter read.
    assert params["max_seq_len"] == params["max_position_embeddings"] == model.config.max_position_embeddings
    assert ("moe" in params) == (kind == "mixtral")
    with safe_open(native / NATIVE_SAFETENSORS, "pt") as native_file:
        names = set(native_file.keys())
    assert "layers.1.attention.wk.weight" in names and "tok_embeddings.weight" in names
    if kind == "mixtral":
        assert "layers.0.feed_forward.experts.3.w2.weight" in names and "layers.0.feed_forward.gate.weight" in names
    config = json.loads((back / "config.json").read_text())
    assert config["model_type"] == kind and config["num_key_value_heads"] == 2


def test_fused_mixtral_exports_like_per_expert(tmp_path):
    model = build("mixtral")
    model.save_pretrained(tmp_path / "fused", save_original_format=False)
    with safe_open(tmp_path / "fused" / "model.safetensors", "pt") as fused_file:
        names = fused_file.keys()
    assert "model.layers.0.mlp.experts.gate_up_proj" in names
    native = kit.convert_checkpoint(tmp_path / "fused", tmp_path / "native", to="native")
    torch.testing.assert_close(logits(load(native)), logits(model), atol=1e-5, rtol=0)


def test_shards_and_legacy_pth_load_like_single_file(mistral_native, tmp_path):
    model, native_dir = mistral_native
    tensors = load_file(native_dir / NATIVE_SAFETENSORS)
    names = sorted(tensors)
    half = len(names) // 2

    sharded = broken_copy(native_dir, tmp_path, "sharded")
    (sharded / NATIVE_SAFETENSORS).unlink()
    save_file({name: tensors[name] for name in names[:half]}, sharded / "consolidated.00.safetensors")
    save_file({name: tensors[name] for name in names[half:]}, sharded / "consolidated.01.safetensors")

    legacy = broken_copy(native_dir, tmp_path, "legacy")
    (legacy / NATIVE_SAFETENSORS).unlink()
    torch.save(tensors, legacy / "consolidated.00.pth")

    reference = logits(model)
    for directory in (sharded, legacy):
        torch.testing.assert_close(logits(load(directory)), reference, atol=1e-5, rtol=0)


def test_kit_class_loads_native_and_refuses_the_wrong_family(mistral_native, tmp_path):
    model, native_dir = mistral_native
    torch.testing.assert_close(logits(kit.KitMistralForCausalLM.from_pretrained(native_dir)), logits(model))
    with pytest.raises(ValueError, match="describes a mistral checkpoint"):
        kit.KitMixtralForCausalLM.from_pretrained(native_dir)


def test_truncated_safetensors_is_reported(mistral_native, tmp_path):
    _, native_dir = mistral_native
    broken = broken_copy(native_dir, tmp_path)
    weights = broken / NATIVE_SAFETENSORS
    os.truncate(weights, weights.stat().st_size - 1000)
    with pytest.raises(
        NativeCheckpointError, match=r"consolidated\.safetensors is truncated or corrupted.*Re-download"
    ):
        load(broken)


def test_corrupted_safetensors_header_is_reported(mistral_native, tmp_path):
    _, native_dir = mistral_native
    broken = broken_copy(native_dir, tmp_path)
    data = bytearray((broken / NATIVE_SAFETENSORS).read_bytes())
    data[8:40] = b"\x00garbage, not a json header...."
    (broken / NATIVE_SAFETENSORS).write_bytes(bytes(data))
    with pytest.raises(NativeCheckpointError, match="not a readable safetensors file"):
        load(broken)


def test_missing_params_field_is_named(mistral_native, tmp_path):
    _, native_dir = mistral_native
    broken = broken_copy(native_dir, tmp_path)
    params = json.loads((broken / "params.json").read_text())
    del params["n_kv_heads"]
    (broken / "params.json").write_text(json.dumps(params))
    with pytest.raises(NativeCheckpointError, match="missing required field.*'n_kv_heads'"):
        load(broken)
    with pytest.raises(NativeCheckpointError, match="'n_kv_heads'"):
        kit.AutoConfig.from_pretrained(broken)


def test_shape_that_contradicts_params_is_named(mistral_native, tmp_path):
    _, native_dir = mistral_native
    broken = broken_copy(native_dir, tmp_path)
    params = json.loads((broken / "params.json").read_text())
    params["n_kv_heads"] = 4  # the weights were made for 2 KV heads
    (broken / "params.json").write_text(json.dumps(params))
    with pytest.raises(
        NativeCheckpointError, match=r"'layers\.0\.attention\.wk\.weight' has shape \[32, 64\].*\[64, 64\]"
    ):
        load(broken)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.update({"layers.0.attention.wz.weight": torch.zeros(2)}), r"unknown weight name.*wz"),
        (lambda t: t.pop("layers.1.ffn_norm.weight"), r"missing weight.*'layers\.1\.ffn_norm\.weight'"),
        (
            lambda t: t.update({"layers.7.ffn_norm.weight": torch.zeros(64)}),
            r"'layers\.7\.ffn_norm\.weight' does not fit",
        ),
    ],
    ids=["unknown", "missing", "extra-layer"],
)
def test_unknown_missing_and_extra_keys_are_named(mistral_native, tmp_path, edit, message):
    _, native_dir = mistral_native
    broken = broken_copy(native_dir, tmp_path)
    tensors = load_file(broken / NATIVE_SAFETENSORS)
    edit(tensors)
    save_file(tensors, broken / NATIVE_SAFETENSORS)
    with pytest.raises(NativeCheckpointError, match=message):
        load(broken)


class NotATensor:
    pass


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"step": 3}, r"entry 'step' is a int, not a tensor"),
        ({"optimizer": NotATensor()}, r"cannot be loaded with torch\.load\(weights_only=True\)"),
    ],
    ids=["plain-object", "pickled-class"],
)
def test_pth_with_non_tensor_objects_is_refused(mistral_native, tmp_path, payload, message):
    _, native_dir = mistral_native
    broken = broken_copy(native_dir, tmp_path)
    tensors = load_file(broken / NATIVE_SAFETENSORS)
    (broken / NATIVE_SAFETENSORS).unlink()
    torch.save({**tensors, **payload}, broken / "consolidated.00.pth", pickle_module=pickle)
    with pytest.raises(NativeCheckpointError, match=message):
        load(broken)


def test_conversion_refuses_foreign_weights_and_leaves_no_output(tmp_path):
    torch.manual_seed(0)
    from transformers import MistralForSequenceClassification

    MistralForSequenceClassification(MistralConfig(**SIZES, num_labels=2)).save_pretrained(tmp_path / "classifier")
    with pytest.raises(NativeCheckpointError, match=r"'score\.weight'.*no place in a native mistral causal LM"):
        kit.convert_checkpoint(tmp_path / "classifier", tmp_path / "out", to="native")
    assert not (tmp_path / "out").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["classifier"]  # no staging directory left behind
    with pytest.raises(FileExistsError):
        kit.convert_checkpoint(tmp_path / "classifier", tmp_path / "classifier", to="native")


def test_device_map_with_disk_offload_works_on_native_checkpoints(mistral_native, tmp_path):
    model, native_dir = mistral_native
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers": "disk"}
    device_map |= {"model.norm": "cpu", "lm_head": "cpu"}
    offloaded = kit.AutoModelForCausalLM.from_pretrained(native_dir, device_map=device_map, offload_folder=tmp_path)
    assert offloaded.model.layers[0].self_attn.q_proj.weight.device.type == "meta"  # really on disk
    torch.testing.assert_close(logits(offloaded), logits(model), atol=1e-5, rtol=0)


def test_rotary_reads_permute_rows_straight_from_the_file(tmp_path):
    """q/k rows land in their rotate-half places as they are read (one `preadv` per 1024 rows, no intermediate
    copy): the same tensor `rotary_to_hf` computes, in any dtype, for tensors of more rows than one call takes."""
    weight = torch.randn(2176, 24).to(torch.bfloat16)  # 17 heads of 128 rows: more than IOV_MAX (1024) rows
    save_file({"before": torch.zeros(3), "w": weight}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    offset = data.index(weight.view(torch.uint8).numpy().tobytes())
    for heads in (17, 34):
        order = rotary_row_order(weight.shape[0], heads, "hf")
        read = read_rows(tmp_path / "w.safetensors", offset, torch.bfloat16, tuple(weight.shape), order)
        assert torch.equal(read, rotary_to_hf(weight, heads))
        back = rotary_row_order(weight.shape[0], heads, "native")
        assert torch.equal(rotary_to_native(read, heads)[back], read)  # the inverse order undoes it
    with pytest.raises(NativeCheckpointError, match="ended early"):
        read_rows(tmp_path / "w.safetensors", len(data) - 100, torch.bfloat16, tuple(weight.shape), order)


def test_first_mixtral_release_with_stacked_experts_loads(tmp_path):
    """The December 2023 torrent (`consolidated.00.pth`): `block_sparse_moe.w1/w2/w3` stack the experts, without a
    `.weight` suffix, w2 transposed per expert."""
    model = build("mixtral")
    model.save_pretrained(tmp_path / "hf")
    native = kit.convert_checkpoint(tmp_path / "hf", tmp_path / "native", to="native")
    tensors = load_file(native / NATIVE_SAFETENSORS)
    experts, inter = 4, SIZES["intermediate_size"]
    for layer in range(SIZES["num_hidden_layers"]):
        prefix = f"layers.{layer}.feed_forward."
        for name in ("w1", "w2", "w3"):
            parts = [tensors.pop(f"{prefix}experts.{e}.{name}.weight") for e in range(experts)]
            parts = [part.t() for part in parts] if name == "w2" else parts
            tensors[f"layers.{layer}.block_sparse_moe.{name}"] = torch.cat(parts).contiguous()
        tensors[f"layers.{layer}.block_sparse_moe.gate.weight"] = tensors.pop(f"{prefix}gate.weight")
    torrent = tmp_path / "torrent"
    torrent.mkdir()
    (torrent / "params.json").write_text((native / "params.json").read_text())
    torch.save(tensors, torrent / "consolidated.00.pth")
    assert tensors["layers.0.block_sparse_moe.w2"].shape == (experts * inter, SIZES["hidden_size"])
    torch.testing.assert_close(logits(load(torrent)), logits(model), atol=1e-5, rtol=0)

    tensors["layers.1.block_sparse_moe.w3"] = tensors["layers.1.block_sparse_moe.w3"][:-1]
    torch.save(tensors, torrent / "consolidated.00.pth")
    with pytest.raises(NativeCheckpointError, match=r"stacked expert weight 'layers\.1\.block_sparse_moe\.w3'"):
        load(torrent)


def test_a_native_tekken_checkpoint_with_magistral_style_fields_loads_like_its_conversion(tmp_path):
    """params.json with head_dim 32 (dim 64 / 4 heads = 16), rope_theta 1e9 and max_seq_len 40960 (Magistral-Small
    writes these), and tekken.json: the kit loads it natively as transformers loads the converted checkpoint."""
    native = kit.tiny_model(
        "mistral",
        tmp_path / "native",
        native=True,
        tokenizer="tekken",
        rope_theta=1e9,
        max_position_embeddings=40960,
        sliding_window=None,
    )
    params = json.loads((native / "params.json").read_text())
    assert (params["head_dim"], params["dim"] // params["n_heads"]) == (32, 16)
    assert (params["rope_theta"], params["max_seq_len"], params["vocab_size"]) == (1e9, 40960, 131072)
    model = kit.AutoModelForCausalLM.from_pretrained(native, dtype=torch.float32)
    assert model.config.head_dim == 32 and model.config.max_position_embeddings == 40960
    assert model.config.rope_parameters["rope_theta"] == 1e9
    converted = kit.convert_checkpoint(native, tmp_path / "hf", to="hf")
    reference = MistralForCausalLM.from_pretrained(converted, dtype=torch.float32)
    tokenizer = kit.AutoTokenizer.from_pretrained(native)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Bonjour  à tous"}], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, rtol=0, atol=0)
