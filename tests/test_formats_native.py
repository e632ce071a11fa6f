"""Mistral native checkpoints: rotary layout, round trips, shards and .pth, every way they can be broken, and the
Magistral-style fields (head_dim other than dim / heads, a large rope_theta, max_seq_len, tekken.json)."""

import json
import logging
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


# --- the 2025-26 architectures: Ministral-8B, Ministral 3 (YaRN + llama 4 scaling), vision releases, MLA ----------

# A Ministral 3 release's params.json, as vLLM's and llama.cpp's readers take it (the tiny sizes of `TINY_SIZES`):
# YaRN without attention magnitude correction and llama 4's query scaling, plus the vision encoder of the release.
MINISTRAL3_PARAMS = {
    "dim": 64,
    "n_layers": 2,
    "head_dim": 16,
    "hidden_dim": 96,
    "n_heads": 4,
    "n_kv_heads": 2,
    "norm_eps": 1e-5,
    "vocab_size": 320,
    "rope_theta": 1e6,
    "max_position_embeddings": 262144,
    "yarn": {
        "original_max_position_embeddings": 16384,
        "factor": 16.0,
        "apply_scale": False,
        "beta": 32.0,
        "alpha": 1.0,
    },
    "llama_4_scaling": {"original_max_position_embeddings": 16384, "beta": 0.1},
    "vision_encoder": {"hidden_size": 32, "num_hidden_layers": 2, "patch_size": 4, "spatial_merge_size": 2},
}
# The inverse of transformers' converter's renames (convert_ministral3_weights_to_hf.py), written out here so that
# the kit's tensor table is not its own judge.
_HF_TO_NATIVE = [
    (r"^model\.embed_tokens\.", "tok_embeddings."),
    (r"^model\.norm\.", "norm."),
    (r"^lm_head\.", "output."),
    (r"^model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.", r"layers.\1.attention.w\2."),
    (r"^model\.layers\.(\d+)\.input_layernorm\.", r"layers.\1.attention_norm."),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"layers.\1.ffn_norm."),
    (r"^model\.layers\.(\d+)\.mlp\.gate_proj\.", r"layers.\1.feed_forward.w1."),
    (r"^model\.layers\.(\d+)\.mlp\.down_proj\.", r"layers.\1.feed_forward.w2."),
    (r"^model\.layers\.(\d+)\.mlp\.up_proj\.", r"layers.\1.feed_forward.w3."),
]


def write_release(model, params, directory, extra_tensors=None):
    """A native directory written the way Mistral releases are, independently of the kit: transformers' names mapped
    back by hand and wq/wk in the interleaved rotary order (the inverse of the converter's `permute_for_rope`)."""
    import re

    directory.mkdir()
    tensors = {}
    for hf_key, tensor in model.state_dict().items():
        native = next(re.sub(p, r, hf_key) for p, r in _HF_TO_NATIVE if re.match(p, hf_key))
        if native.endswith(("wq.weight", "wk.weight")):
            heads = params["n_heads"] if "wq" in native else params["n_kv_heads"]
            rows, cols = tensor.shape
            tensor = tensor.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)
        tensors[native] = tensor.contiguous()
    save_file({**tensors, **(extra_tensors or {})}, directory / NATIVE_SAFETENSORS)
    (directory / "params.json").write_text(json.dumps(params))
    return directory


