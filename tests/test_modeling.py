"""Kit Mistral/Mixtral classes: registration, logits parity with transformers, caching, saving, drop-in Auto classes."""

import json

import bitsandbytes as bnb
import pytest
import torch
import transformers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MistralForSequenceClassification,
    MixtralConfig,
    MixtralForCausalLM,
)
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import hf_mistral_kit as kit
from hf_mistral_kit.modeling import registration
from tiny_configs import TINY_SIZES

SEQ_LEN = 12
WINDOW = 4  # smaller than SEQ_LEN, so the sliding window masks something
SIZES = {
    **TINY_SIZES,
    "sliding_window": WINDOW,
    "initializer_range": 0.1,  # peaked enough that logits differ clearly between positions
}
UPSTREAM = {
    "mistral": (MistralConfig, MistralForCausalLM, kit.KitMistralForCausalLM),
    "mixtral": (MixtralConfig, MixtralForCausalLM, kit.KitMixtralForCausalLM),
}


def upstream_model(kind: str, seed: int = 0):
    config_class, model_class, _ = UPSTREAM[kind]
    extra = {"num_local_experts": 4, "num_experts_per_tok": 2} if kind == "mixtral" else {}
    torch.manual_seed(seed)
    return model_class(config_class(**SIZES, **extra)).eval()


@pytest.fixture(scope="module", params=["mistral", "mixtral"])
def checkpoint(request, tmp_path_factory):
    """(kind, upstream model, its HF directory, its native export)."""
    kind = request.param
    model = upstream_model(kind)
    hf_dir = tmp_path_factory.mktemp(f"{kind}-hf")
    model.save_pretrained(hf_dir)
    native_dir = kit.convert_checkpoint(hf_dir, tmp_path_factory.mktemp(f"{kind}-native") / "out", to="native")
    return kind, model, hf_dir, native_dir


