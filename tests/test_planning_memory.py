"""Memory plans: parameter counts, bitsandbytes storage, KV cache, offloading and verdicts, against hand counts,
transformers' meta-device instantiation and bitsandbytes' own layouts; also for Mistral-Nemo, Mistral-Small 3 and
Mistral-Large 2411 (configs and params.json)."""

import json

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM

from hf_mistral_kit import Hardware, MemoryPlan, plan_memory
from hf_mistral_kit.planning.memory import ModelShape, linear_bytes
from reference_configs import (
    MISTRAL_7B,
    MISTRAL_LARGE_2411,
    MISTRAL_NEMO,
    MISTRAL_NEMO_PARAMS,
    MISTRAL_SMALL_24B,
    MIXTRAL_8X7B,
    MIXTRAL_8X7B_PARAMS,
)

GiB = 2**30

# Mistral-7B by hand: q/o 4096x4096, k/v 1024x4096 (8 kv heads x 128), MLP 3 x 4096x14336, two norms per layer;
# embeddings and lm_head 32000x4096 each, one final norm.
MISTRAL_7B_LINEAR_PER_LAYER = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336  # 218,103,808
MISTRAL_7B_UNQUANTIZED = 2 * 32000 * 4096 + 4096 + 32 * 2 * 4096  # 262,410,240


def test_mistral_7b_parameter_count_and_bf16_weights():
    plan = plan_memory(MISTRAL_7B, "bf16", context_length=4096)
    assert plan.parameters == 7_241_732_096 == 32 * MISTRAL_7B_LINEAR_PER_LAYER + MISTRAL_7B_UNQUANTIZED
    assert plan.weights_bytes == 14_483_464_192  # "14.48 GB"
    assert f"{plan.weights_bytes / 1e9:.2f}" == "14.48"


def test_mixtral_8x7b_parameter_count():
    experts = 8 * 3 * 4096 * 14336
    attention = 2 * 4096 * 4096 + 2 * 1024 * 4096
    router_and_norms = 8 * 4096 + 2 * 4096
    expected = 32 * (attention + experts + router_and_norms) + 2 * 32000 * 4096 + 4096
    plan = plan_memory(MIXTRAL_8X7B, "bf16", context_length=4096)
    assert plan.parameters == expected == 46_702_792_704  # "46.7B"
    assert plan.weights_bytes == 2 * expected


@pytest.mark.parametrize("config, model_class", [(MISTRAL_7B, MistralForCausalLM), (MIXTRAL_8X7B, MixtralForCausalLM)])
def test_closed_form_count_matches_transformers_modules(config, model_class):
    config_class = MistralConfig if model_class is MistralForCausalLM else MixtralConfig
    with torch.device("meta"):
        model = model_class(config_class(**{k: v for k, v in config.items() if not k.startswith("_")}))
    assert ModelShape.from_config(config).parameter_count() == sum(p.numel() for p in model.parameters())


def test_kv_cache_is_128_kib_per_token_and_capped_by_the_sliding_window():
    shape = ModelShape.from_config(MISTRAL_7B)
    assert shape.kv_bytes_per_token(2) == 32 * 8 * 128 * 2 * 2 == 128 * 1024
    assert plan_memory(MISTRAL_7B, "bf16", context_length=2048).kv_cache_bytes == 2048 * 128 * 1024
    # Mistral-7B-v0.1 attends to 4096 tokens at most: a 32k context caches only the window.
    assert plan_memory(MISTRAL_7B, "bf16", context_length=32768).kv_cache_bytes == 4096 * 128 * 1024
    assert plan_memory(MISTRAL_7B, "bf16", context_length=32768, batch_size=4).kv_cache_bytes == 4 * 4096 * 128 * 1024
    # Mixtral has no sliding window: the cache grows with the context.
    assert plan_memory(MIXTRAL_8X7B, "bf16", context_length=32768).kv_cache_bytes == 32768 * 128 * 1024
    assert plan_memory(MISTRAL_7B, "cpu", context_length=1000).kv_cache_bytes == 1000 * 256 * 1024  # float32


