"""Memory plans: parameter counts, bitsandbytes storage, KV cache, offloading and verdicts, against hand counts,
transformers' meta-device instantiation and bitsandbytes' own layouts; also for Mistral-Nemo, Mistral-Small 3 and
Mistral-Large 2411 (configs and params.json), and for the 2024-26 architectures (ministral, ministral3, mistral3,
mistral4, mistral_large4): their default configs and published releases against meta-device models, and their KV
caches against the caches transformers really fills on tiny models (in whichever transformers is installed)."""

import json
import re

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import pytest
import torch
import transformers
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM

from hf_mistral_kit import Hardware, MemoryPlan, plan_memory
from hf_mistral_kit.formats.hyperparameters import check_config
from hf_mistral_kit.planning.memory import ModelShape, linear_bytes
from reference_configs import (
    MINISTRAL_3_8B,
    MINISTRAL_8B_2410,
    MISTRAL_7B,
    MISTRAL_LARGE_4,
    MISTRAL_LARGE_2411,
    MISTRAL_NEMO,
    MISTRAL_NEMO_PARAMS,
    MISTRAL_SMALL_3_2,
    MISTRAL_SMALL_4,
    MISTRAL_SMALL_24B,
    MIXTRAL_8X7B,
    MIXTRAL_8X7B_PARAMS,
)
from tiny_configs import (
    MISTRAL3_MINISTRAL3,
    MISTRAL3_MISTRAL4,
    MISTRAL_LARGE4,
    MISTRAL_LARGE4_TEXT,
    NEW_ARCHITECTURES,
    available,
    make_config,
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


# --- the 2024-26 architectures --------------------------------------------------------------------------------------

WRAPPERS = ("mistral3", "mistral_large4")


def _needs(model_type):
    if not available(model_type):
        pytest.skip(f"transformers {transformers.__version__} has no {model_type} (it arrived after 5.10)")


def _upstream_model(config):
    """The upstream transformers model of a config (on the current default device)."""
    if config.model_type == "mistral4":  # not in transformers' AutoModelForCausalLM mapping
        return transformers.Mistral4ForCausalLM(config)
    if config.model_type in WRAPPERS:
        return transformers.AutoModelForImageTextToText.from_config(config)
    return transformers.AutoModelForCausalLM.from_config(config)


def _meta_counts(config_dict):
    """(text model with its head, whole model) parameters of a meta-device model. A wrapper is built with its head
    untied: what `from_pretrained` keeps for a checkpoint holding one (mistral3's own `tie_word_embeddings` default
    is True, while its text models and checkpoints are untied)."""
    config = dict(config_dict)
    if config["model_type"] in WRAPPERS:
        config["tie_word_embeddings"] = False
    with torch.device("meta"):
        model = _upstream_model(make_config({k: v for k, v in config.items() if not k.startswith("_")}))
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n)
    return total - vision, total


# Transformers' default config of each architecture (ministral's leaves head_dim unset: hidden / heads, 128).
DEFAULTS = {
    "ministral": {"model_type": "ministral"},
    "ministral3": {"model_type": "ministral3"},
    "mistral4": {"model_type": "mistral4"},
    "mistral3": {"model_type": "mistral3"},
    "mistral3+ministral3": {"model_type": "mistral3", "text_config": {"model_type": "ministral3"}},
    "mistral3+mistral4": {"model_type": "mistral3", "text_config": {"model_type": "mistral4"}},
    "mistral_large4": {"model_type": "mistral_large4"},
}


@pytest.mark.parametrize("name", DEFAULTS)
def test_default_configs_count_exactly_what_transformers_builds(name):
    config = DEFAULTS[name]
    _needs(config["model_type"])
    text, whole = _meta_counts({**config, "head_dim": 128} if name == "ministral" else config)
    assert plan_memory(config, "bf16", context_length=16).parameters == text
    if config["model_type"] in WRAPPERS:
        assert ModelShape.from_config(config, vision=True).parameter_count() == whole


RELEASES = {
    "ministral-8b-2410": (MINISTRAL_8B_2410, "8.02B", "8.02B"),
    "mistral-small-3.2": (MISTRAL_SMALL_3_2, "23.57B", "24.01B"),
    "ministral-3-8b": (MINISTRAL_3_8B, "8.49B", "8.92B"),
    "mistral-small-4": (MISTRAL_SMALL_4, "118.97B", "119.40B"),
    "mistral-large-4": (MISTRAL_LARGE_4, "1050.12B", "1051.82B"),
}


