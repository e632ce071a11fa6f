"""issue 21: the drop-in Auto classes on every architecture of the 2025-26 family (ministral, ministral3, mistral4,
the mistral3 vision wrapper around each text model, mistral_large4), on tiny configs: the kit's classes load with the
presets, compute transformers' logits, generate, and save what plain transformers reloads into its own classes."""

import json

import bitsandbytes as bnb
import pytest
import torch
import transformers
from safetensors.torch import load_file

import hf_mistral_kit as kit
from hf_mistral_kit.modeling import registration
from tiny_configs import (
    MISTRAL3_MINISTRAL3,
    MISTRAL3_MISTRAL4,
    NEW_ARCHITECTURES,
    available,
    make_config,
)

# Dimensions bitsandbytes' CPU 4-bit kernel takes (in_features a multiple of 64, out_features of 32): MLA's
# kv_a_proj_with_mqa is kv_lora_rank + qk_rope_head_dim wide, kv_b_proj reads kv_lora_rank.
QUANTIZABLE = {
    "intermediate_size": 128,
    "moe_intermediate_size": 64,
    "q_lora_rank": 64,
    "kv_lora_rank": 64,
    "qk_rope_head_dim": 32,
    "index_head_dim": 32,
}
CASES = {**NEW_ARCHITECTURES, "mistral3_ministral3": MISTRAL3_MINISTRAL3, "mistral3_mistral4": MISTRAL3_MISTRAL4}
# What plain transformers loads each checkpoint with (its own AutoModelForCausalLM has neither mistral4 nor the
# wrappers), and the kit's text-model class for a mistral3 checkpoint.
UPSTREAM = {
    "ministral": (transformers.AutoModelForCausalLM, "MinistralForCausalLM"),
    "ministral3": (transformers.AutoModelForCausalLM, "Ministral3ForCausalLM"),
    "mistral4": (transformers.AutoModelForImageTextToText, "Mistral4ForCausalLM"),
    "mistral3": (transformers.AutoModelForImageTextToText, "Mistral3ForConditionalGeneration"),
    "mistral_large4": (transformers.AutoModelForImageTextToText, "MistralLarge4ForConditionalGeneration"),
}
TEXT_CLASSES = {
    "mistral": "KitMistralForCausalLM",
    "ministral3": "KitMinistral3ForCausalLM",
    "mistral4": "KitMistral4ForCausalLM",
}
VISION = ("mistral3", "mistral_large4")


def quantizable(config: dict) -> dict:
    if "text_config" in config:
        return {**config, "text_config": quantizable(config["text_config"])}
    return {key: QUANTIZABLE.get(key, value) for key, value in config.items()}


def cases(*names):
    """Parameters for `checkpoint`: mistral_large4 only where transformers defines it (the version test below
    covers the other transformers releases)."""
    names = names or tuple(CASES)
    return [
        pytest.param(name, marks=[] if available(CASES[name]["model_type"]) else [pytest.mark.skip("no such class")])
        for name in names
    ]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    built = {}

    def build(case):
        if case not in built:
            config = quantizable(CASES[case])
            model_type = config["model_type"]
            torch.manual_seed(0)
            model = UPSTREAM[model_type][0].from_config(make_config(config)).eval()
            assert type(model).__name__ == UPSTREAM[model_type][1]
            path = tmp_path_factory.mktemp(case)
            model.save_pretrained(path)
            built[case] = case, model_type, model, path
        return built[case]

    return build


@pytest.fixture(params=cases())
def checkpoint(request, checkpoints):
    """(case, model_type, the upstream model, its directory as transformers saves it by default)."""
    return checkpoints(request.param)


@pytest.fixture(params=cases("mistral3", "mistral3_ministral3", "mistral3_mistral4", "mistral_large4"))
def vision_checkpoint(request, checkpoints):
    return checkpoints(request.param)


def input_ids(batch: int = 2):
    return torch.randint(11, 320, (batch, 9), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model, ids=None):
    ids = input_ids() if ids is None else ids
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def greedy(model, tokens: int = 4):
    ids = input_ids(batch=1)
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False)


def expected_class(case: str, model_type: str) -> str:
    if model_type == "mistral3":
        return TEXT_CLASSES[CASES[case]["text_config"]["model_type"]]
    return "Kit" + UPSTREAM[model_type][1]


def test_cpu_preset_loads_the_kit_class_with_transformers_logits(checkpoint):
    case, model_type, upstream, path = checkpoint
    model = kit.AutoModelForCausalLM.from_pretrained(path, preset="cpu")
    assert type(model).__name__ == expected_class(case, model_type)
    assert model.dtype == torch.float32
    if model_type == "mistral3":  # the text model alone: no vision tower, no projector
        assert not [name for name, _ in model.named_parameters() if "vision" in name or "projector" in name]
    torch.testing.assert_close(logits(model), logits(upstream), rtol=1e-5, atol=1e-5)
    assert torch.equal(greedy(model), greedy(upstream))