def test_nf4_double_quant_weights_of_mistral_7b():
    n = 32 * MISTRAL_7B_LINEAR_PER_LAYER  # every matrix is a whole number of 64-blocks and of 256-block groups
    tables = 32 * 7 * (16 * 4 + 256 * 4 + 4)  # per matrix: NF4 code table, absmax code table and offset
    expected = n // 2 + n // 64 + n // 64 // 256 * 4 + tables + 2 * MISTRAL_7B_UNQUANTIZED
    assert expected == 4_125_481_856
    assert plan_memory(MISTRAL_7B, "4bit", context_length=4096).weights_bytes == expected


def test_nf4_without_double_quant_and_int8_weights_of_mistral_7b():
    shape = ModelShape.from_config(MISTRAL_7B)
    n = 32 * MISTRAL_7B_LINEAR_PER_LAYER
    assert 32 * shape.layer_bytes("nf4", False, 2) == n // 2 + n // 64 * 4 + 32 * 7 * 16 * 4 + 32 * 2 * 4096 * 2
    rows_per_layer = 4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096  # one float32 scale per output row
    int8 = plan_memory(MISTRAL_7B, "8bit", context_length=4096).weights_bytes
    assert int8 == n + 32 * rows_per_layer * 4 + 2 * MISTRAL_7B_UNQUANTIZED


@pytest.mark.parametrize("shape", [(1024, 4096), (64, 64), (100, 37)])
@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_bytes_equal_what_bitsandbytes_stores(shape, double_quant):
    weight = torch.randn(shape)
    packed, state = bnbf.quantize_4bit(weight, quant_type="nf4", compress_statistics=double_quant)
    tensors = [packed, state.absmax, state.code]
    if state.nested:  # the absmax is itself quantized: its scales, code table and offset
        tensors += [state.state2.absmax, state.state2.code, state.offset]
    stored = sum(t.numel() * t.element_size() for t in tensors)
    assert linear_bytes(*shape, "nf4", double_quant, 2) == stored


def test_int8_bytes_equal_what_bitsandbytes_stores():
    layer = bnb.nn.Linear8bitLt(4096, 1024, bias=False, has_fp16_weights=False)
    layer.weight = bnb.nn.Int8Params(torch.randn(1024, 4096), requires_grad=False, has_fp16_weights=False)
    layer = layer.to("cpu")
    stored = layer.weight.numel() * layer.weight.element_size() + layer.weight.SCB.numel() * 4
    assert linear_bytes(1024, 4096, "int8", False, 2) == stored


def test_quantized_mixtral_keeps_embeddings_lm_head_norms_and_router_unquantized():
    shape = ModelShape.from_config(MIXTRAL_8X7B)
    plan = plan_memory(MIXTRAL_8X7B, "4bit", context_length=4096)
    unquantized = 2 * 32000 * 4096 + 4096 + 32 * (8 * 4096 + 2 * 4096)
    quantized = plan.weights_bytes - 2 * unquantized
    linear = shape.parameter_count() - unquantized
    assert linear / 2 < quantized < linear * 0.52  # ~0.516 bytes per weight with double quant
    assert plan.weights_bytes / GiB == pytest.approx(22.80, abs=0.01)


def test_params_json_checkpoint_plans_like_config_json(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(MIXTRAL_8X7B_PARAMS))
    native = plan_memory(tmp_path, "4bit", context_length=4096)
    hf = plan_memory(MIXTRAL_8X7B, "4bit", context_length=4096)
    assert native.parameters == hf.parameters and native.weights_bytes == hf.weights_bytes
    assert native.kv_cache_bytes == hf.kv_cache_bytes
    (tmp_path / "config.json").write_text(json.dumps(MISTRAL_7B))  # config.json wins when both exist
    assert plan_memory(tmp_path, "bf16", context_length=16).parameters == 7_241_732_096


