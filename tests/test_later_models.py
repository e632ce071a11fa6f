"""Mistral-Nemo, Mistral-Small 3, Mistral-Large 2411 and the Magistral-style native layout: memory plans from their
configs and params.json, and native checkpoints with their fields (head_dim other than dim / heads, a large
rope_theta, max_seq_len, tekken.json) loading as the converted Hugging Face checkpoint does."""

import json

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

import hf_mistral_kit as kit
from hf_mistral_kit import plan_memory
from hf_mistral_kit.planning.memory import ModelShape
from reference_configs import MISTRAL_LARGE_2411, MISTRAL_NEMO, MISTRAL_NEMO_PARAMS, MISTRAL_SMALL_24B


def _per_layer(hidden, intermediate, heads, kv_heads, head_dim):
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    return attention + 3 * hidden * intermediate + 2 * hidden


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (MISTRAL_NEMO, 40 * _per_layer(5120, 14336, 32, 8, 128) + 2 * 131072 * 5120 + 5120),
        (MISTRAL_SMALL_24B, 40 * _per_layer(5120, 32768, 32, 8, 128) + 2 * 131072 * 5120 + 5120),
        (MISTRAL_LARGE_2411, 88 * _per_layer(12288, 28672, 96, 8, 128) + 2 * 32768 * 12288 + 12288),
    ],
    ids=["nemo", "small-24b", "large-2411"],
)
def test_parameter_counts_follow_head_dim_and_match_transformers(config, expected):
    assert plan_memory(config, "bf16", context_length=4096).parameters == expected
    with torch.device("meta"):
        model = MistralForCausalLM(MistralConfig(**{k: v for k, v in config.items() if not k.startswith("_")}))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_published_sizes_and_kv_cache():
    assert plan_memory(MISTRAL_NEMO, "bf16", context_length=4096).parameters == 12_247_782_400  # "12.2B"
    assert plan_memory(MISTRAL_SMALL_24B, "bf16", context_length=4096).parameters == 23_572_403_200  # "23.6B"
    # 40 layers x 8 kv heads x head_dim 128 (not 5120 / 32 = 160) x K and V x 2 bytes: 160 KiB per token.
    assert ModelShape.from_config(MISTRAL_NEMO).kv_bytes_per_token(2) == 40 * 8 * 128 * 2 * 2 == 160 * 1024
    # No sliding window: the cache grows with the context.
    assert plan_memory(MISTRAL_NEMO, "bf16", context_length=65536).kv_cache_bytes == 65536 * 160 * 1024


def test_nemo_params_json_plans_like_its_config_json(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(MISTRAL_NEMO_PARAMS))
    native = plan_memory(tmp_path, "4bit", context_length=8192)
    hf = plan_memory(MISTRAL_NEMO, "4bit", context_length=8192)
    assert (native.parameters, native.weights_bytes, native.kv_cache_bytes) == (
        hf.parameters,
        hf.weights_bytes,
        hf.kv_cache_bytes,
    )


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
