"""GGUF in and out: round trips against the original model, Mixtral's experts, exact tokenizers, and refusals."""

from __future__ import annotations

import functools
import json
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFValueType, dequantize, quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from sentencepiece import SentencePieceProcessor
from sentencepiece import sentencepiece_model_pb2 as pb
from transformers import AutoModelForCausalLM
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

import hf_mistral_kit as kit
from chats import conversations, reference_ids, text
from gguf_files import NO_VOCABULARY, entry, raw_gguf, rewrite, with_architecture, with_vocabulary
from hf_mistral_kit.formats.errors import GGUFError
from hf_mistral_kit.formats.gguf import gguf_reader, read_gguf_metadata
from hf_mistral_kit.formats.gguf_vocabulary import (
    gguf_vocabulary,
    tokenizer_files_from_gguf_fields,
    tokenizer_from_gguf_fields,
)
from hf_mistral_kit.planning.memory import ModelShape

Q8_0, Q4_K, Q6_K = GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K
STRING, UINT32, FLOAT32 = GGUFValueType.STRING, GGUFValueType.UINT32, GGUFValueType.FLOAT32
SMALL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.fixture(autouse=True)
def _no_progress_bars():
    from transformers.utils import logging

    logging.disable_progress_bar()
    yield
    logging.enable_progress_bar()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module", autouse=True)