def upstream(config_dict):
    """transformers' own causal LM of a config dict (the model type's upstream class)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(config_dict)
    config.pop("dtype", None)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type"), **config)).eval()


def load_formats_layer(directory):
    """The model a native directory describes, filled from `NativeCheckpoint.hf_state_dict()` (strictly)."""
    from hf_mistral_kit.formats.native import NativeCheckpoint

    with NativeCheckpoint(directory) as checkpoint:
        model = upstream(checkpoint.config)
        model.load_state_dict({key: tensor.read() for key, tensor in checkpoint.hf_state_dict().items()}, strict=True)
        return model, checkpoint.config


def test_a_ministral3_vision_release_loads_its_text_model_as_transformers_converter_does(tmp_path, caplog):
    """params.json with yarn (apply_scale false), llama_4_scaling and vision_encoder, weights with the vision tower:
    the text model loads as transformers' Ministral3ForCausalLM (logits equal at positions past the llama 4 scaling
    threshold), the vision weights are left out; without `vision_encoder` they are refused."""
    from transformers import Ministral3Config, Ministral3ForCausalLM

    torch.manual_seed(0)
    rope = {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 2.0,
        "original_max_position_embeddings": 8,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": 0.1,
    }
    reference = Ministral3ForCausalLM(Ministral3Config(**TINY_SIZES, rope_parameters=rope)).eval()
    params = {**MINISTRAL3_PARAMS, "max_position_embeddings": 16}
    params["yarn"] = {**params["yarn"], "factor": 2.0, "original_max_position_embeddings": 8}
    params["llama_4_scaling"] = {"original_max_position_embeddings": 8, "beta": 0.1}
    vision = {
        "vision_encoder.patch_conv.weight": torch.ones(32, 3, 4, 4),
        "patch_merger.merging_layer.weight": torch.ones(32, 128),
        "pre_mm_projector_norm.weight": torch.ones(32),
    }
    native = write_release(reference, params, tmp_path / "release", vision)

    model, config = load_formats_layer(native)
    assert config["model_type"] == "ministral3" and config["architectures"] == ["Ministral3ForCausalLM"]
    assert config["rope_parameters"] == {**rope, "rope_theta": 1e6}
    ids = torch.randint(0, 320, (1, 20), generator=torch.Generator().manual_seed(1))  # 20 > 8: llama 4 scaling acts
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
        plain = dict(config, model_type="mistral")
        plain["rope_parameters"] = {k: v for k, v in rope.items() if k != "llama_4_scaling_beta"}
        unscaled = upstream(plain)
        unscaled.load_state_dict(model.state_dict())
        assert not torch.allclose(unscaled(ids).logits, reference(ids).logits)  # the scaling is not a no-op here

    # Converted to Hugging Face's layout, it is the text model, and the conversion says the vision encoder is not in it.
    with caplog.at_level(logging.WARNING, logger="hf_mistral_kit.convert"):
        kit.convert_checkpoint(native, tmp_path / "hf", to="hf")
    assert "gets its text model only, without the vision encoder" in caplog.text
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "ministral3"

    params.pop("vision_encoder")
    (native / "params.json").write_text(json.dumps(params))
    with pytest.raises(NativeCheckpointError, match=r"unknown weight name\(s\) 'patch_merger\.merging_layer\.weight'"):
        load_formats_layer(native)


@pytest.mark.parametrize("kind", ["ministral", "ministral3", "mistral-yarn"])
def test_new_dense_architectures_convert_both_ways_exactly(kind, tmp_path):
    """HF -> native -> HF for Ministral-8B (per-layer windows), Ministral 3 (YaRN + llama 4 scaling) and a Mistral
    with YaRN: params.json spells them as vLLM and llama.cpp read them, and every step keeps the logits."""
    from transformers import AutoModelForCausalLM

    from tiny_configs import MINISTRAL, MINISTRAL3, make_config

    yarn = {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 4.0,
        "original_max_position_embeddings": 8,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    }
    source = {
        "ministral": MINISTRAL,
        "ministral3": {**MINISTRAL3, "rope_parameters": {**yarn, "llama_4_scaling_beta": 0.2}},
        "mistral-yarn": {"model_type": "mistral", **TINY_SIZES, "rope_parameters": yarn},
    }[kind]
    torch.manual_seed(0)
    original = AutoModelForCausalLM.from_config(make_config(source)).eval()
    original.save_pretrained(tmp_path / "hf")
    native = kit.convert_checkpoint(tmp_path / "hf", tmp_path / "native", to="native")
    params = json.loads((native / "params.json").read_text())
    expected = {
        "ministral": {"sliding_window": [4, None]},
        "ministral3": {
            "yarn": {
                "factor": 4.0,
                "original_max_position_embeddings": 8,
                "beta": 32.0,
                "alpha": 1.0,
                "apply_scale": False,
            },
            "llama_4_scaling": {"original_max_position_embeddings": 8, "beta": 0.2},
        },
        "mistral-yarn": {
            "yarn": {
                "factor": 4.0,
                "original_max_position_embeddings": 8,
                "beta": 32.0,
                "alpha": 1.0,
                "apply_scale": False,
            },
        },
    }[kind]
    assert {key: params.get(key) for key in expected} == expected
    assert "llama_4_scaling" not in params or kind == "ministral3"

    loaded, config = load_formats_layer(native)
    assert config["model_type"] == original.config.model_type
    back = AutoModelForCausalLM.from_pretrained(kit.convert_checkpoint(native, tmp_path / "back", to="hf")).eval()
    assert type(back) is type(original)
    ids = torch.randint(0, 320, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = original(ids).logits
        assert torch.equal(loaded(ids).logits, reference)
        assert torch.equal(back(ids).logits, reference)


def native_with(directory, tmp_path, edit):
    """A copy of native `directory` whose params.json `edit(params)` changed."""
    target = broken_copy(directory, tmp_path, "edited")
    params = json.loads((target / "params.json").read_text())
    edit(params)
    (target / "params.json").write_text(json.dumps(params))
    return target


@pytest.fixture(scope="module")
def ministral3_native(tmp_path_factory):
    from transformers import Ministral3Config, Ministral3ForCausalLM

    torch.manual_seed(0)
    model = Ministral3ForCausalLM(Ministral3Config(**TINY_SIZES)).eval()
    return write_release(model, dict(MINISTRAL3_PARAMS), tmp_path_factory.mktemp("m3") / "release")


def _set(path, value):
    def edit(params):
        *parents, last = path.split(".")
        target = params
        for name in parents:
            target = target.setdefault(name, {})
        if value is None:
            target.pop(last)
        else:
            target[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("moe", {"num_experts": 4, "num_experts_per_tok": 2, "num_shared_experts": 1}), r"not Mixtral's"),
        (_set("kv_lora_rank", 8), r"field 'qk_rope_head_dim' must be an integer, got None"),
        (_set("multimodal", {}), r"field\(s\) 'multimodal' are not ones the kit knows"),
        (_set("yarn.apply_scale", True), r"yarn\.apply_scale is True; only false"),
        (_set("yarn.apply_scale", None), r"`yarn` is missing 'apply_scale'"),
        (_set("yarn.beta_fast", 32), r"`yarn` has key\(s\) 'beta_fast' the kit does not know"),
        (_set("yarn.factor", -1.0), r"'yarn\.factor' must be a finite number above 0"),
        (_set("llama_4_scaling.original_max_position_embeddings", 8192), r"same original_max_position_embeddings"),
        (_set("yarn", None), r"llama_4_scaling must come with `yarn`"),
        (_set("rope_theta", None), r"a `yarn` model must give rope_theta"),
        (_set("sliding_window", [4, 8]), r"with a single size"),
        (_set("sliding_window", [4, None]), r"per-layer sliding windows exist only in Ministral-8B-style"),
        (_set("vision_encoder", "pixtral"), r"`vision_encoder` must be an object"),
        (_set("activation", "gelu"), r"activation 'gelu' is not Mistral's silu"),
        (_set("quantization", {"qformat_weight": "fp8_e4m3"}), r"`quantization` checkpoints are not supported"),
    ],
    ids=[
        "shared-experts",
        "kv-lora",
        "unknown-key",
        "apply-scale",
        "no-apply-scale",
        "unknown-yarn-key",
        "yarn-factor",
        "scaling-length",
        "scaling-without-yarn",
        "yarn-theta",
        "two-windows",
        "windows-with-scaling",
        "vision-string",
        "activation",
        "quantization",
    ],
)
def test_params_the_kit_cannot_map_exactly_are_refused_with_the_route(ministral3_native, tmp_path, edit, message):
    load_formats_layer(ministral3_native)  # the unedited release loads
    with pytest.raises(NativeCheckpointError, match=message):
        load_formats_layer(native_with(ministral3_native, tmp_path, edit))


def test_a_per_layer_window_pattern_repeats_over_the_layers_as_vllm_reads_it(tmp_path):
    from hf_mistral_kit.formats.native import config_dict_from_params_dict

    params = {**{k: v for k, v in MINISTRAL3_PARAMS.items() if k not in ("yarn", "llama_4_scaling")}, "n_layers": 6}
    config = config_dict_from_params_dict({**params, "sliding_window": [None, 32, 32]})
    assert config["model_type"] == "ministral" and config["sliding_window"] == 32 and config["head_dim"] == 16
    assert config["layer_types"] == ["full_attention", "sliding_attention", "sliding_attention"] * 2
    with pytest.raises(NativeCheckpointError, match="does not repeat evenly over n_layers"):
        config_dict_from_params_dict({**params, "sliding_window": [None, 32, 32, 32]})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "mistral4", **TINY_SIZES}, r"This mistral4 config has no exact params\.json equivalent"),
        ({"model_type": "mistral_large4"}, r"'mistral_large4' does not convert to Mistral's native layout"),
        ({"model_type": "mistral3"}, r"'mistral3' does not convert"),
        (
            {"model_type": "ministral3", **TINY_SIZES, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
            "only with YaRN and llama_4_scaling_beta",
        ),
        (
            {
                "model_type": "mistral",
                **TINY_SIZES,
                "rope_parameters": {
                    "rope_type": "yarn",
                    "rope_theta": 1e6,
                    "factor": 4.0,
                    "original_max_position_embeddings": 8,
                },
            },
            "no exact params.json equivalent",  # no mscale: transformers corrects the attention magnitude
        ),
        (
            {
                "model_type": "mistral",
                **TINY_SIZES,
                "rope_parameters": {"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0},
            },
            "only default RoPE and YaRN convert",
        ),
    ],
    ids=["mistral4-default-rope", "mistral_large4", "mistral3", "ministral3-default-rope", "yarn-magnitude", "linear"],
)
def test_configs_without_a_params_json_spelling_are_refused(config, message):
    from hf_mistral_kit.formats.hyperparameters import params_from_config

    with pytest.raises(NativeCheckpointError, match=message):
        params_from_config(config, NativeCheckpointError)


# Mistral Small 4's native names, as transformers' convert_mistral4_weight_to_hf.py renames them (written out here, in
# the other direction), and its experts one w1/w2/w3 per expert.
_MISTRAL4_HF_TO_NATIVE = [
    (r"^model\.embed_tokens\.", "tok_embeddings."),
    (r"^model\.norm\.", "norm."),
    (r"^lm_head\.", "output."),
    (r"\.input_layernorm\.", ".attention_norm."),
    (r"\.post_attention_layernorm\.", ".ffn_norm."),
    (r"\.self_attn\.kv_a_proj_with_mqa\.", ".attention.wkv_a_with_mqa."),
    (r"\.self_attn\.kv_b_proj\.", ".attention.wkv_b."),
    (r"\.self_attn\.q_a_proj\.", ".attention.wq_a."),
    (r"\.self_attn\.q_b_proj\.", ".attention.wq_b."),
    (r"\.self_attn\.o_proj\.", ".attention.wo."),
    (r"\.self_attn\.q_a_layernorm\.", ".attention.q_a_norm."),
    (r"\.self_attn\.kv_a_layernorm\.", ".attention.kv_a_norm."),
    (r"\.mlp\.gate\.weight", ".gate.weight"),
    (r"\.mlp\.shared_experts\.gate_proj\.", ".shared_experts.w1."),
    (r"\.mlp\.shared_experts\.down_proj\.", ".shared_experts.w2."),
    (r"\.mlp\.shared_experts\.up_proj\.", ".shared_experts.w3."),
    (r"\.mlp\.gate_proj\.", ".feed_forward.w1."),
    (r"\.mlp\.down_proj\.", ".feed_forward.w2."),
    (r"\.mlp\.up_proj\.", ".feed_forward.w3."),
    (r"^model\.layers\.", "layers."),
]


def mistral4_params(config):
    return {
        "dim": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "head_dim": config.qk_nope_head_dim + config.qk_rope_head_dim,
        "hidden_dim": config.intermediate_size,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads,
        "norm_eps": config.rms_norm_eps,
        "vocab_size": config.vocab_size,
        "rope_theta": 10000.0,
        "max_position_embeddings": 1048576,
        "q_lora_rank": config.q_lora_rank,
        "kv_lora_rank": config.kv_lora_rank,
        "qk_rope_head_dim": config.qk_rope_head_dim,
        "qk_nope_head_dim": config.qk_nope_head_dim,
        "v_head_dim": config.v_head_dim,
        "moe": {
            "num_experts": config.n_routed_experts,
            "num_experts_per_tok": config.num_experts_per_tok,
            "expert_hidden_dim": config.moe_intermediate_size,
            "first_k_dense_replace": config.first_k_dense_replace,
            "num_shared_experts": 1,
            "routed_scale": 1.0,
            "route_every_n": 1,
            "use_load_balancing_bias": False,
        },
        "yarn": {
            "factor": 128.0,
            "original_max_position_embeddings": 8192,
            "beta": 32.0,
            "alpha": 1.0,
            "apply_scale": False,
        },
        "llama_4_scaling": {"original_max_position_embeddings": 8192, "beta": 0.1},
    }


@pytest.fixture(scope="module")
def mistral4_release(tmp_path_factory):
    """(transformers' Mistral4ForCausalLM as it loads its Hugging Face checkpoint, a native release of it written as
    Mistral's converter reads one)."""
    import re

    from transformers.models.mistral4.modeling_mistral4 import Mistral4ForCausalLM

    from tiny_configs import MISTRAL4, make_config

    torch.manual_seed(0)
    model = Mistral4ForCausalLM(make_config(MISTRAL4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.2)  # large enough for the router to pick different experts per token
    root = tmp_path_factory.mktemp("mistral4")
    model.save_pretrained(root / "hf")
    reference = Mistral4ForCausalLM.from_pretrained(root / "hf").eval()
    tensors = {}
    for key, tensor in model.state_dict().items():
        fused = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", key)
        if fused:
            layer, kind = fused.groups()
            for expert, weights in enumerate(tensor):
                if kind == "down_proj":
                    tensors[f"layers.{layer}.experts.{expert}.w2.weight"] = weights.clone()
                else:
                    gate, up = weights.chunk(2)
                    tensors[f"layers.{layer}.experts.{expert}.w1.weight"] = gate.clone()
                    tensors[f"layers.{layer}.experts.{expert}.w3.weight"] = up.clone()
            continue
        for pattern, replacement in _MISTRAL4_HF_TO_NATIVE:
            key = re.sub(pattern, replacement, key)
        tensors[key] = tensor.contiguous()
    native = root / "native"
    native.mkdir()
    save_file(tensors, native / NATIVE_SAFETENSORS)
    (native / "params.json").write_text(json.dumps(mistral4_params(model.config)))
    return reference, native, root / "hf"


def fused_mistral4(checkpoint):
    """transformers' Mistral 4 from a checkpoint's per-expert state dict, its experts fused as transformers 5.x
    holds them (the fusing written out here, not the kit's)."""
    from transformers import AutoConfig
    from transformers.models.mistral4.modeling_mistral4 import Mistral4ForCausalLM

    state = {key: tensor.read() for key, tensor in checkpoint.hf_state_dict().items()}
    experts = checkpoint.config["n_routed_experts"]
    for layer in {int(key.split(".")[2]) for key in state if ".mlp.experts." in key}:
        base = f"model.layers.{layer}.mlp.experts"
        take = [[state.pop(f"{base}.{e}.{w}.weight") for e in range(experts)] for w in ("w1", "w3", "w2")]
        state[f"{base}.gate_up_proj"] = torch.stack([torch.cat(pair) for pair in zip(take[0], take[1], strict=True)])
        state[f"{base}.down_proj"] = torch.stack(take[2])
    config = dict(checkpoint.config)
    config = AutoConfig.for_model(config.pop("model_type"), **config)
    return Mistral4ForCausalLM.from_pretrained(None, config=config, state_dict=state).eval()


def test_a_mistral4_release_loads_as_transformers_converter_reads_it(mistral4_release):
    """Mistral Small 4's native layout (latent attention with a query LoRA, a dense layer, routed and shared
    experts, YaRN with a partial rotary slice and llama 4 scaling): the weights under the kit's per-expert names, and
    the config, give transformers' model of the Hugging Face checkpoint exactly."""
    from hf_mistral_kit.formats.native import NativeCheckpoint

    reference, native, _ = mistral4_release
    with NativeCheckpoint(native) as checkpoint:
        config = checkpoint.config
        assert config["model_type"] == "mistral4" and config["architectures"] == ["Mistral4ForCausalLM"]
        assert "model.layers.1.mlp.experts.7.w3.weight" in checkpoint.hf_tensors
        for key in ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "n_routed_experts", "first_k_dense_replace"):
            assert config[key] == getattr(reference.config, key), key
        assert config["rope_parameters"]["partial_rotary_factor"] == 0.5
        model = fused_mistral4(checkpoint)
    ids = torch.randint(0, 320, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # equal state dicts and configs; the fused experts' kernel may round differently (~1e-7)
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-6, rtol=0)


def test_mistral4_converts_to_native_and_back_bit_for_bit(mistral4_release, tmp_path):
    reference, native, hf = mistral4_release
    exported = kit.convert_checkpoint(hf, tmp_path / "native", to="native")
    expected = mistral4_params(reference.config)
    fixed = {"route_every_n", "use_load_balancing_bias"}  # not written: transformers' Mistral 4 has one value of each
    expected["moe"] = {key: value for key, value in expected["moe"].items() if key not in fixed}
    expected["moe"] |= {"num_expert_groups": 1, "num_expert_groups_per_tok": 1}
    assert json.loads((exported / "params.json").read_text()) == {**expected, "max_seq_len": 1048576}
    assert load_file(exported / NATIVE_SAFETENSORS).keys() == load_file(native / NATIVE_SAFETENSORS).keys()
    back = kit.convert_checkpoint(exported, tmp_path / "back", to="hf")
    original, round_tripped = load_file(hf / "model.safetensors"), load_file(back / "model.safetensors")
    assert original.keys() == round_tripped.keys()
    for key, tensor in original.items():
        assert torch.equal(tensor, round_tripped[key]), key


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("moe.route_every_n", 2), r"moe\.route_every_n is 2; transformers' Mistral 4 has 1 only"),
        (_set("moe.use_load_balancing_bias", True), r"use_load_balancing_bias is True"),
        (_set("moe.expert_hidden_dim", None), r"`moe` is missing 'expert_hidden_dim'"),
        (_set("moe.num_expert_groups", 3), r"must divide moe\.num_experts \(8\)"),
        (_set("moe.score_function", "sigmoid"), r"'score_function' are not Mistral 4's"),
        (_set("llama_4_scaling", None), r"comes with `yarn` and `llama_4_scaling`"),
        (_set("qk_rope_head_dim", 15), r"'qk_rope_head_dim' must be even"),
        (_set("index_topk", 4), r"'index_topk' are not ones the kit knows"),
        (_set("moe", None), r"latent attention without `moe`"),
    ],
    ids=["route-every-n", "bias", "expert-dim", "groups", "scoring", "no-scaling", "odd-rope", "indexer", "dense"],
)
def test_mistral4_params_the_kit_cannot_map_exactly_are_refused(mistral4_release, tmp_path, edit, message):
    with pytest.raises(NativeCheckpointError, match=message):
        load_formats_layer(native_with(mistral4_release[1], tmp_path, edit))


@pytest.mark.parametrize("kind", ["ministral", "ministral3"])
def test_kit_auto_classes_load_new_native_checkpoints_like_transformers_loads_the_hf_ones(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    source = kit.tiny_model(kind, tmp_path / "hf", tokenizer="v3")
    native = kit.convert_checkpoint(source, tmp_path / "native", to="native")
    model = load(native)
    assert model.config.model_type == f"hf_mistral_kit_{kind}"
    reference = AutoModelForCausalLM.from_pretrained(source).eval()
    ids = torch.randint(0, 32768, (1, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    model, tokenizer = kit.load_model(native, preset="cpu")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Bonjour"}])  # the native tokenizer came along