@pytest.mark.parametrize("name", RELEASES)
def test_published_configs_count_exactly_what_transformers_builds(name):
    config, text_size, whole_size = RELEASES[name]
    _needs(config["model_type"])
    text, whole = _meta_counts(config)
    plan = plan_memory(config, "bf16", context_length=4096)
    assert plan.parameters == text
    assert plan.model.endswith("(text model)") == (config["model_type"] in WRAPPERS)
    assert f"{text / 1e9:.2f}B" == text_size and f"{whole / 1e9:.2f}B" == whole_size
    if config["model_type"] in WRAPPERS:
        vision = plan_memory(config, "bf16", context_length=4096, vision=True)
        assert vision.parameters == whole
        assert vision.weights_bytes == plan.weights_bytes + 2 * (whole - text)  # the tower is never quantized
        assert plan_memory(config, "4bit", context_length=4096, vision=True).weights_bytes - plan_memory(
            config, "4bit", context_length=4096
        ).weights_bytes == 2 * (whole - text)


def test_a_wrapper_ties_its_head_as_its_text_config_says():
    """mistral3's own `tie_word_embeddings` (True by default since transformers 5.x) is not what a checkpoint loads:
    the text config's flag is."""
    untied = plan_memory(MISTRAL_SMALL_3_2, "bf16", context_length=16).parameters
    assert (
        plan_memory({**MISTRAL_SMALL_3_2, "tie_word_embeddings": True}, "bf16", context_length=16).parameters == untied
    )
    tied_text = {**MISTRAL_SMALL_3_2, "text_config": {**MISTRAL_SMALL_3_2["text_config"], "tie_word_embeddings": True}}
    assert plan_memory(tied_text, "bf16", context_length=16).parameters == untied - 131072 * 5120


def _cache_bytes(model, tokens, dtype):
    """Bytes of every tensor of the cache transformers fills in a forward pass over `tokens` tokens."""
    with torch.no_grad():
        output = model(torch.arange(1, tokens + 1)[None], use_cache=True)
    total = 0
    for layer in output.past_key_values.layers:
        for name in ("keys", "values", "indexer_keys"):  # indexer_keys: the Large line's attention indexer
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                assert tensor.dtype == dtype
                total += tensor.numel() * tensor.element_size()
    return total


