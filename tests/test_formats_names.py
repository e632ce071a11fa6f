"""hf_mistral_kit.formats.names: the one table of tensor names. Every spelling renames both ways through it, and the
shapes and counts it derives equal what transformers builds for the same config."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM

from hf_mistral_kit.formats import names
from hf_mistral_kit.formats.hyperparameters import as_config_dict
from tiny_configs import TINY_SIZES

SPELLINGS = ("native", "hf", "gguf")


@pytest.mark.parametrize("row", names.TENSORS, ids=lambda row: row.native)
def test_each_row_renames_both_ways_in_every_spelling(row):
    match = names.Match(row, layer=7, expert=5)
    for source in SPELLINGS:
        for target in SPELLINGS:
            assert names.rename(match.name(source), source, target) == match.name(target)
    for other in (*row.native_also, *row.hf_also):
        spelling = "native" if other in row.native_also else "hf"
        assert names.rename(other.format(layer=7, expert=5), spelling, spelling) == match.name(spelling)
    for stacked in ("gguf_stacked", "native_stacked", "hf_fused"):
        if getattr(row, stacked) is not None:
            found = names.find(names.Match(row, layer=7).name(stacked), stacked)
            assert found.layer == 7
            assert row in (names.fused_parts(found.row) if stacked == "hf_fused" else [found.row])
    assert names.find("layers.7.attention.wq.bias", "native") is None


def test_the_tables_spellings_are_unique():
    for spelling in SPELLINGS:
        templates = [getattr(row, spelling) for row in names.TENSORS]
        assert len(set(templates)) == len(templates), spelling


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