def _kit_cache(tmp_path_factory):
    """Rebuilt GGUF tokenizers go to the kit's cache: a temporary one here, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_MISTRAL_KIT_CACHE", str(tmp_path_factory.mktemp("kit-cache")))
        yield


@pytest.fixture(scope="module")
def originals(work):
    """kind -> (HF checkpoint directory, the transformers model it holds)."""
    result = {}
    for kind in ("mistral", "mixtral"):
        directory = kit.tiny_model(kind, work / f"hf-{kind}", tokenizer="v1")
        result[kind] = directory, AutoModelForCausalLM.from_pretrained(directory).eval()
    return result


@pytest.fixture(scope="module")
def ggufs(work, originals):
    """(kind, dtype) -> a GGUF file the kit wrote from the original HF checkpoint."""
    return {
        (kind, dtype): kit.convert_checkpoint(originals[kind][0], work / f"{kind}-{dtype}.gguf", to="gguf", dtype=dtype)
        for kind in ("mistral", "mixtral")
        for dtype in ("f32", "q8_0")
    }


IDS = torch.randint(0, 32000, (2, 16), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model, ids=IDS):
    return model(ids).logits.float()


@pytest.fixture(scope="module")
def rounded(originals):
    """kind -> the original model with its matrices through Q8_0 and back (see `q8_0_rounded`)."""
    return {kind: q8_0_rounded(model) for kind, (_, model) in originals.items()}


def q8_0_rounded(model):
    """A copy of `model` whose matrices went through Q8_0 and back, as llama.cpp stores them (norms and the MoE
    router stay float32)."""
    rounded = AutoModelForCausalLM.from_config(model.config).eval()
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.dim() >= 2 and "mlp.gate." not in name:
            array = tensor.reshape(-1, tensor.shape[-1]).numpy()
            tensor = torch.from_numpy(dequantize(quantize(array, Q8_0), Q8_0)).reshape(tensor.shape)
        state[name] = tensor
    rounded.load_state_dict(state)
    return rounded


# --- round trips: HF -> GGUF -> kit -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mistral", "mixtral"])
def test_f32_round_trip_is_exact(kind, originals, ggufs):
    _, original = originals[kind]
    model = kit.AutoModelForCausalLM.from_pretrained(ggufs[kind, "f32"])
    assert model.dtype == torch.float32
    assert torch.equal(logits(model), logits(original))


# Measured on these tiny random models (logits up to ~0.8): max |difference| 8e-3 to 1e-2 for Mistral; for Mixtral
# 8e-3 to 6e-2, the larger ones where a token's top-2 experts change under Q8_0's rounding.
Q8_0_BOUND = {"mistral": 0.02, "mixtral": 0.1}


@pytest.mark.parametrize("kind", ["mistral", "mixtral"])
def test_q8_0_round_trip_is_q8_0_rounding_and_nothing_else(kind, originals, ggufs, rounded):
    _, original = originals[kind]
    model = kit.AutoModelForCausalLM.from_pretrained(ggufs[kind, "q8_0"])
    assert model.dtype == torch.float32  # dequantized
    torch.testing.assert_close(logits(model), logits(rounded[kind]), atol=1e-5, rtol=0)
    difference = (logits(model) - logits(original)).abs().max().item()
    assert 0 < difference < Q8_0_BOUND[kind]
    assert ggufs[kind, "q8_0"].stat().st_size < 0.4 * ggufs[kind, "f32"].stat().st_size


def test_mixtral_gguf_loads_with_its_experts_and_a_clean_report(originals, ggufs):
    model, info = kit.AutoModelForCausalLM.from_pretrained(ggufs["mixtral", "q8_0"], output_loading_info=True)
    assert type(model) is kit.KitMixtralForCausalLM
    assert all(not entries for entries in info.values()), info
    assert model.config.num_local_experts == 4 and model.config.num_experts_per_tok == 2
    for layer in model.model.layers:
        assert isinstance(layer.mlp, MixtralSparseMoeBlock)
        assert layer.mlp.experts.gate_up_proj.shape == (4, 2 * 128, 64)
    # Expert 3 of layer 1 is what the file's stacked tensors hold at index 3 (gate and up halves, down).
    tensors = {t.name: t for t in gguf_reader(ggufs["mixtral", "q8_0"]).tensors}
    gate, up, down = (
        torch.from_numpy(dequantize(tensors[f"blk.1.ffn_{part}_exps.weight"].data[3], Q8_0))
        for part in ("gate", "up", "down")
    )
    experts = model.model.layers[1].mlp.experts
    assert torch.equal(experts.gate_up_proj[3], torch.cat([gate, up]))
    assert torch.equal(experts.down_proj[3], down)
    config = kit.AutoConfig.from_pretrained(ggufs["mixtral", "q8_0"].parent, gguf_file=ggufs["mixtral", "q8_0"].name)
    assert type(config) is kit.KitMixtralConfig and config.num_local_experts == 4


@pytest.mark.parametrize("source", ["native", "kit-saved"])
def test_native_and_kit_saved_folders_convert_like_hf(source, originals, work):
    directory, original = originals["mixtral"]
    if source == "native":
        folder = kit.convert_checkpoint(directory, work / "native-mixtral", to="native")
    else:
        folder = work / "kit-saved-mixtral"
        kit.AutoModelForCausalLM.from_pretrained(directory).save_pretrained(folder)
        kit.AutoTokenizer.from_pretrained(directory).save_pretrained(folder)
    path = kit.convert_checkpoint(folder, work / f"from-{source}.gguf", to="gguf", dtype="f32")
    assert torch.equal(logits(kit.AutoModelForCausalLM.from_pretrained(path)), logits(original))


def test_from_pretrained_ways_to_name_a_gguf(originals, ggufs):
    path = ggufs["mistral", "f32"]
    reference = logits(originals["mistral"][1])
    for model in (
        kit.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name),
        kit.AutoModelForCausalLM.from_pretrained(str(path), preset="cpu"),  # the preset plans from the metadata
        kit.KitMistralForCausalLM.from_pretrained(path.parent, gguf_file=str(path)),
    ):
        assert type(model) is kit.KitMistralForCausalLM and torch.equal(logits(model), reference)
    with pytest.raises(ValueError, match="describes a mistral checkpoint"):
        kit.KitMixtralForCausalLM.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="has no GGUF file nope.gguf"):
        kit.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file="nope.gguf")


def test_load_model_returns_the_model_and_the_exact_tokenizer(ggufs, rounded, reference_tokenizers):
    path = ggufs["mixtral", "q8_0"]
    for model, tokenizer in (
        kit.load_model(path.parent, "cpu", gguf_file=path.name),
        kit.load_model(path, "cpu"),
    ):
        assert type(model) is kit.KitMixtralForCausalLM
        torch.testing.assert_close(logits(model), logits(rounded["mixtral"]), atol=1e-5, rtol=0)
        chat = [{"role": "user", "content": "Hello  there"}, {"role": "assistant", "content": "Hi!"}]
        ids = tokenizer.apply_chat_template(chat)["input_ids"]
        assert ids == reference_ids(reference_tokenizers["v1"], chat)
        assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.padding_side == "left"


def test_k_quants_dequantize_as_transformers_does(work):
    """A file with Q4_K and Q6_K matrices (what a Q4_K_M download holds) loads like transformers' own GGUF reader
    loads it (a Mistral GGUF is the one model type that reader maps right)."""
    directory = kit.tiny_model(
        "mistral", work / "hf-wide", hidden_size=256, intermediate_size=256, head_dim=64, sliding_window=None
    )
    plain = kit.convert_checkpoint(directory, work / "wide-f32.gguf", to="gguf", dtype="f32")
    rng = np.random.default_rng(0)

    def k_quant(tensor, kind):
        """Random but well-scaled k-quant blocks of the tensor's shape (the gguf package can only decode these)."""
        block, size = {Q4_K: (256, 144), Q6_K: (256, 210)}[kind]
        rows, cols = tensor.data.shape
        data = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
        scale = np.frombuffer(np.float16(2e-5 if kind == Q4_K else 1e-5).tobytes(), np.uint8)
        if kind == Q4_K:  # d, dmin first
            data[..., 0:2], data[..., 2:4] = scale, scale
        else:  # d last
            data[..., -2:] = scale
        return data.reshape(rows, -1), kind

    quantized = work / "wide-kquants.gguf"
    six = ("attn_v", "attn_output", "output.weight")
    rewrite(
        plain,
        quantized,
        drop_fields=NO_VOCABULARY,  # the model needs none of it, and the file parses in a blink
        replace={
            t.name: k_quant(t, Q6_K if any(part in t.name for part in six) else Q4_K)
            for t in gguf_reader(plain).tensors
            if len(t.data.shape) == 2
        },
    )
    types = {t.tensor_type for t in gguf_reader(quantized).tensors}
    assert {Q4_K, Q6_K} <= types
    reference = AutoModelForCausalLM.from_pretrained(quantized.parent, gguf_file=quantized.name).eval()
    model = kit.AutoModelForCausalLM.from_pretrained(quantized)
    assert type(model) is kit.KitMistralForCausalLM
    torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=1e-5)


# --- what the file holds --------------------------------------------------------------------------------------------


