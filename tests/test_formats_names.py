"""hf_mistral_kit.formats.names: the one table of tensor names. Every spelling renames both ways through it, and the
shapes and counts it derives equal what transformers builds for the same config."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM

from hf_mistral_kit.formats import names
from hf_mistral_kit.formats.hyperparameters import as_config_dict, text_config_dict
from tiny_configs import MISTRAL3_MISTRAL4, MISTRAL4, NEW_ARCHITECTURES, TINY_SIZES, available, make_config

SPELLINGS = ("native", "hf", "gguf")


# A config dict of every layout (raw tiny dicts: the table needs no transformers), wrappers with their vision tower.
LAYOUTS = {
    "mistral": dict(TINY_SIZES),
    "mixtral": {**TINY_SIZES, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
    **{
        name: text_config_dict(config, vision=name in ("mistral3", "mistral_large4"))
        for name, config in NEW_ARCHITECTURES.items()
    },
    "mistral4-q-proj": {**MISTRAL4, "q_lora_rank": None},
    "mistral3-mistral4": text_config_dict(MISTRAL3_MISTRAL4, vision=True),
}


def _config_with(row):
    """The first layout whose model holds `row`."""
    return next(config for config in LAYOUTS.values() if row in names.rows(config))


@pytest.mark.parametrize("row", names.TENSORS, ids=lambda row: row.native)
def test_each_row_renames_both_ways_in_every_spelling(row):
    config = _config_with(row)
    match = names.Match(row, layer=1, expert=5)
    spellings = [spelling for spelling in SPELLINGS if getattr(row, spelling) is not None]
    assert {"native", "hf"} <= set(spellings)
    for source in spellings:
        for target in SPELLINGS:
            assert names.rename(match.name(source), source, target, config) == match.name(target)
    for other in (*row.native_also, *row.hf_also):
        spelling = "native" if other in row.native_also else "hf"
        assert names.rename(other.format(layer=1, expert=5), spelling, spelling, config) == match.name(spelling)
    for stacked in ("gguf_stacked", "native_stacked", "hf_fused"):
        if getattr(row, stacked) is not None:
            found = names.find(names.Match(row, layer=1).name(stacked), stacked, config)
            assert found.layer == 1
            assert row in (names.fused_parts(found.row) if stacked == "hf_fused" else [found.row])
    assert names.find("layers.7.attention.wq.bias", "native") is None


def test_rows_of_mistral_and_mixtral_come_first_where_names_are_shared():
    """Without a config, a name that two architectures share finds Mistral's or Mixtral's row (what the GGUF and
    native readers of those two rely on); with one, the row of that architecture."""
    latent = LAYOUTS["mistral_large4"]
    assert names.find("model.layers.3.self_attn.q_proj.weight", "hf").row.part == names.GQA
    assert names.find("model.layers.3.self_attn.q_proj.weight", "hf", latent).row.part == names.MLA_Q
    assert names.rename("model.layers.3.mlp.gate.weight", "hf", "native") == "layers.3.feed_forward.gate.weight"
    assert names.rename("model.layers.3.mlp.gate.weight", "hf", "native", latent) == "layers.3.gate.weight"
    assert names.rename("layers.3.gate.weight", "native", "gguf", latent) is None  # no exact llama.cpp name known
    fused = names.find("model.layers.3.mlp.experts.gate_up_proj", "hf_fused", LAYOUTS["mistral4"])
    assert [names.per_expert_module(row) for row in names.fused_parts(fused.row)] == ["w1", "w3"]
    assert [row.hf for row in names.fused_parts(fused.row)] == [
        "model.layers.{layer}.mlp.experts.{expert}.w1.weight",
        "model.layers.{layer}.mlp.experts.{expert}.w3.weight",
    ]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_tables_spellings_are_unique_within_each_architecture(layout):
    rows = names.rows(LAYOUTS[layout])
    for spelling in SPELLINGS:
        templates = [getattr(row, spelling) for row in rows if getattr(row, spelling) is not None]
        assert len(set(templates)) == len(templates), spelling


def test_roles_decide_what_is_quantized():
    """bitsandbytes (and LoRA's targets) reach the attention projections, dense MLPs and both kinds of experts; never
    routers, norms, the indexer, scales, embeddings, the head or the vision tower."""
    quantized = {row.hf.rsplit(".", 2)[-2] for row in names.TENSORS if row.role in names.LINEAR_ROLES}
    assert quantized == {
        *("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"),
        *("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"),
    }
    kept = {row.role for row in names.TENSORS if row.role not in names.LINEAR_ROLES}
    assert kept == {
        names.EMBEDDING,
        names.HEAD,
        names.NORM,
        names.ROUTER,
        names.INDEXER,
        names.SCALE,
        names.VISION,
        names.PROJECTOR,
    }
    assert all(
        row.part in (names.VISION_MODEL, names.VISION_LAYER) for row in names.TENSORS if row.role == names.VISION
    )


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("kind", ["mistral", "mixtral"])
def test_shapes_and_counts_are_transformers_own(kind, tied):
    """A meta-device transformers model of the same config has exactly these weights (Mixtral's experts fused by
    transformers 5.x: the table's fused spelling), the same parameter count, and the quantized/kept split of memory
    plans covers every parameter."""
    config_class, model_class = (
        (MistralConfig, MistralForCausalLM) if kind == "mistral" else (MixtralConfig, MixtralForCausalLM)
    )
    extra = {"num_local_experts": 4, "num_experts_per_tok": 2} if kind == "mixtral" else {}
    config = config_class(**TINY_SIZES, tie_word_embeddings=tied, **extra)
    with torch.device("meta"):
        model = model_class(config)
    state = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if tied:
        state.pop("lm_head.weight")
    config_dict = as_config_dict(config)
    expected = names.expected_hf_shapes(config_dict)
    per_expert = {}
    for name, shape in state.items():
        fused = names.find(name, "hf_fused")
        if fused is None:
            found = names.find(name, "hf")
            per_expert[found.name("hf")] = shape
            continue
        parts = names.fused_parts(fused.row)
        for expert in range(shape[0]):
            for row in parts:
                per_expert[names.Match(row, fused.layer, expert).name("hf")] = (shape[1] // len(parts), shape[2])
    assert per_expert == expected
    assert names.weight_count(config_dict) == len(expected)
    total = sum(
        tensor.numel() for name, tensor in model.state_dict().items() if not (tied and name == "lm_head.weight")
    )
    assert names.parameter_count(config_dict) == total
    layers = config_dict["num_hidden_layers"]
    split = names.model_parameters(config_dict) + layers * (
        names.layer_parameters(config_dict, linear=True) + names.layer_parameters(config_dict, linear=False)
    )
    assert split == total
    linear = sum(out * inp * count for out, inp, count in names.layer_linear_shapes(config_dict))
    assert linear == names.layer_parameters(config_dict, linear=True)


def _upstream_model(model_type, config):
    import transformers

    if model_type == "mistral4":  # not in transformers' AutoModelForCausalLM mapping
        return transformers.Mistral4ForCausalLM(config)
    if config.model_type in ("mistral3", "mistral_large4"):
        return transformers.AutoModelForImageTextToText.from_config(config)
    return transformers.AutoModelForCausalLM.from_config(config)


# The Large line's layer variants: a NoPE layer reusing a NoPE layer's KV, a layer reusing KV with its own indexer, one
# reusing both.
LARGE4_VARIANTS = {
    "model_type": "mistral_large4_text",
    **{key: value for key, value in NEW_ARCHITECTURES["mistral_large4"]["text_config"].items() if key != "model_type"},
    "num_hidden_layers": 4,
    "no_rope_layers": [1, 1, 0, 0],
    "kv_source_layers": [0, 0, 2, 2],
    "indexer_types": ["full", "full", "full", "shared"],
    "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"],
}


@pytest.mark.parametrize(
    "name", [*NEW_ARCHITECTURES, "mistral4-q-proj", "mistral3-mistral4", "mistral_large4-variants"]
)
def test_new_architectures_shapes_and_counts_are_transformers_own(name):
    """Every tensor of a meta-device upstream model (its vision tower too), by the table's names and shapes, per layer
    (dense and MoE layers, NoPE, KV-sharing and index-sharing layers), the fused experts split per expert; the same
    parameter count; and the quantized/kept split covers every parameter."""
    raw = {
        "mistral4-q-proj": LAYOUTS["mistral4-q-proj"],
        "mistral3-mistral4": MISTRAL3_MISTRAL4,
        "mistral_large4-variants": {**NEW_ARCHITECTURES["mistral_large4"], "text_config": LARGE4_VARIANTS},
    }.get(name) or NEW_ARCHITECTURES[name]
    if not available(raw["model_type"]):
        pytest.skip(f"transformers {__import__('transformers').__version__} has no {raw['model_type']}")
    config = make_config(raw)
    with torch.device("meta"):
        model = _upstream_model(raw["model_type"], config)
    wrapper = raw["model_type"] in ("mistral3", "mistral_large4")
    config_dict = text_config_dict(as_config_dict(config), vision=wrapper)
    state = {
        name.replace("model.language_model.", "model."): tuple(tensor.shape)
        for name, tensor in model.named_parameters()
    }
    per_expert = {}
    for key, size in state.items():
        fused = names.find(key, "hf_fused", config_dict)
        if fused is None:
            found = names.find(key, "hf", config_dict)
            assert found is not None, key
            per_expert[found.name("hf")] = size
            continue
        parts = names.fused_parts(fused.row)
        for expert in range(size[0]):
            for row in parts:
                per_expert[names.Match(row, fused.layer, expert).name("hf")] = (size[1] // len(parts), size[2])
    expected = names.expected_hf_shapes(config_dict)
    assert per_expert == expected
    assert names.weight_count(config_dict) == len(expected)
    total = sum(tensor.numel() for tensor in model.parameters())
    assert names.parameter_count(config_dict) == total
    decoder = sum(
        count
        * (
            names.layer_parameters(config_dict, linear=True, layer=layer)
            + names.layer_parameters(config_dict, linear=False, layer=layer)
        )
        for layer, count in names.layer_groups(config_dict)
    )
    assert names.model_parameters(config_dict) + decoder == total
    for layer, _ in names.layer_groups(config_dict):
        linear = sum(out * inp * count for out, inp, count in names.layer_linear_shapes(config_dict, layer))
        assert linear == names.layer_parameters(config_dict, linear=True, layer=layer)