def test_kit_saves_reload_in_plain_transformers(checkpoint, tmp_path):
    case, model_type, upstream, path = checkpoint
    model = kit.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type.startswith("hf_mistral_kit_")
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    text_type = CASES[case]["text_config"]["model_type"] if model_type == "mistral3" else model_type
    assert saved["model_type"] == text_type
    assert saved["architectures"] == [type(model).__name__.removeprefix("Kit")]
    if "text_config" in saved:
        assert saved["text_config"]["model_type"] == CASES[case]["text_config"]["model_type"]
    assert "_kit_" not in json.dumps(saved)  # the kit's runtime flags stay in memory

    auto_class = transformers.AutoModelForCausalLM if text_type in ("mistral", "ministral3") else UPSTREAM[text_type][0]
    reloaded = auto_class.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == type(model).__name__.removeprefix("Kit")
    torch.testing.assert_close(logits(reloaded), logits(upstream), rtol=1e-5, atol=1e-5)


def test_4bit_preset_quantizes_the_decoder_and_generates(checkpoint):
    case, model_type, _, path = checkpoint
    model = kit.AutoModelForCausalLM.from_pretrained(path, preset="4bit")
    assert model.is_loaded_in_4bit
    layers = model.model.language_model.layers if model_type in VISION and model_type != "mistral3" else None
    layers = layers if layers is not None else model.model.layers
    quantized = {name.rsplit(".", 1)[-1] for name, m in layers.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    if "kv_lora_rank" in json.dumps(CASES[case]):
        assert {"kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "w1", "w2", "w3", "gate_proj", "down_proj"} <= quantized
    else:
        assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == quantized
    assert type(model.lm_head) is torch.nn.Linear
    assert greedy(model, tokens=3).shape == (1, 9 + 3)


@pytest.mark.parametrize("original_format", [True, False], ids=["language_model.model", "model.language_model"])
def test_mistral3_causal_lm_is_the_text_model_from_both_save_layouts(tmp_path, original_format):
    torch.manual_seed(0)
    upstream = transformers.AutoModelForImageTextToText.from_config(make_config(MISTRAL3_MINISTRAL3)).eval()
    upstream.save_pretrained(tmp_path, save_original_format=original_format)
    prefix = "language_model.model." if original_format else "model.language_model."
    assert any(key.startswith(prefix) for key in load_file(tmp_path / "model.safetensors"))

    model, loading_info = kit.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(loading_info.values()), loading_info  # the vision weights are left out without a word
    assert type(model) is kit.modeling.KitMinistral3ForCausalLM
    torch.testing.assert_close(logits(model), logits(upstream), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.lm_head.weight, upstream.lm_head.weight)  # untied, loaded

    whole = kit.AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(whole) is kit.modeling.KitMistral3ForConditionalGeneration
    assert type(whole.model.language_model) is kit.modeling.KitMinistral3Model
    torch.testing.assert_close(logits(whole), logits(upstream), rtol=1e-5, atol=1e-5)
    # from_config: the text model too.
    assert type(kit.AutoModelForCausalLM.from_config(upstream.config)) is kit.modeling.KitMinistral3ForCausalLM
    # Config keyword arguments apply to the text model, as transformers applies them to the config it reads.
    windowed = kit.AutoModelForCausalLM.from_pretrained(
        tmp_path, sliding_window=3, use_cache=False, dtype=torch.float32
    )
    assert (windowed.config.sliding_window, windowed.config.use_cache, windowed.dtype) == (3, False, torch.float32)


def test_image_text_to_text_loads_the_whole_model_with_presets(vision_checkpoint, tmp_path):
    case, model_type, upstream, path = vision_checkpoint
    model = kit.AutoModelForImageTextToText.from_pretrained(path, preset="cpu")
    assert type(model).__name__ == "Kit" + UPSTREAM[model_type][1]
    assert any(name.startswith("model.vision_tower.") for name, _ in model.named_parameters())
    torch.testing.assert_close(logits(model), logits(upstream), rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == UPSTREAM[model_type][1]
    torch.testing.assert_close(logits(reloaded), logits(upstream), rtol=1e-5, atol=1e-5)

    quantized = kit.AutoModelForImageTextToText.from_pretrained(path, preset="4bit")
    vision = [
        m for name, m in quantized.named_modules() if ".vision_tower." in name or ".multi_modal_projector." in name
    ]
    assert vision and not any(isinstance(m, bnb.nn.Linear4bit) for m in vision)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.model.language_model.modules())


def test_mistral4_loads_through_the_kit_causal_lm_only(checkpoints):
    _, _, _, path = checkpoints("mistral4")
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        transformers.AutoModelForCausalLM.from_pretrained(path)
    assert type(kit.AutoModelForImageTextToText.from_pretrained(path)) is kit.modeling.KitMistral4ForCausalLM


def test_ministral_config_without_head_dim_builds_and_saves_it(tmp_path):
    config = {key: value for key, value in NEW_ARCHITECTURES["ministral"].items() if key != "head_dim"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = kit.AutoConfig.from_pretrained(tmp_path)
    assert loaded.head_dim == config["hidden_size"] // config["num_attention_heads"]
    assert transformers.AutoConfig.from_pretrained(tmp_path).head_dim is None  # transformers' own leaves it unset
    model = kit.AutoModelForCausalLM.from_config(loaded)
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["head_dim"] == loaded.head_dim
    assert type(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")).__name__ == (
        "MinistralForCausalLM"
    )


def test_an_auto_class_without_a_class_for_the_checkpoint_names_those_that_have_one(tmp_path):
    make_config(MISTRAL3_MINISTRAL3).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"AutoModelForSequenceClassification has no class for mistral3 .*"
        r"hf_mistral_kit.AutoModelForCausalLM or hf_mistral_kit.AutoModelForImageTextToText",
    ):
        kit.AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_mistral_large4_without_transformers_support_names_the_version(tmp_path, monkeypatch):
    """Real on transformers 5.10 (no mistral_large4); simulated elsewhere by dropping the kit's row."""
    if available("mistral_large4"):
        family = tuple(row for row in registration.FAMILY if row.config.upstream_model_type != "mistral_large4")
        monkeypatch.setattr(registration, "FAMILY", family)
    config = {**NEW_ARCHITECTURES["mistral_large4"], "architectures": ["MistralLarge4ForConditionalGeneration"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert "mistral_large4" in registration.unsupported_architectures()
    for auto_class in (kit.AutoModelForCausalLM, kit.AutoModelForImageTextToText, kit.AutoConfig):
        with pytest.raises(registration.UnsupportedArchitectureError) as error:
            auto_class.from_pretrained(tmp_path)
        message = str(error.value)
        assert f"installed transformers {transformers.__version__} does not" in message
        assert "pip install -U 'transformers>=5.25'" in message


@pytest.mark.parametrize("kind", cases("ministral", "ministral3", "mistral4", "mistral3", "mistral_large4"))
def test_load_model_on_each_architecture(kind):
    model, tokenizer = kit.load_model(kit.tiny_model(kind), "cpu", hardware=kit.Hardware.profile("cpu"))
    expected = {"mistral3": "KitMistralForCausalLM"}.get(kind, "Kit" + UPSTREAM[kind][1])
    assert type(model).__name__ == expected
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], return_tensors="pt", return_dict=True)
    assert model.generate(**chat, max_new_tokens=3, do_sample=False).shape[1] == chat["input_ids"].shape[1] + 3


def test_a_mistral3_head_loaded_apart_stays_apart(tmp_path):
    """Mistral Small 3.x's config.json leaves out the wrapper's `tie_word_embeddings`, whose default is True, while the
    checkpoint holds its own lm_head: the loaded model says untied, so a resize (adding a pad token) or a save keeps
    the trained head."""
    torch.manual_seed(0)
    config = make_config({key: value for key, value in CASES["mistral3"].items() if key != "tie_word_embeddings"})
    assert config.tie_word_embeddings  # transformers' default
    config.tie_word_embeddings = False
    upstream = transformers.AutoModelForImageTextToText.from_config(config)
    upstream.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("tie_word_embeddings")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    for auto_class in (kit.AutoModelForCausalLM, kit.AutoModelForImageTextToText):
        model = auto_class.from_pretrained(tmp_path)
        assert model.config.tie_word_embeddings is False
        model.resize_token_embeddings(upstream.config.text_config.vocab_size + 8)
        head = model.get_output_embeddings().weight
        assert head is not model.get_input_embeddings().weight
        torch.testing.assert_close(head[: upstream.lm_head.weight.shape[0]], upstream.lm_head.weight)


def test_the_vision_class_on_a_native_checkpoint_names_the_route():
    native = kit.tiny_model("ministral3", native=True)
    with pytest.raises(ValueError, match=r"native layout \(params.json\), which the kit loads as its text model only"):
        kit.AutoModelForImageTextToText.from_pretrained(native)
    assert type(kit.AutoModelForCausalLM.from_pretrained(native)).__name__ == "KitMinistral3ForCausalLM"