def test_file_has_what_llama_cpp_requires(ggufs):
    reader = gguf_reader(ggufs["mixtral", "q8_0"])
    fields = read_gguf_metadata(ggufs["mixtral", "q8_0"])
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == 7  # MOSTLY_Q8_0
    expected = {
        "llama.context_length": 4096,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 32,  # the tiny models' head_dim (4 heads of 32 over hidden 64)
        "llama.attention.key_length": 32,
        "llama.rope.freq_base": 1e6,
        "llama.expert_count": 4,
        "llama.expert_used_count": 2,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,  # tokenizer v1: see gguf_vocabulary.add_space_prefix
        "tokenizer.chat_template": kit.get_chat_template("mistral_v1"),
    }
    assert {key: fields.get(key) for key in expected} == expected
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    original = pb.ModelProto.FromString(kit.reference_tokenizer_file("v1").read_bytes())
    assert fields["tokenizer.ggml.tokens"] == [piece.piece for piece in original.pieces]
    assert fields["tokenizer.ggml.scores"] == [piece.score for piece in original.pieces]
    assert fields["tokenizer.ggml.token_type"] == [piece.type for piece in original.pieces]
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_gate_exps.weight"] == Q8_0 and types["token_embd.weight"] == Q8_0
    assert types["blk.0.ffn_gate_inp.weight"] == types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    assert {t.name: list(t.shape) for t in reader.tensors}["blk.1.ffn_down_exps.weight"] == [128, 64, 4]


def test_sliding_window_shorter_than_the_context_is_declared_and_warned(work):
    directory = kit.tiny_model("mistral", work / "hf-window", sliding_window=8)
    original = AutoModelForCausalLM.from_pretrained(directory).eval()
    with pytest.warns(UserWarning, match="sliding_window 8 is shorter than the context.*context length of 8"):
        path = kit.convert_checkpoint(directory, work / "window.gguf", to="gguf", dtype="f32")
    fields = read_gguf_metadata(path)
    assert fields["llama.context_length"] == 8 and fields["llama.attention.sliding_window"] == 8
    model = kit.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.sliding_window == 8
    assert torch.equal(logits(model), logits(original))  # 16 tokens: the window matters, and is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a window as long as the context: nothing to warn about
        kit.convert_checkpoint(kit.tiny_model("mistral", work / "hf-no-window"), work / "no-window.gguf", to="gguf")