def input_ids(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, SIZES["vocab_size"], (batch, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model, ids):
    return model(ids).logits


def test_builtin_types_keep_transformers_classes(checkpoint):
    kind, _, hf_dir, _ = checkpoint
    config_class, model_class, _ = UPSTREAM[kind]
    assert CONFIG_MAPPING[kind] is config_class
    loaded = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    assert type(loaded) is model_class
    assert type(transformers.AutoConfig.from_pretrained(hf_dir)) is config_class


def test_register_is_idempotent_and_uses_own_model_types(monkeypatch):
    monkeypatch.setattr(registration, "_registered", False)
    kit.register()
    kit.register()
    assert CONFIG_MAPPING["mistral"] is MistralConfig and CONFIG_MAPPING["mixtral"] is MixtralConfig
    assert CONFIG_MAPPING["hf_mistral_kit_mistral"] is kit.KitMistralConfig
    assert CONFIG_MAPPING["hf_mistral_kit_mixtral"] is kit.KitMixtralConfig
    config = kit.KitMistralConfig(**SIZES)
    assert type(transformers.AutoModelForCausalLM.from_config(config)) is kit.KitMistralForCausalLM
    assert type(transformers.AutoModel.from_config(config)) is kit.KitMistralModel
    sequence_classifier = transformers.AutoModelForSequenceClassification.from_config(config)
    assert type(sequence_classifier) is kit.KitMistralForSequenceClassification
    assert type(sequence_classifier.model) is kit.KitMistralModel


def test_kit_heads_build_like_upstream(checkpoint):
    """The kit heads re-implement their upstream `__init__` (to hold the kit base model): nothing may drift."""
    kind, model, _, _ = checkpoint
    kit_model = UPSTREAM[kind][2](registration.to_kit_config(model.config))
    assert set(vars(kit_model)) == set(vars(model))
    assert kit_model.state_dict().keys() == model.state_dict().keys()
    assert isinstance(kit_model, UPSTREAM[kind][1])


def test_logits_parity_upstream_kit_and_native(checkpoint):
    kind, model, hf_dir, native_dir = checkpoint
    ids = input_ids()
    reference = logits(model, ids)

    kit_model = UPSTREAM[kind][2].from_pretrained(hf_dir)
    assert type(kit_model) is UPSTREAM[kind][2]
    from_native = kit.AutoModelForCausalLM.from_pretrained(native_dir)
    assert type(from_native) is UPSTREAM[kind][2]
    assert from_native.config.sliding_window == WINDOW < SEQ_LEN
    assert from_native.config.num_key_value_heads < from_native.config.num_attention_heads

    assert (logits(kit_model, ids) - reference).abs().max().item() <= 1e-5
    assert (logits(from_native, ids) - reference).abs().max().item() <= 1e-5
    # The window matters here: full attention gives different logits past the window.
    model.config.sliding_window = None
    try:
        assert (logits(model, ids)[:, WINDOW + 1 :] - reference[:, WINDOW + 1 :]).abs().max().item() > 1e-3
    finally:
        model.config.sliding_window = WINDOW


def test_incremental_decoding_matches_prefill(checkpoint):
    kind, _, hf_dir, _ = checkpoint
    model = kit.AutoModelForCausalLM.from_pretrained(hf_dir)
    ids = input_ids(batch=1)
    prefill = torch.log_softmax(logits(model, ids), dim=-1)

    with torch.no_grad():
        out = model(ids[:, :3], use_cache=True)
        steps = [out.logits]
        for position in range(3, SEQ_LEN):
            out = model(ids[:, position : position + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    incremental = torch.log_softmax(torch.cat(steps, dim=1), dim=-1)
    assert (incremental - prefill).abs().max().item() <= 1e-5
    # The cache held only the window, not the whole sequence.
    assert out.past_key_values.layers[0].keys.shape[-2] < SEQ_LEN


def test_kit_checkpoints_load_in_plain_transformers(checkpoint, tmp_path):
    kind, model, hf_dir, _ = checkpoint
    kit_model = kit.AutoModelForCausalLM.from_pretrained(hf_dir)
    assert kit_model.config.model_type.startswith("hf_mistral_kit_")
    kit_model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == kind
    assert saved["architectures"] == [UPSTREAM[kind][1].__name__]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(reloaded) is UPSTREAM[kind][1]
    ids = input_ids()
    assert torch.equal(logits(reloaded, ids), logits(model, ids))


def test_kit_sequence_classifier_saves_upstream_architecture(tmp_path):
    config = kit.KitMistralConfig(**SIZES, num_labels=3, pad_token_id=0)
    torch.manual_seed(0)
    model = kit.KitMistralForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(reloaded) is MistralForSequenceClassification
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert type(kit.AutoModelForSequenceClassification.from_pretrained(tmp_path)) is (
        kit.KitMistralForSequenceClassification
    )


def test_kit_mixtral_keeps_the_grouped_mm_experts():
    """transformers picks the experts kernel by grepping the module source; the kit must not fall back to eager."""
    model = kit.AutoModelForCausalLM.from_config(upstream_model("mixtral").config)
    assert type(model.model) is kit.KitMixtralModel
    assert model.config._experts_implementation == "grouped_mm"

    calls = []
    grouped_mm = ALL_EXPERTS_FUNCTIONS["grouped_mm"]

    def spy(*args, **kwargs):
        calls.append(1)
        return grouped_mm(*args, **kwargs)

    ALL_EXPERTS_FUNCTIONS["grouped_mm"] = spy
    try:
        logits(model, input_ids())
    finally:
        del ALL_EXPERTS_FUNCTIONS["grouped_mm"]  # drop the local override
    assert len(calls) == SIZES["num_hidden_layers"]


def test_drop_in_auto_classes_route_by_checkpoint(checkpoint, tmp_path):
    kind, _, hf_dir, native_dir = checkpoint
    kit_config_class = kit.KitMixtralConfig if kind == "mixtral" else kit.KitMistralConfig
    assert type(kit.AutoConfig.from_pretrained(hf_dir)) is kit_config_class
    native_config = kit.AutoConfig.from_pretrained(native_dir)
    assert type(native_config) is kit_config_class
    assert native_config.sliding_window == WINDOW and native_config.head_dim == SIZES["head_dim"]
    base = kit.AutoModel.from_pretrained(native_dir)
    assert type(base).__name__ == f"Kit{kind.capitalize()}Model"
    # Config keyword arguments apply to native checkpoints as to HF ones.
    assert kit.AutoModelForCausalLM.from_pretrained(native_dir, sliding_window=2).config.sliding_window == 2

    # An upstream config object is taken over whole, runtime settings included.
    upstream_config = transformers.AutoConfig.from_pretrained(hf_dir)
    upstream_config._attn_implementation = "eager"
    from_config = kit.AutoModelForCausalLM.from_config(upstream_config)
    assert type(from_config) is UPSTREAM[kind][2] and from_config.config._attn_implementation == "eager"
    assert type(kit.AutoModelForCausalLM.from_pretrained(hf_dir, config=upstream_config)) is UPSTREAM[kind][2]
    assert type(upstream_config) is UPSTREAM[kind][0]  # the caller's config is left alone

    # Anything else goes to transformers untouched.
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in SIZES.items() if k != "sliding_window"}))
    llama.save_pretrained(tmp_path)
    assert type(kit.AutoModelForCausalLM.from_pretrained(tmp_path)) is LlamaForCausalLM
    assert type(kit.AutoConfig.from_pretrained(tmp_path)) is LlamaConfig


def test_preset_fills_loading_kwargs_and_explicit_ones_win(checkpoint):
    kind, _, hf_dir, native_dir = checkpoint
    quantized = kit.AutoModelForCausalLM.from_pretrained(native_dir, preset="4bit")
    assert isinstance(quantized.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    if kind == "mixtral":
        assert isinstance(quantized.model.layers[0].mlp.experts[0].w1, bnb.nn.Linear4bit)
    assert kit.AutoModelForCausalLM.from_pretrained(hf_dir, preset="cpu").dtype == torch.float32
    assert kit.AutoModelForCausalLM.from_pretrained(hf_dir, preset="cpu", dtype=torch.bfloat16).dtype == torch.bfloat16
    assert kit.AutoModelForCausalLM.from_pretrained(native_dir, preset="cpu", context_length=64).dtype == torch.float32
    with pytest.raises(TypeError, match="context_length only sizes a preset"):
        kit.AutoModelForCausalLM.from_pretrained(hf_dir, context_length=64)