def test_plan_from_a_pretrained_config_object():
    config = MistralConfig(**{k: v for k, v in MISTRAL_7B.items() if not k.startswith("_")})
    assert plan_memory(config, "bf16", context_length=4096).weights_bytes == 14_483_464_192


def test_fits_needs_hardware():
    plan = plan_memory(MISTRAL_7B, "bf16", context_length=4096)
    assert plan.fits is None and plan.available_bytes is None
    assert plan_memory(MISTRAL_7B, "bf16", context_length=4096, hardware=Hardware.profile("a100-40gb")).fits is True
    assert plan_memory(MIXTRAL_8X7B, "bf16", context_length=4096, hardware=Hardware.profile("h100")).fits is False


def test_fits_counts_the_kv_cache():
    t4 = Hardware.profile("t4")
    short = plan_memory(MISTRAL_7B, "fp16", context_length=512, hardware=t4)
    long = plan_memory(MISTRAL_7B, "fp16", context_length=4096, batch_size=4, hardware=t4)
    assert short.weights_bytes == long.weights_bytes
    assert short.fits is True and long.fits is False
    assert short.total_bytes == (
        short.weights_bytes + short.kv_cache_bytes + short.activation_bytes + short.overhead_bytes
    )


def test_plan_with_hardware_resolves_the_preset():
    plan = plan_memory(MISTRAL_7B, "4bit", context_length=1024, hardware=Hardware.profile("t4"))
    assert plan.weight_format == "NF4 + double quant, float16 compute"
    cpu_plan = plan_memory(MISTRAL_7B, "cpu", context_length=1024, hardware=Hardware.profile("cpu"))
    assert cpu_plan.weights_bytes == 4 * 7_241_732_096 and cpu_plan.on_cpu
    auto = plan_memory(MIXTRAL_8X7B, "auto", context_length=4096, hardware=Hardware.profile("a100-80gb"))
    assert auto.preset == "auto -> 4bit" and auto.fits


def test_auto_without_hardware_and_unknown_presets_raise():
    with pytest.raises(ValueError, match="preset 'auto' depends on the hardware: pass hardware="):
        plan_memory(MISTRAL_7B, "auto", context_length=4096)
    with pytest.raises(ValueError, match="unknown preset 'int4'; choose one of fp16, bf16, 8bit, 4bit"):
        plan_memory(MISTRAL_7B, "int4", context_length=4096)


def test_checkpoint_dir_without_config_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="has neither config.json nor params.json"):
        plan_memory(tmp_path, "bf16", context_length=1)


def test_offload_plan_keeps_what_fits_on_the_gpu():
    plan = plan_memory(MIXTRAL_8X7B, "auto", context_length=4096, hardware=Hardware.profile("rtx4090"))
    assert isinstance(plan, MemoryPlan) and plan.fits
    assert plan.offloaded_layers == 2
    assert plan.device_bytes <= Hardware.profile("rtx4090").free_memory < plan.total_bytes
    # offloaded layers stay unquantized (bf16) in CPU RAM
    assert plan.offloaded_bytes == 2 * ModelShape.from_config(MIXTRAL_8X7B).layer_bytes(None, False, 2)


def test_table_rendering():
    text = str(plan_memory(MISTRAL_7B, "bf16", context_length=4096, hardware=Hardware.profile("a100-80gb")))
    lines = text.splitlines()
    assert lines[0] == ("mistralai/Mistral-7B-v0.1: 7.24B parameters, preset 'bf16' (bfloat16), 4096 tokens x batch 1")
    assert any(line.split()[:3] == ["weights", "14.48", "13.49"] for line in lines)
    assert any(line.split()[:4] == ["KV", "cache", "0.54", "0.50"] for line in lines)
    assert lines[-1].split()[:3] == ["fits", "yes", "on"]


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