def test_default_dtype_is_the_checkpoints_and_cli_writes_q8_0(originals, work, monkeypatch, capsys):
    from hf_mistral_kit.cli import ExitCode, main

    bf16 = work / "hf-bf16"
    AutoModelForCausalLM.from_pretrained(originals["mistral"][0], dtype=torch.bfloat16).save_pretrained(bf16)
    shutil.copy(originals["mistral"][0] / "tokenizer.model.v1", bf16)
    path = kit.convert_checkpoint(bf16, work / "bf16.gguf", to="gguf")
    assert {t.tensor_type for t in gguf_reader(path).tensors} == {GGMLQuantizationType.BF16, GGMLQuantizationType.F32}
    assert kit.AutoModelForCausalLM.from_pretrained(path).dtype == torch.bfloat16

    source, target = str(originals["mistral"][0]), work / "cli.gguf"
    assert main(["convert", source, str(target), "--to", "gguf", "--dtype", "q8_0"]) == ExitCode.OK
    assert "wrote the GGUF file" in capsys.readouterr().out
    assert Q8_0 in {t.tensor_type for t in gguf_reader(target).tensors}
    assert main(["plan", str(target), "--context", "64", "--gpu", "cpu"]) == ExitCode.OK  # plans from the metadata
    assert "fits" in capsys.readouterr().out
    assert main(["convert", source, str(target), "--to", "gguf"]) == ExitCode.USAGE
    assert main(["convert", source, str(work / "cli.bin"), "--to", "gguf"]) == ExitCode.USAGE
    assert main(["convert", source, str(work / "nat"), "--to", "native", "--dtype", "f16"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "already exists" in err and ".gguf suffix" in err and "--dtype applies to --to gguf" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in work.glob(".*")) == []  # no staging file left behind


# --- tokenizers from GGUF vocabularies ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_tokenizers(work, ggufs):
    """version -> (GGUF written from a tiny model holding that tokenizer, the kit tokenizer rebuilt from it)."""
    v3 = kit.convert_checkpoint(kit.tiny_model("mistral", work / "hf-v3", tokenizer="v3"), work / "v3.gguf", to="gguf")
    v7 = kit.convert_checkpoint(kit.tiny_model("mistral", work / "hf-v7", tokenizer="v7"), work / "v7.gguf", to="gguf")
    files = {"v1": ggufs["mistral", "f32"], "v3": v3, "v7": v7}
    return {version: (path, kit.load_gguf_tokenizer(path)) for version, path in files.items()}


def _fields(path):
    return read_gguf_metadata(path)


@pytest.mark.parametrize("version", ["v1", "v3", "v7"])
def test_rebuilt_sentencepiece_model_is_mistrals_piece_for_piece(version, gguf_tokenizers):
    path, tokenizer = gguf_tokenizers[version]
    found, serialized, added = tokenizer_files_from_gguf_fields(_fields(path), path)
    assert (found, added) == (version, [])
    rebuilt, original = (
        pb.ModelProto.FromString(serialized),
        pb.ModelProto.FromString(kit.reference_tokenizer_file(version).read_bytes()),
    )
    assert [(p.piece, p.score, p.type) for p in rebuilt.pieces] == [(p.piece, p.score, p.type) for p in original.pieces]
    assert rebuilt.normalizer_spec.SerializeToString() == original.normalizer_spec.SerializeToString()
    for field in (
        "model_type",
        "vocab_size",
        "byte_fallback",
        "split_digits",
        "allow_whitespace_only_pieces",
        "split_by_whitespace",
        "treat_whitespace_as_suffix",
        "max_sentencepiece_length",
        "unk_id",
        "bos_id",
        "eos_id",
        "pad_id",
        "unk_piece",
        "bos_piece",
        "eos_piece",
        "unk_surface",
        "control_symbols",
        "user_defined_symbols",
    ):
        assert getattr(rebuilt.trainer_spec, field) == getattr(original.trainer_spec, field), field
    assert tokenizer.init_kwargs.get("mistral_version", version) == version
    assert tokenizer.chat_template == kit.get_chat_template(f"mistral_{version}")


@pytest.fixture(scope="module")
def sentencepiece_pairs(gguf_tokenizers):
    """version -> (SentencePiece model rebuilt from the GGUF, Mistral's original)."""
    return {
        version: (
            SentencePieceProcessor(model_proto=tokenizer_files_from_gguf_fields(_fields(path), path)[1]),
            SentencePieceProcessor(model_file=str(kit.reference_tokenizer_file(version))),
        )
        for version, (path, _) in gguf_tokenizers.items()
    }


@SMALL
@given(st.sampled_from(["v1", "v3", "v7"]), text)
def test_rebuilt_sentencepiece_model_encodes_like_mistrals(sentencepiece_pairs, version, sample):
    rebuilt, original = sentencepiece_pairs[version]
    assert rebuilt.encode(sample) == original.encode(sample)


@SMALL
@given(conversations())
def test_gguf_v1_tokenizer_gives_mistral_common_chat_ids(gguf_tokenizers, reference_tokenizers, chat):
    messages, _, prefix = chat
    expected = reference_ids(reference_tokenizers["v1"], messages, None, prefix)
    if expected is not None:
        tokenizer = gguf_tokenizers["v1"][1]
        assert tokenizer.apply_chat_template(messages, continue_final_message=prefix)["input_ids"] == expected


@SMALL
@given(conversations(tools=True))
def test_gguf_v3_tokenizer_gives_mistral_common_chat_ids(gguf_tokenizers, reference_tokenizers, chat):
    messages, tools, prefix = chat
    expected = reference_ids(reference_tokenizers["v3"], messages, tools, prefix)
    if expected is not None:
        ids = gguf_tokenizers["v3"][1].apply_chat_template(messages, tools=tools, continue_final_message=prefix)
        assert ids["input_ids"] == expected


def test_llama_cpp_style_vocabulary_and_chatml_tokens(gguf_tokenizers, reference_tokenizers, work, monkeypatch):
    """llama.cpp's converter scores control/added tokens -1000 and writes Mistral's user-defined pieces
    ([REFERENCE_DOC_N]) as normal ones; fine-tunes add tokens (ChatML) beyond the SentencePiece vocabulary, padded
    with unused ones."""
    path, _ = gguf_tokenizers["v3"]
    fields = _fields(path)
    scores, types = list(fields["tokenizer.ggml.scores"]), list(fields["tokenizer.ggml.token_type"])
    for i, kind in enumerate(types):
        if kind == 3:  # control
            scores[i] = -1000.0
        elif kind == 4:  # user-defined
            types[i] = 1
    tokens = [*fields["tokenizer.ggml.tokens"], "<|im_start|>", "<|im_end|>", "[PAD32770]"]
    edited = {
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [*scores, -1000.0, -1000.0, -1000.0],
        "tokenizer.ggml.token_type": [*types, 3, 3, 5],
    }
    version, serialized, added = tokenizer_files_from_gguf_fields({**fields, **edited}, "edited")
    assert (version, added) == ("v3", ["<|im_start|>", "<|im_end|>"])
    original = pb.ModelProto.FromString(kit.reference_tokenizer_file("v3").read_bytes())
    rebuilt = pb.ModelProto.FromString(serialized).pieces
    assert [(p.piece, p.score, p.type) for p in rebuilt] == [(p.piece, p.score, p.type) for p in original.pieces]
    (work / "a-file").write_text("")
    monkeypatch.setenv("HF_MISTRAL_KIT_CACHE", str(work / "a-file" / "cache"))  # unwritable: a temporary folder
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    chatml = tokenizer_from_gguf_fields({**fields, **edited}, "edited")
    assert list(work.glob("hf-mistral-kit-gguf-*/tokenizer.model.v3"))
    assert chatml.convert_tokens_to_ids("<|im_start|>") == 32768
    assert "<|im_start|>" in chatml.chat_template
    rendered = chatml.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith("<|im_start|>user\nhi<|im_end|>")


@SMALL
@given(conversations(tools=True, version="v7"))
def test_gguf_v7_tokenizer_gives_mistral_common_chat_ids(gguf_tokenizers, chat):
    messages, tools, prefix = chat
    expected = reference_ids(_v7_reference(), messages, tools, prefix)
    if expected is not None:
        ids = gguf_tokenizers["v7"][1].apply_chat_template(messages, tools=tools, continue_final_message=prefix)
        assert ids["input_ids"] == expected


@functools.cache
def _v7_reference():
    return MistralTokenizer.from_file(str(kit.reference_tokenizer_file("v7")))


def test_tekken_folders_are_refused_with_the_route_that_works(work):
    folder = work / "tekken"
    kit.load_tokenizer(kit.reference_tokenizer_file("tekken")).save_pretrained(folder)
    with pytest.raises(GGUFError, match="tekken tokenizer;.*convert_hf_to_gguf.py on a copy of the folder without"):
        gguf_vocabulary(folder, 131072)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"tokenizer.ggml.model": "gpt2"}, "not a SentencePiece one"),
        ({"tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "a"] * 8000}, "not one of Mistral's SentencePiece"),
        ({"tokenizer.ggml.bos_token_id": 5}, "bos token id 5 is not Mistral's"),
    ],
    ids=["bpe", "foreign-vocabulary", "bos"],
)
def test_tokenizers_the_kit_cannot_vouch_for_are_refused(gguf_tokenizers, edit, message):
    path, _ = gguf_tokenizers["v1"]
    with pytest.raises(GGUFError, match=message):
        tokenizer_files_from_gguf_fields({**_fields(path), **edit}, path)