LARGE4_SHARING = {  # a NoPE layer; a layer reusing KV with its own indexer; a layer reusing both (a 4-layer model)
    **MISTRAL_LARGE4,
    "text_config": {
        **MISTRAL_LARGE4_TEXT,
        "num_hidden_layers": 4,
        "no_rope_layers": [1, 1, 0, 0],
        "kv_source_layers": [0, 0, 2, 2],
        "indexer_types": ["full", "full", "full", "shared"],
        "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"],
    },
}
CACHES = {
    **NEW_ARCHITECTURES,  # ministral: a sliding layer (window 4) and a full one; mistral_large4: layer 1 is NoPE
    "ministral3-sliding": {**NEW_ARCHITECTURES["ministral3"], "sliding_window": 4},
    "mistral3+ministral3": MISTRAL3_MINISTRAL3,
    "mistral3+mistral4": MISTRAL3_MISTRAL4,
    "mistral4-q-proj": {**NEW_ARCHITECTURES["mistral4"], "q_lora_rank": None},
    "mistral_large4-sharing": LARGE4_SHARING,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", CACHES)
def test_kv_cache_bytes_are_what_transformers_allocates(name, dtype):
    """The planned cache equals the cache of a real tiny model after a prompt shorter than the sliding window and
    after one longer than it (vision wrappers: a text-only prompt), in the installed transformers (5.10 caches Mistral
    4's expanded keys and values, 5.2x its latent)."""
    raw = CACHES[name]
    _needs(raw["model_type"])
    config = make_config(raw)
    torch.manual_seed(0)
    model = _upstream_model(config).to(dtype)
    shape = ModelShape.from_config(config)
    for tokens in (3, 11):
        measured = _cache_bytes(model, tokens, dtype)
        assert shape.kv_cache_bytes(tokens, 1, dtype.itemsize) == pytest.approx(measured, rel=0.02)
    if name in ("ministral", "ministral3-sliding"):  # the window caps the sliding layers at window - 1 tokens
        assert shape.kv_cache_bytes(11, 1, 4) < 11 * shape.kv_bytes_per_token(4)


def test_kv_bytes_per_token_of_the_published_configs():
    """Per token, bf16: grouped-query layers 2 x 8 kv heads x 128 x 2 bytes; Mistral Small 4 its latent (256) and
    rotary key (64) in transformers 5.2x, its expanded keys (32 heads x 128) and values (32 x 128) in 5.10; the Large
    line its latent (512), rotary key (64, none in the 18 NoPE layers) and indexer keys (128)."""
    from hf_mistral_kit.planning.memory import mistral4_caches_latent

    assert ModelShape.from_config(MINISTRAL_8B_2410).kv_bytes_per_token(2) == 36 * 4096
    assert ModelShape.from_config(MISTRAL_SMALL_3_2).kv_bytes_per_token(2) == 40 * 4096
    small4 = 36 * (256 + 64) * 2 if mistral4_caches_latent() else 36 * 32 * (128 + 128) * 2
    assert ModelShape.from_config(MISTRAL_SMALL_4).kv_bytes_per_token(2) == small4
    assert ModelShape.from_config(MISTRAL_LARGE_4).kv_bytes_per_token(2) == (54 * 576 + 18 * 512 + 72 * 128) * 2


def test_interleaved_sliding_window_layers_keep_the_window_only():
    """Ministral-8B's full layers cache the whole context, its sliding ones their window less one token."""
    plan = plan_memory(MINISTRAL_8B_2410, "bf16", context_length=65536)
    assert plan.kv_cache_bytes == (9 * 65536 + 27 * 32767) * 4096
    assert plan_memory(MINISTRAL_8B_2410, "bf16", context_length=1000).kv_cache_bytes == 36 * 1000 * 4096


def test_mistral_small_4_quantizes_attention_and_every_expert_but_not_its_routers():
    """By hand: per layer the MLA projections, 128 routed experts and the shared expert are quantized (the kit builds
    the routed experts as linear layers); the norms (q_a 1024, kv_a 256, two of 4096) and the router stay bf16."""
    linears = [(1024, 4096), (4096, 1024), (320, 4096), (6144, 256), (4096, 4096)]
    linears += 129 * [(2048, 4096), (4096, 2048), (2048, 4096)]
    kept = 1024 + 256 + 2 * 4096 + 128 * 4096
    model = 2 * 131072 * 4096 + 4096
    for preset, quantization in (("4bit", "nf4"), ("8bit", "int8"), ("bf16", None)):
        layer = sum(linear_bytes(out, inp, quantization, quantization == "nf4", 2) for out, inp in linears)
        plan = plan_memory(MISTRAL_SMALL_4, preset, context_length=4096)
        assert plan.weights_bytes == 2 * model + 36 * (layer + 2 * kept)
    four_bit = plan_memory(MISTRAL_SMALL_4, "4bit", context_length=4096).weights_bytes
    assert four_bit / plan_memory(MISTRAL_SMALL_4, "bf16", context_length=4096).weights_bytes < 0.3


def test_the_large_line_keeps_its_routers_and_rotary_alpha_in_float32():
    routers = 71 * 128 * 6144 + 32  # 71 MoE layers; alpha: one per rotary frequency (64 / 2)
    plan = plan_memory(MISTRAL_LARGE_4, "bf16", context_length=16)
    assert plan.weights_bytes == 2 * plan.parameters + 2 * routers


def test_verdicts_per_gpu_profile_for_the_new_architectures():
    h100, a100 = Hardware.profile("h100"), Hardware.profile("a100-80gb")
    assert plan_memory(MISTRAL_SMALL_4, "bf16", context_length=4096, hardware=h100).fits is False
    assert plan_memory(MISTRAL_SMALL_4, "4bit", context_length=4096, hardware=h100).fits is True
    assert plan_memory(MISTRAL_SMALL_4, "auto", context_length=4096, hardware=a100).preset == "auto -> 4bit"
    assert plan_memory(MISTRAL_SMALL_3_2, "bf16", context_length=4096, hardware=a100).fits is True
    assert (
        plan_memory(MISTRAL_SMALL_3_2, "bf16", context_length=4096, hardware=Hardware.profile("rtx4090")).fits is False
    )
    assert plan_memory(MISTRAL_LARGE_4, "4bit", context_length=4096, hardware=h100).fits is False


def test_offloading_a_model_whose_layers_differ():
    """The Large line's dense first layer, NoPE layers and MoE layers differ in size: the GPU keeps the first layers
    that fit, and what is offloaded is their sum."""
    small4 = ModelShape.from_config(MISTRAL_SMALL_4)
    dense_first = {**MISTRAL_SMALL_4, "text_config": {**MISTRAL_SMALL_4["text_config"], "first_k_dense_replace": 2}}
    shape = ModelShape.from_config(dense_first)
    layers = shape.each_layer_bytes("nf4", True, 2)
    assert layers[0] == layers[1] < layers[2] == layers[-1] == small4.layer_bytes("nf4", True, 2)
    gpu = Hardware.profile("a100-40gb", cpu_memory=512 * GiB)
    plan = plan_memory(dense_first, "auto", context_length=4096, hardware=gpu)
    assert plan.offloaded_layers and plan.fits
    assert plan.device_bytes == plan.total_bytes - sum(layers[36 - plan.offloaded_layers :])
    assert plan.device_bytes <= gpu.free_memory < plan.device_bytes + layers[36 - plan.offloaded_layers]
    unquantized = shape.each_layer_bytes(None, False, 2)
    assert plan.offloaded_bytes == sum(unquantized[36 - plan.offloaded_layers :])


def test_activation_estimate_of_latent_attention_and_experts_is_per_token():
    plans = [plan_memory(MISTRAL_SMALL_4, "bf16", context_length=n) for n in (4096, 8192)]
    logits = 131072 * 4
    assert plans[1].activation_bytes - logits == 2 * (plans[0].activation_bytes - logits)
    # hidden states, q, the latent, expanded K and V, 4 routed + 1 shared expert MLPs: 51,520 values per token
    assert plans[0].activation_bytes == 4096 * (2 * 4096 + 4096 + 320 + 32 * 256 + 3 * 5 * 2048) * 2 + logits


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**NEW_ARCHITECTURES["mistral4"], "kv_lora_rank": 0}, "field 'kv_lora_rank' must be between 1 and"),
        ({**NEW_ARCHITECTURES["mistral4"], "first_k_dense_replace": -1}, "'first_k_dense_replace' must be between 0"),
        ({**NEW_ARCHITECTURES["mistral4"], "num_hidden_layers": 10**9}, "'num_hidden_layers' must be between 1"),
        ({**MISTRAL_SMALL_3_2, "text_config": {"vocab_size": -1}}, "field 'vocab_size' must be between 1 and"),
        ({**NEW_ARCHITECTURES["mistral4"], "n_routed_experts": 1}, "num_experts_per_tok (2) cannot exceed"),
    ],
    ids=["kv-lora-rank", "dense-layers", "layers", "text-vocab", "experts"],
)
def test_bad_configs_of_the_new_architectures_name_the_field(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        plan_memory(config, "bf16", context_length=16)


def test_a_latent_config_transformers_cannot_complete_must_be_complete():
    """Without transformers' config class (the Large line before 5.2x), the fields latent attention needs must be
    given; `check_config` names the first one missing."""
    text = {key: value for key, value in MISTRAL_LARGE4_TEXT.items() if key != "kv_lora_rank"}
    with pytest.raises(ValueError, match="a mistral_large4_text config must give 'kv_lora_rank'"):
        check_config(text, "x")
    with pytest.raises(ValueError, match="x: a mistral3 config describes its text model in `text_config`, which is"):
        check_config({"model_type": "mistral3"}, "x")
    with pytest.raises(ValueError, match="is not a vision-language model: plan it without vision=True"):
        ModelShape.from_config(MISTRAL_SMALL_3_2["text_config"], vision=True)


def test_the_large_lines_text_config_plans_like_its_wrapper():
    _needs("mistral_large4")
    text = ModelShape.from_config({"model_type": "mistral_large4_text"})
    wrapper = ModelShape.from_config({"model_type": "mistral_large4"})
    assert text.parameter_count() == wrapper.parameter_count() == 1_050_118_202_912
    assert text.kv_bytes_per_token(2) == wrapper.kv_bytes_per_token(2) == 99_072
