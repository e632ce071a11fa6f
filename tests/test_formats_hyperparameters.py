"""issue 10: params.json, config.json and safetensors headers are validated before anything is sized from them, and
validation costs the same few MB whatever the numbers say."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tracemalloc

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.formats.errors import NativeCheckpointError
from hf_mistral_kit.formats.files import safetensors_size
from hf_mistral_kit.formats.native import NativeCheckpoint, config_dict_from_params_dict
from hf_mistral_kit.planning.memory import ModelShape
from reference_configs import MISTRAL_7B, MIXTRAL_8X7B, MIXTRAL_8X7B_PARAMS

MIB = 2**20


@pytest.fixture(scope="module")
def native_moe():
    return kit.tiny_model("mixtral", native=True)


def native_copy(source, target, **params_changes):
    """A copy of native checkpoint `source` whose params.json has `params_changes` (None removes a field)."""
    target.mkdir()
    for file in source.iterdir():
        os.symlink(file, target / file.name)
    params = json.loads((source / "params.json").read_text())
    for key, value in params_changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    (target / "params.json").unlink()
    (target / "params.json").write_text(json.dumps(params))
    return target


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"norm_eps": math.nan}, "'norm_eps' must be a finite number above 0 and below 1, got nan"),
        ({"norm_eps": 0}, "'norm_eps' must be a finite number above 0"),
        ({"rope_theta": -10000.0}, "'rope_theta' must be a finite number above 0, got -10000.0"),
        ({"rope_theta": math.inf}, "'rope_theta' must be a finite number above 0"),
        ({"max_seq_len": -1}, "'max_seq_len' must be between 1 and"),
        ({"sliding_window": -5}, "'sliding_window' must be between 1 and"),
        ({"sliding_window": [4096, None]}, "per-layer sliding windows exist only in Ministral-8B-style dense models"),
        ({"n_layers": 1_000_000}, "'n_layers' must be between 1 and 4096, got 1000000"),
        ({"n_layers": 1e7}, "'n_layers' must be an integer, got 10000000.0"),
        ({"n_layers": True}, "'n_layers' must be an integer, got True"),
        ({"dim": "64"}, "'dim' must be an integer, got '64'"),
        ({"head_dim": 15}, "'head_dim' must be even"),
        ({"n_kv_heads": 3}, "n_heads (4) must be a multiple of n_kv_heads (3)"),
        ({"moe": "4"}, "`moe` must be an object with num_experts and num_experts_per_tok, got '4'"),
        ({"moe": {"num_experts": 1_000_000_000, "num_experts_per_tok": 2}}, "'moe.num_experts' must be between"),
        ({"moe": {"num_experts": 4, "num_experts_per_tok": 5}}, "moe.num_experts_per_tok (5) cannot exceed"),
        ({"moe": {"num_experts": 4, "num_experts_per_tok": 0}}, "'moe.num_experts_per_tok' must be between 1"),
        ({"tied_embeddings": "yes"}, "'tied_embeddings' must be true or false"),
        ({"vocab_size": None}, "missing required field(s) 'vocab_size'"),
    ],
)
def test_params_are_typed_bounded_finite_and_consistent(native_moe, tmp_path, changes, message):
    directory = native_copy(native_moe, tmp_path / "bad", **changes)
    with pytest.raises(NativeCheckpointError) as raised:
        kit.AutoConfig.from_pretrained(directory)
    assert message in str(raised.value) and "params.json" in str(raised.value)
    with pytest.raises(NativeCheckpointError) as raised:
        NativeCheckpoint(directory)
    assert str(raised.value).startswith(str(directory)) and message in str(raised.value)


def test_params_that_are_not_a_file_object_or_json_are_refused(native_moe, tmp_path):
    directory = native_copy(native_moe, tmp_path / "list")
    (directory / "params.json").write_text("[1, 2]")
    with pytest.raises(NativeCheckpointError, match="must hold a JSON object, got list"):
        NativeCheckpoint(directory)
    (directory / "params.json").write_bytes(b'{"dim": "\xff"}')
    with pytest.raises(NativeCheckpointError, match="Cannot read .*params.json: 'utf-8' codec"):
        NativeCheckpoint(directory)
    (directory / "params.json").write_text("[" * 100_000)
    with pytest.raises(NativeCheckpointError, match="Cannot read .*params.json"):
        NativeCheckpoint(directory)
    (directory / "params.json").write_text(" " * (2 * MIB))
    with pytest.raises(NativeCheckpointError, match="larger than 1024 KiB"):
        NativeCheckpoint(directory)


# n_layers / num_experts that once made the loader tabulate every expected weight before reading any (30 s and
# 2.8 GiB for 1e6 layers, MemoryError for 1e7 or 1e9 experts), and in-bounds values the files cannot back.
@pytest.mark.parametrize(
    "changes",
    [
        {"n_layers": 1_000_000},
        {"n_layers": 10_000_000},
        {"moe": {"num_experts": 1_000_000_000, "num_experts_per_tok": 2}},
        {"n_layers": 4096},
        {"n_layers": 4096, "moe": {"num_experts": 4096, "num_experts_per_tok": 2}},
        {"n_layers": 4096, "dim": 2, "head_dim": 2, "hidden_dim": 1, "n_heads": 1, "n_kv_heads": 1, "vocab_size": 1},
    ],
    ids=["layers-1e6", "layers-1e7", "experts-1e9", "layers-4096", "layers-and-experts-4096", "tiny-dims-4096"],
)
def test_validation_memory_does_not_grow_with_the_numbers(native_moe, tmp_path, changes):
    directory = native_copy(native_moe, tmp_path / "huge", **changes)
    tracemalloc.start()
    try:
        with pytest.raises(NativeCheckpointError) as raised:
            NativeCheckpoint(directory)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB, f"{peak / MIB:.1f} MiB allocated before {changes} was refused"
    assert "params.json" in str(raised.value)
    assert any(field in str(raised.value) for field in ("n_layers", "num_experts", "weights"))


def test_a_valid_checkpoint_still_loads_within_the_same_bound(native_moe):
    tracemalloc.start()
    try:
        with NativeCheckpoint(native_moe) as checkpoint:
            assert len(checkpoint.hf_state_dict()) == 3 + 2 * (7 + 3 * 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB


def test_native_weights_and_params_must_be_regular_files(native_moe, tmp_path):
    directory = native_copy(native_moe, tmp_path / "fifo")
    (directory / "consolidated.safetensors").unlink()
    os.mkfifo(directory / "consolidated.safetensors")  # reading it would block forever
    with pytest.raises(NativeCheckpointError, match="consolidated.safetensors is not a regular file"):
        NativeCheckpoint(directory)
    (directory / "consolidated.safetensors").unlink()
    (directory / "consolidated.safetensors").mkdir()
    with pytest.raises(NativeCheckpointError, match="is not a regular file"):
        kit.AutoModelForCausalLM.from_pretrained(directory)
    params = tmp_path / "params-fifo"
    params.mkdir()
    os.mkfifo(params / "params.json")
    with pytest.raises(NativeCheckpointError, match="Cannot read .*not a regular file"):
        kit.formats.native.config_dict_from_params(params)


def write_raw_safetensors(path, header, data=b""):
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ([1, 2], b"", "the header is a JSON list, not an object"),
        (b'{"a": "\xff"}', b"", "'utf-8' codec can't decode"),
        ({"x": {"dtype": "U16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype 'U16'; the kit reads"),
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}, b"\0" * 8, "data_offsets ['0', '8']"),
        ({"x": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8, "shape '2', not a list"),
        ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "do not hold a F32 tensor"),
        ({"x": [1]}, b"", "entry 'x' is not an object"),
        ({"__metadata__": [1]}, b"", "__metadata__ is not an object"),
    ],
    ids=["list", "utf8", "dtype", "offsets", "shape", "size", "entry", "metadata"],
)
def test_malformed_safetensors_headers_are_named(native_moe, tmp_path, header, data, message):
    directory = native_copy(native_moe, tmp_path / "header")
    (directory / "consolidated.safetensors").unlink()
    write_raw_safetensors(directory / "consolidated.safetensors", header, data + b"\0" * 1000)
    directory = native_copy(directory, tmp_path / "small", n_layers=1, dim=2, head_dim=2, hidden_dim=1, vocab_size=1)
    with pytest.raises(NativeCheckpointError) as raised:
        NativeCheckpoint(directory)
    assert "is not a readable safetensors file" in str(raised.value) and message in str(raised.value)


def test_a_short_file_and_a_header_longer_than_the_file(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"\1\2\3")
    with pytest.raises(NativeCheckpointError, match=r"too short for a safetensors header\). Fix it"):
        safetensors_size(file, "Fix it.")
    file.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(NativeCheckpointError, match="exceeds the file size"):
        safetensors_size(file, "Fix it.")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_hidden_layers": -32}, "'num_hidden_layers' must be between 1 and"),
        ({"num_attention_heads": 0}, "'num_attention_heads' must be between 1 and"),
        ({"num_key_value_heads": 5}, "num_attention_heads (32) must be a multiple of num_key_value_heads (5)"),
        ({"rms_norm_eps": math.nan}, "'rms_norm_eps' must be a finite number"),
        ({"rope_theta": -1.0}, "'rope_theta' must be a finite number above 0"),
        ({"sliding_window": -5}, "'sliding_window' must be between 1"),
        ({"max_position_embeddings": 0}, "'max_position_embeddings' must be between 1"),
        ({"vocab_size": 32000.0}, "'vocab_size' must be an integer, got 32000.0"),
        ({"hidden_size": None}, "is not a Mistral/Mixtral config: it lacks 'hidden_size'"),
    ],
)
def test_hf_configs_are_checked_the_same_way(changes, message):
    config = {**MISTRAL_7B, **changes}
    with pytest.raises(ValueError) as raised:
        ModelShape.from_config(config)
    assert message in str(raised.value) and str(raised.value).startswith("mistralai/Mistral-7B-v0.1")


def test_mixtral_configs_need_consistent_experts():
    with pytest.raises(ValueError, match=r"num_experts_per_tok \(9\) cannot exceed num_local_experts \(8\)"):
        ModelShape.from_config({**MIXTRAL_8X7B, "num_experts_per_tok": 9})
    with pytest.raises(ValueError, match="'num_local_experts' must be an integer, got None"):
        ModelShape.from_config({**MIXTRAL_8X7B, "num_local_experts": None})
    with pytest.raises(NativeCheckpointError, match="num_experts_per_tok"):
        config_dict_from_params_dict({**MIXTRAL_8X7B_PARAMS, "moe": {"num_experts": 8, "num_experts_per_tok": 9}})


def test_other_model_types_are_refused_only_where_the_kit_asks(tmp_path):
    llama = {**MISTRAL_7B, "model_type": "llama", "_name_or_path": "llama"}
    assert ModelShape.from_config(llama).parameter_count() > 0  # presets on any model keep working
    with pytest.raises(ValueError, match="llama is a 'llama' config, not a Mistral/Mixtral one"):
        ModelShape.from_config(llama, mistral_only=True)


def test_config_files_are_read_safely(tmp_path):
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="holds a JSON list, not a config object"):
        ModelShape.from_config(tmp_path / "list.json")
    (tmp_path / "latin1.json").write_bytes(b'{"model_type": "\xe9"}')
    with pytest.raises(ValueError, match="is not a readable JSON config"):
        ModelShape.from_config(tmp_path / "latin1.json")
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(ValueError, match="is not a regular file"):
        ModelShape.from_config(tmp_path / "fifo.json")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "config.json").write_text(json.dumps({**MISTRAL_7B, "_name_or_path": "elsewhere"}))
    assert ModelShape.from_config(str(tmp_path / "in" / "config.json")).name == str(tmp_path / "in" / "config.json")


def test_the_text_config_of_a_vision_language_wrapper_is_what_is_checked_and_planned():
    """mistral3 and the Large line describe their text model in `text_config`: its own `tie_word_embeddings` decides
    the head (not the wrapper's), `n_routed_experts` reads as `num_local_experts`, and `vision=True` brings the
    vision tower's config along."""
    from hf_mistral_kit.formats.hyperparameters import check_config, text_config_dict
    from tiny_configs import MISTRAL3, MISTRAL3_MISTRAL4, MISTRAL4, MISTRAL_LARGE4

    text = text_config_dict({**MISTRAL3, "tie_word_embeddings": True})
    assert text["model_type"] == "mistral" and text["tie_word_embeddings"] is False and "vision_config" not in text
    assert text_config_dict(MISTRAL3_MISTRAL4)["num_local_experts"] == MISTRAL4["n_routed_experts"] == 8
    assert text_config_dict(MISTRAL_LARGE4)["model_type"] == "mistral_large4_text"
    whole = text_config_dict(MISTRAL_LARGE4, vision=True)
    assert whole["vision_config"] == MISTRAL_LARGE4["vision_config"] and whole["spatial_merge_size"] == 2
    assert text_config_dict(MISTRAL4) == {**MISTRAL4, "num_local_experts": 8}
    check_config(MISTRAL3_MISTRAL4, "tiny")
    with pytest.raises(ValueError, match=r"tiny: field 'vision_config.intermediate_size' must be an integer, got None"):
        check_config(text_config_dict({**MISTRAL3, "vision_config": {"hidden_size": 8}}, vision=True), "tiny")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"first_k_dense_replace": -1}, "field 'first_k_dense_replace' must be between 0 and 4096, got -1"),
        ({"n_shared_experts": 1.5}, "field 'n_shared_experts' must be an integer, got 1.5"),
        ({"q_lora_rank": 0}, "field 'q_lora_rank' must be between 1 and"),
        ({"qk_rope_head_dim": None}, "a mistral4 config must give 'qk_rope_head_dim'"),
        ({"moe_intermediate_size": True}, "field 'moe_intermediate_size' must be an integer, got True"),
        ({"n_routed_experts": 1}, "num_experts_per_tok (2) cannot exceed num_local_experts (1)"),
    ],
)
def test_latent_attention_and_deepseek_expert_fields_are_checked(changes, message):
    from hf_mistral_kit.formats.hyperparameters import check_config, check_present
    from tiny_configs import MISTRAL4

    check_config({**MISTRAL4, "first_k_dense_replace": 0, "n_shared_experts": 0, "q_lora_rank": None}, "tiny")
    with pytest.raises(ValueError, match=re.escape(f"tiny: {message}") if "must give" not in message else message):
        check_config({**MISTRAL4, **changes}, "tiny")
    if "must give" in message or "cannot exceed" in message:  # what transformers fills in, or an agreement
        check_present({**MISTRAL4, **changes}, "tiny")
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_present({**MISTRAL4, **changes}, "tiny")