# --- refusals -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "edits", "message"),
    [
        ("mistral", {"set_fields": {"general.architecture": ("qwen2", STRING)}}, r"holds a 'qwen2' model"),
        ("mistral", {"set_fields": {"llama.rope.scaling.type": ("linear", STRING)}}, "RoPE scaling"),
        ("mistral", {"set_fields": {"llama.attention.clamp_kqv": (8.0, FLOAT32)}}, r"clamp_kqv describes"),
        ("mistral", {"add_tensors": {"rope_freqs.weight": np.ones(8, np.float32)}}, r"'rope_freqs\.weight'.*no place"),
        ("mistral", {"drop_tensors": ("blk.1.ffn_up.weight",)}, r"missing weight.*'blk\.1\.ffn_up\.weight'"),
        ("mistral", {"set_fields": {"llama.attention.head_count_kv": (4, UINT32)}}, r"'blk\.0\.attn_k\.weight' has"),
        ("mistral", {"set_fields": {"llama.attention.head_count": (0, UINT32)}}, r"impossible sizes"),
        ("mixtral", {"drop_fields": ("llama.expert_count",)}, r"ffn_\w+_exps.*but the metadata says no experts"),
        ("mixtral", {"set_fields": {"llama.expert_count": (8, UINT32)}}, r"shape \[4, .*metadata says 8"),
    ],
    ids=[
        "architecture",
        "rope-scaling",
        "unknown-key",
        "extra-tensor",
        "missing",
        "shape",
        "zero-heads",
        "experts",
        "expert-count",
    ],
)
def test_what_cannot_be_mapped_exactly_is_refused(kind, edits, message, ggufs, work):
    edits.setdefault("drop_fields", ())
    edits["drop_fields"] = (*edits["drop_fields"], *NO_VOCABULARY)  # keeps the file quick to parse
    broken = rewrite(ggufs[kind, "f32"], work / "broken.gguf", **edits)
    with pytest.raises(GGUFError, match=message):
        kit.AutoModelForCausalLM.from_pretrained(broken)


def test_first_llama_cpp_mixtral_files_with_one_tensor_per_expert_load(originals, ggufs, work):
    """llama.cpp's first Mixtral GGUFs (December 2023, e.g. TheBloke's) held `blk.N.ffn_gate.E.weight` per expert."""
    stacked = {t.name: t for t in gguf_reader(ggufs["mixtral", "f32"]).tensors if "_exps." in t.name}
    per_expert = {
        name.replace("_exps.weight", f".{expert}.weight"): np.ascontiguousarray(tensor.data[expert])
        for name, tensor in stacked.items()
        for expert in range(tensor.data.shape[0])
    }
    edits = {"drop_fields": NO_VOCABULARY, "drop_tensors": stacked, "add_tensors": per_expert}
    legacy = rewrite(ggufs["mixtral", "f32"], work / "legacy.gguf", **edits)
    assert "blk.0.ffn_down.3.weight" in {t.name for t in gguf_reader(legacy).tensors}
    assert torch.equal(logits(kit.AutoModelForCausalLM.from_pretrained(legacy)), logits(originals["mixtral"][1]))


def test_truncated_and_foreign_files_are_refused(ggufs, work):
    truncated = work / "truncated.gguf"
    data = ggufs["mistral", "q8_0"].read_bytes()
    truncated.write_bytes(data[: len(data) - 5000])
    with pytest.raises(GGUFError, match="truncated"):
        kit.AutoModelForCausalLM.from_pretrained(truncated)
    foreign = work / "foreign.gguf"
    foreign.write_text(json.dumps({"not": "gguf"}))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        kit.AutoModelForCausalLM.from_pretrained(work, gguf_file="foreign.gguf")
    with pytest.raises(GGUFError, match="has no tokenizer file"):
        empty = work / "no-tokenizer"
        shutil.copytree(kit.tiny_model("mistral", work / "hf-for-tok"), empty)
        for file in empty.glob("tokenizer*"):  # the SentencePiece files and what the kit saves beside them
            file.unlink()
        kit.convert_checkpoint(empty, work / "no-tokenizer.gguf", to="gguf")
    assert not (work / "no-tokenizer.gguf").exists()


# --- metadata: typed, checked on every path, bounded ----------------------------------------------------------------

ARRAY, STRING_ARRAY = GGUFValueType.ARRAY, (GGUFValueType.ARRAY, GGUFValueType.STRING)
INT32, UINT64, BOOL = GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.BOOL
NOT_INTEGER = "it must be an integer from 1 to 4096."
# id -> (key, (value, type[, array item type]), message, refused by the tokenizer loader too): the values a file
# stores in a type the key cannot have are refused wherever the file is read; impossible values where the config is.
MALFORMED = {
    "eps-nan": (
        "llama.attention.layer_norm_rms_epsilon",
        (math.nan, FLOAT32),
        "'llama.attention.layer_norm_rms_epsilon' must be a finite number above 0 and below 1, got nan.",
        False,
    ),
    "eps-string": (
        "llama.attention.layer_norm_rms_epsilon",
        ("1e-5", STRING),
        "layer_norm_rms_epsilon is stored as a string ('1e-5'); it must be a float above 0 and below 1.",
        True,
    ),
    "freq-base-inf": ("llama.rope.freq_base", (math.inf, FLOAT32), "must be a finite number above 0, got inf.", False),
    "context-2**63": (
        "llama.context_length",
        (2**63, UINT64),
        "'llama.context_length' must be between 1 and 1073741824, got 9223372036854775808.",
        False,
    ),
    "layers-float": ("llama.block_count", (2.5, FLOAT32), f"stored as a float (2.5); {NOT_INTEGER}", True),
    "layers-string": ("llama.block_count", ("2", STRING), f"stored as a string ('2'); {NOT_INTEGER}", True),
    "layers-array": (
        "llama.block_count",
        ([2, 2], ARRAY, UINT32),
        f"stored as an array of 2 integers ([2, 2]); {NOT_INTEGER}",
        True,
    ),
    "layers-bool": ("llama.block_count", (True, BOOL), f"stored as a bool (True); {NOT_INTEGER}", True),
    "heads-per-layer-floats": (
        "llama.attention.head_count",
        ([4.0, 4.0], ARRAY, FLOAT32),
        "stored as an array of 2 floats ([4.0, 4.0]); it must be an integer from 1 to 4096, or one per layer",
        True,
    ),
    "heads-per-layer-3-of-2": (
        "llama.attention.head_count",
        ([4, 4, 4], ARRAY, UINT32),
        "llama.attention.head_count holds 3 per-layer values, but llama.block_count is 2",
        False,
    ),
    "gating-float": (
        "llama.expert_gating_func",
        (1.0, FLOAT32),
        "llama.expert_gating_func is stored as a float (1.0); it must be an integer.",
        True,
    ),
    "bos-string": (
        "tokenizer.ggml.bos_token_id",
        ("1", STRING),
        "tokenizer.ggml.bos_token_id is stored as a string ('1'); it must be an integer.",
        True,
    ),
    "bos-out-of-range": (
        "tokenizer.ggml.bos_token_id",
        (2**32 - 1, UINT32),
        "tokenizer.ggml.bos_token_id is 4294967295; a token id must be from 0 to 31999",
        False,
    ),
    "tokens-integers": (
        "tokenizer.ggml.tokens",
        ([0, 1, 2], ARRAY, INT32),
        "tokenizer.ggml.tokens is stored as an array of 3 integers ([0, 1, 2]); it must be an array of strings.",
        True,
    ),
    "scores-strings": (
        "tokenizer.ggml.scores",
        (["0.0"], *STRING_ARRAY),
        "tokenizer.ggml.scores is stored as an array of 1 string (['0.0']); it must be an array of floats.",
        True,
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_metadata_is_refused_on_every_path(case, ggufs, work):
    key, stored, message, typed = MALFORMED[case]
    broken = rewrite(
        ggufs["mistral", "f32"], work / f"malformed-{case}.gguf", set_fields={key: stored}, drop_fields=NO_VOCABULARY
    )
    paths = {
        "AutoConfig": kit.AutoConfig.from_pretrained,
        "AutoModelForCausalLM": kit.AutoModelForCausalLM.from_pretrained,
        "load_model": lambda path: kit.load_model(path, "cpu"),
        "plan": lambda path: ModelShape.from_config(path, mistral_only=True),
    }
    if typed:
        paths["load_gguf_tokenizer"] = kit.load_gguf_tokenizer
    for name, load in paths.items():
        with pytest.raises(GGUFError) as refusal:
            load(broken)
        assert str(refusal.value).startswith(f"{broken}: "), name
        assert message in str(refusal.value), name


def test_one_value_per_layer_loads_as_llama_cpp_reads_it(ggufs, work):
    per_layer = {
        "llama.attention.head_count": ([4, 4], ARRAY, UINT32),
        "llama.feed_forward_length": ([128, 128], ARRAY),
    }
    path = rewrite(ggufs["mistral", "f32"], work / "per-layer.gguf", set_fields=per_layer, drop_fields=NO_VOCABULARY)
    config = kit.AutoConfig.from_pretrained(path)
    assert (config.num_attention_heads, config.intermediate_size) == (4, 128)


def test_the_kit_reads_what_the_gguf_package_reads(ggufs, work):
    """The kit's own header reader (`gguf_container`) against gguf.GGUFReader: every value and tensor, little- and
    big-endian files, float and quantized tensors."""
    big_endian = rewrite(ggufs["mixtral", "f32"], work / "big-endian.gguf", endianess=GGUFEndian.BIG)
    for path in (ggufs["mixtral", "q8_0"], ggufs["mistral", "f32"], big_endian):
        reference, read = GGUFReader(path), gguf_reader(path)
        assert read.fields == {k: f.contents() for k, f in reference.fields.items() if not k.startswith("GGUF.")}
        assert [t.name for t in read.tensors] == [t.name for t in reference.tensors]
        for ours, theirs in zip(read.tensors, reference.tensors, strict=True):
            assert (ours.tensor_type, list(ours.shape), ours.n_bytes) == (
                theirs.tensor_type,
                theirs.shape.tolist(),
                theirs.n_bytes,
            )
            assert ours.data.dtype == theirs.data.dtype and np.array_equal(ours.data, theirs.data)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ((2**40, b""), r"more than 2097152 keys and array entries"),
        (
            (1, entry("general.name", STRING, struct.pack("<Q", 2**40))),
            r"more than 64 MB of text \(at general\.name\)",
        ),
        ((1, entry("a", ARRAY, struct.pack("<IQ", ARRAY, 1))), r"a is an array of arrays, which llama\.cpp"),
        ((1, entry("a", ARRAY, struct.pack("<IQ", STRING, 2**20))), r"a is an array of 1048576 entries, more than"),
        ((1, entry("a", STRING, struct.pack("<Q", 2) + b"\xff\xfe")), r"a holds text that is not UTF-8"),
        ((1, entry("a", 13, b"")), r"a has GGUF value type 13, which does not exist"),
        ((2, entry("a", UINT32, b"\0" * 4) * 2), r"metadata key a appears twice"),
        ((1, entry("general.alignment", UINT32, struct.pack("<I", 24))), r"general\.alignment .*power of two"),
        ((1, entry("a", UINT32, b"")), r"is truncated or corrupted \(a ends past the end of the file\)"),
    ],
    ids=["keys", "text", "nested", "long-array", "utf-8", "type", "twice", "alignment", "truncated"],
)
def test_headers_are_bounded_before_anything_is_decoded(keys, message, work):
    with pytest.raises(GGUFError, match=message):
        gguf_reader(raw_gguf(work / "raw.gguf", keys))


def test_a_tensor_index_larger_than_any_mistral_models_is_refused_before_it_is_read(work):
    with pytest.raises(GGUFError, match=r"announces 1000000 tensors, more than any Mistral/Mixtral GGUF has"):
        gguf_reader(raw_gguf(work / "raw.gguf", (0, b""), tensors=1_000_000))


VOCABULARY_PROBE = """
import json, resource, sys, time
import hf_mistral_kit as kit
from hf_mistral_kit.planning.memory import ModelShape

def peak_kb():
    # Linux carries a process's peak RSS across exec, so ru_maxrss here starts at pytest's own; VmHWM is this image's.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

allowed, huge = sys.argv[1:]
results = {"allowed": (kit.AutoConfig.from_pretrained(allowed).vocab_size, peak_kb())}
for name, load in {
    "AutoConfig": kit.AutoConfig.from_pretrained,
    "AutoModelForCausalLM": kit.AutoModelForCausalLM.from_pretrained,
    "load_model": lambda path: kit.load_model(path, "cpu"),
    "plan": lambda path: ModelShape.from_config(path, mistral_only=True),
    "load_gguf_tokenizer": kit.load_gguf_tokenizer,
}.items():
    start = time.monotonic()
    try:
        load(huge)
        results[name] = ("loaded", time.monotonic() - start, peak_kb())
    except Exception as error:
        results[name] = (f"{type(error).__name__}: {error}", time.monotonic() - start, peak_kb())
print(json.dumps(results))
"""


def test_a_huge_vocabulary_is_refused_before_it_is_read(ggufs, work):
    """A 3,000,000-token vocabulary is refused from the header on every path, in bounded memory (the gguf package's
    reader took 5.6 GB and 150 s to fail); one of the largest vocabulary the kit accepts loads in bounded memory."""
    from hf_mistral_kit.formats.hyperparameters import MAX_VOCAB

    allowed = with_vocabulary(ggufs["mistral", "f32"], work / "vocabulary-allowed.gguf", MAX_VOCAB)
    huge = with_vocabulary(ggufs["mistral", "f32"], work / "vocabulary-3m.gguf", 3_000_000)
    probe = subprocess.run(
        [sys.executable, "-c", VOCABULARY_PROBE, str(allowed), str(huge)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    results = json.loads(probe.stdout.splitlines()[-1])
    assert max(result[-1] for result in results.values()) < 2**20, f"peak memory (KB) reached 1 GiB: {results}"
    assert results.pop("allowed")[0] == 32000  # llama.vocab_size; the tokens only pad the metadata
    for name, (outcome, *_) in results.items():
        assert outcome.startswith(
            f"GGUFError: {huge}: tokenizer.ggml.tokens is an array of 3000000 entries, more than the largest "
            f"vocabulary the kit accepts ({MAX_VOCAB})"
        ), name


# --- llama.cpp's mistral3 architecture (Ministral 3, Mistral Small 3.x text) and the family's others ----------------

# What llama.cpp's convert_hf_to_gguf.py writes for a ministral3 config (Mistral3Model.Ministral3Model: TextModel's YaRN
# keys, then the log multiplier from mscale_all_dim and llama 4's beta as the attention temperature scale).
MINISTRAL3_ROPE_KEYS = {
    "mistral3.rope.scaling.type": "yarn",
    "mistral3.rope.scaling.factor": 4.0,
    "mistral3.rope.scaling.original_context_length": 8,
    "mistral3.rope.scaling.yarn_beta_fast": 32.0,
    "mistral3.rope.scaling.yarn_beta_slow": 1.0,
    "mistral3.rope.scaling.yarn_log_multiplier": 1.0,
}


@pytest.fixture(scope="module")
def ministral3(work):
    """(HF ministral3 checkpoint, transformers' model of it, the GGUF the kit wrote from it)."""
    rope = {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 4.0,
        "original_max_position_embeddings": 8,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "llama_4_scaling_beta": 0.1,
    }
    directory = kit.tiny_model("ministral3", work / "hf-ministral3", tokenizer="v1", rope_parameters=rope)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    return directory, model, kit.convert_checkpoint(directory, work / "ministral3.gguf", to="gguf", dtype="f32")


def test_ministral3_is_written_as_llama_cpp_writes_it_and_reads_back_exactly(ministral3):
    directory, original, path = ministral3
    fields = read_gguf_metadata(path)
    assert fields["general.architecture"] == "mistral3"
    assert {key: fields.get(key) for key in MINISTRAL3_ROPE_KEYS} == MINISTRAL3_ROPE_KEYS
    assert fields["mistral3.attention.temperature_scale"] == pytest.approx(0.1)
    assert not any(key.startswith("llama.") for key in fields)
    model = kit.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type.endswith("ministral3")
    keys = ("rope_type", "rope_theta", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale")
    for key in (*keys, "mscale_all_dim", "llama_4_scaling_beta"):
        assert model.config.rope_parameters[key] == original.config.rope_parameters[key], key
    ids = torch.randint(0, 32000, (1, 40), generator=torch.Generator().manual_seed(4))  # 40 > 8: llama 4 scaling acts
    assert torch.equal(logits(model, ids), logits(original, ids))


def test_a_mistral3_file_without_yarn_is_a_mistral_small_3_text_model(originals, ggufs, work):
    """llama.cpp files Mistral Small 3.1/3.2's text model (a `mistral` text config) under mistral3 with llama's keys
    only: the kit reads it as mistral, exactly."""
    path = with_architecture(ggufs["mistral", "f32"], work / "small3.gguf", "mistral3")
    model = kit.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type.endswith("mistral") and model.config.rope_parameters["rope_type"] == "default"
    assert torch.equal(logits(model), logits(originals["mistral"][1]))


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"set_fields": {"mistral3.rope.scaling.yarn_log_multiplier": (0.0, FLOAT32)}}, r"yarn_log_multiplier is 0\.0"),
        ({"drop_fields": ("mistral3.rope.scaling.yarn_log_multiplier",)}, r"yarn_log_multiplier is None"),
        ({"set_fields": {"mistral3.rope.scaling.type": ("linear", STRING)}}, r"RoPE scaling 'linear'"),
        ({"set_fields": {"mistral3.rope.scaling.yarn_attn_factor": (1.0, FLOAT32)}}, r"yarn_attn_factor describes"),
        ({"drop_fields": ("mistral3.rope.scaling.original_context_length",)}, r"YaRN needs .*original_context_len"),
        ({"set_fields": {"mistral3.rope.scaling.factor": (-2.0, FLOAT32)}}, r"factor must be a finite number above 0"),
        (
            {"set_fields": {"mistral3.expert_count": (4, UINT32), "mistral3.expert_used_count": (2, UINT32)}},
            r"experts with YaRN",
        ),
        ({"set_fields": {"general.architecture": ("mistral4", STRING)}}, r"'mistral4' architecture, Mistral Small 4"),
        ({"set_fields": {"general.architecture": ("deepseek2", STRING)}}, r"Hugging Face release \(config\.json\)"),
    ],
    ids=[
        "log-multiplier",
        "no-log-multiplier",
        "linear",
        "attn-factor",
        "no-original",
        "factor",
        "experts",
        "mistral4",
        "deepseek2",
    ],
)
def test_mistral3_files_the_kit_cannot_map_exactly_are_refused(edits, message, ministral3, work):
    edits.setdefault("drop_fields", ())
    edits["drop_fields"] = (*edits["drop_fields"], *NO_VOCABULARY)
    edits["set_fields"] = {"general.architecture": ("mistral3", STRING), **edits.get("set_fields", {})}
    broken = rewrite(ministral3[2], work / "broken-mistral3.gguf", **edits)
    with pytest.raises(GGUFError, match=message):
        kit.AutoModelForCausalLM.from_pretrained(broken)


def test_llama_4_scaling_without_yarn_is_refused(ggufs, work):
    scale = {"mistral3.attention.temperature_scale": (0.1, FLOAT32)}
    path = with_architecture(ggufs["mistral", "f32"], work / "scale-only.gguf", "mistral3", set_fields=scale)
    with pytest.raises(GGUFError, match=r"temperature_scale without YaRN"):
        kit.AutoModelForCausalLM.from_pretrained(path)
    yarn = with_architecture(
        ggufs["mistral", "f32"],
        work / "llama-yarn.gguf",
        "llama",
        set_fields={"llama.rope.scaling.type": ("yarn", STRING)},
    )
    with pytest.raises(GGUFError, match=r"RoPE scaling \(yarn\) has no Mistral equivalent under llama\.cpp's llama"):
        kit.AutoModelForCausalLM.from_pretrained(yarn)
