"""load_tokenizer: a fast tokenizer equal to SentencePiece on any text, its files, saving and reloading."""

import json
import logging
import shutil
import subprocess
import sys

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from tokenizers import Tokenizer
from transformers import AutoTokenizer

import hf_mistral_kit as kit
from chats import conversations, plain_text, portable_corpus, reference_ids
from hf_mistral_kit.tokenizers.base import MistralTokenizerBase
from hf_mistral_kit.tokenizers.sentencepiece import MistralSentencePieceTokenizer, read_sentencepiece

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(plain_text)
def test_plain_encode_matches_sentencepiece(kit_tokenizers, reference_tokenizers, sample):
    for version in ("v1", "v2", "v3"):
        expected = reference_tokenizers[version].instruct_tokenizer.tokenizer.encode(sample, bos=True, eos=False)
        assert kit_tokenizers[version](sample, split_special_tokens=True)["input_ids"] == expected


@FUZZ
@given(plain_text)
def test_decode_matches_mistral_common(kit_tokenizers, reference_tokenizers, sample):
    for version, tokenizer in kit_tokenizers.items():
        reference = reference_tokenizers[version].instruct_tokenizer.tokenizer
        ids = reference.encode(sample, bos=True, eos=False)
        assert tokenizer.decode(ids, skip_special_tokens=True) == reference.decode(ids)
        if version == "v1":  # every run of text decodes like a fresh SentencePiece string
            assert tokenizer.decode(ids) == "<s>" + reference.decode(ids[1:])


def _sentencepiece(version: str, dummy_prefix: bool = True) -> spm.SentencePieceProcessor:
    proto = read_sentencepiece(kit.reference_tokenizer_file(version))
    proto.normalizer_spec.add_dummy_prefix = dummy_prefix
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_runs_of_spaces_and_segments_after_special_tokens(version, kit_tokenizers):
    """Every run length the fuzz rarely reaches, around words and newlines, and text after a special token."""
    sentencepiece, tokenizer = _sentencepiece(version), kit_tokenizers[version]
    for length in range(0, 260):
        for head, tail in (("", ""), ("a", ""), ("", "four"), ("x", "\n"), ("", ".")):
            text = head + " " * length + tail
            assert tokenizer.encode(text, add_special_tokens=False) == sentencepiece.encode(text), repr(text)
    # After a special token, v1 gives the text a dummy prefix of its own, v2/v3 do not.
    after_special = _sentencepiece(version, dummy_prefix=version == "v1")
    for text in ("hi", " hi", "  hi", "▁hi", " ", "\n x", "[REFERENCE_DOC_2] z"):
        assert tokenizer.encode("</s>" + text, add_special_tokens=False) == [2, *after_special.encode(text)], text


def test_user_defined_pieces_are_emitted_like_sentencepiece(kit_tokenizers):
    sentencepiece = spm.SentencePieceProcessor(model_file=str(kit.reference_tokenizer_file("v3")))
    tokenizer = kit_tokenizers["v3"]
    for text in [
        "[REFERENCE_DOC_1]",
        "a[REFERENCE_DOC_1]b",
        "[REFERENCE_DOC_3]x",
        "a [REFERENCE_DOC_10] b",
        "▁[REFERENCE_DOC_0]",
    ]:
        assert tokenizer.encode(text, add_special_tokens=False) == sentencepiece.encode(text), text
    # The one kind of text tokenizer.json alone gets wrong: one that starts with a user-defined piece (tokenizers
    # matches added tokens before it writes the dummy prefix). The kit's class corrects it; plain transformers does not.
    plain = Tokenizer.from_str(tokenizer._tokenizer.to_str())
    for text in ("[REFERENCE_DOC_1]", "[REFERENCE_DOC_3] x"):
        assert plain.encode(text, add_special_tokens=False).ids == sentencepiece.encode(text)[1:]


def test_a_real_fast_tokenizer(kit_tokenizers):
    tokenizer = kit_tokenizers["v3"]
    assert tokenizer.is_fast
    encoded = tokenizer(["Hello  world", "日本語"], return_offsets_mapping=True)
    assert encoded["offset_mapping"][0] == [(0, 0), (0, 5), (5, 6), (6, 12)]
    assert encoded.char_to_token(0, 7) == 3 and encoded.token_to_chars(0, 3) == (6, 12)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == ["<s>", "▁Hello", "▁", "▁world"]


@pytest.mark.parametrize(("version", "template"), [("v1", "mistral_v1"), ("v2", "mistral_v3"), ("v3", "mistral_v3")])
def test_files_get_the_matching_template(version, template, tmp_path):
    source = kit.reference_tokenizer_file(version)
    tokenizer = kit.load_tokenizer(source)
    assert isinstance(tokenizer, MistralSentencePieceTokenizer) and tokenizer.mistral_version == version
    assert tokenizer.chat_template == kit.get_chat_template(template)
    # A bare tokenizer.model in a checkpoint directory: version told by its vocabulary.
    shutil.copy(source, tmp_path / "tokenizer.model")
    assert kit.load_tokenizer(tmp_path).chat_template == kit.get_chat_template(template)


def test_openorca_style_directory_gets_chatml(tmp_path):
    shutil.copy(kit.reference_tokenizer_file("v1"), tmp_path / "tokenizer.model")
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|im_end|>": 32000, "<|im_start|>": 32001}))
    tokenizer = kit.load_tokenizer(tmp_path)
    assert tokenizer.chat_template == kit.get_chat_template("chatml")
    assert tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"]) == [32000, 32001]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)["input_ids"]
    assert ids[0] == 32001 and ids.count(32000) == 1  # no <s>: as the OpenOrca card renders it


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_saved_folder_holds_every_file_consumers_read(version, kit_tokenizers, tmp_path):
    kit_tokenizers[version].save_pretrained(tmp_path)
    names = {path.name for path in tmp_path.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenizer.model"} <= names
    assert f"tokenizer.model.{version}" in names
    for name in ("tokenizer.model", f"tokenizer.model.{version}"):
        assert (tmp_path / name).read_bytes() == kit.reference_tokenizer_file(version).read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["add_bos_token"], config["add_eos_token"], config["mistral_version"]) == (True, False, version)
    assert (tmp_path / "chat_template.jinja").read_text() == kit.get_chat_template(f"mistral_{version}")
    # mistral-common reads the version from the file name, as vLLM's mistral tokenizer mode does.
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.from_file(str(tmp_path / f"tokenizer.model.{version}"))
    assert reference.instruct_tokenizer.tokenizer.version.value == version


# A fresh interpreter that never imports hf_mistral_kit: what a user of plain transformers (vLLM, TRL, pipeline)
# gets from a folder the kit saved.
PLAIN_TRANSFORMERS = """
import json, sys
from transformers import AutoTokenizer
folder, cases = sys.argv[1], json.load(sys.stdin)
tokenizer = AutoTokenizer.from_pretrained(folder)
out = {"class": type(tokenizer).__name__, "fast": tokenizer.is_fast, "plain": [], "chats": []}
for text in cases["texts"]:
    out["plain"].append(tokenizer(text)["input_ids"])
for chat in cases["chats"]:
    ids = tokenizer.apply_chat_template(chat["messages"], tools=chat["tools"], tokenize=True,
                                        continue_final_message=chat["prefix"])
    out["chats"].append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
assert "hf_mistral_kit" not in sys.modules
print(json.dumps(out))
"""
SPELLINGS = ("[INST]", "[/INST]", "</s>", "<s>", "[TOOL_", "[AVAILABLE_TOOLS]", "[/AVAILABLE", "[IMG]", "<|im_", "[REF")


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_plain_transformers_reads_saved_folders_exactly(version, kit_tokenizers, reference_tokenizers, tmp_path):
    kit_tokenizer, reference = kit_tokenizers[version], reference_tokenizers[version]
    kit_tokenizer.save_pretrained(tmp_path)
    chats = [
        c
        for c in portable_corpus(conversations(tools=version == "v3"), 150, SPELLINGS, seed=1)
        if reference_ids(reference, *c)
    ]
    texts = ["  leading", "a\n\n b", "Hello world", "日本語 🙂", " ", "x" + " " * 20 + "y"]
    cases = {"texts": texts, "chats": [{"messages": m, "tools": t, "prefix": p} for m, t, p in chats]}
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(tmp_path)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(result.stdout)
    assert (out["class"], out["fast"]) == ("TokenizersBackend", True)
    assert out["plain"] == [kit_tokenizer(text)["input_ids"] for text in texts]
    assert len(chats) >= 60
    for (messages, tools, prefix), ids in zip(chats, out["chats"], strict=True):
        assert ids == reference_ids(reference, messages, tools, prefix), json.dumps([messages, tools, prefix])


def test_plain_transformers_reads_a_saved_chatml_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(kit.reference_tokenizer_file("v1"), source / "tokenizer.model")
    (source / "added_tokens.json").write_text(json.dumps({"<|im_end|>": 32000, "<|im_start|>": 32001}))
    tokenizer = kit.load_tokenizer(source)
    tokenizer.save_pretrained(tmp_path / "saved")
    chat = [{"role": "system", "content": "Be  brief."}, {"role": "user", "content": " Hi\n\nthere"}]
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(tmp_path / "saved")],
        input=json.dumps({"texts": ["  x"], "chats": [{"messages": chat, "tools": None, "prefix": False}]}),
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(result.stdout)
    assert out["chats"] == [tokenizer.apply_chat_template(chat)["input_ids"]]
    assert out["plain"] == [tokenizer("  x")["input_ids"]]


def test_reload_keeps_what_the_user_set(kit_tokenizers, tmp_path, caplog):
    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("v3"), padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.add_tokens(["<extra>"])
    custom = kit.get_chat_template("mistral_v3").replace("[INST]", "[INST] ")
    tokenizer.chat_template = custom
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hf_mistral_kit.tokenizers"):
        for reloaded in (kit.load_tokenizer(tmp_path), kit.AutoTokenizer.from_pretrained(tmp_path)):
            assert isinstance(reloaded, MistralSentencePieceTokenizer)
            assert (reloaded.pad_token, reloaded.pad_token_id) == ("<pad>", 32768)
            assert reloaded.convert_tokens_to_ids("<extra>") == 32769 and reloaded.padding_side == "left"
            assert reloaded.chat_template == custom
    assert "not one of hf-mistral-kit's verified templates" in caplog.text
    chat = [{"role": "user", "content": "Hi   [INST] x"}, {"role": "assistant", "content": "yo "}]
    plain = AutoTokenizer.from_pretrained(tmp_path)
    assert plain.pad_token == "<pad>" and plain.convert_tokens_to_ids("<extra>") == 32769
    assert kit.load_tokenizer(tmp_path).apply_chat_template(chat) == tokenizer.apply_chat_template(chat)


def test_hub_style_folder_gets_the_kit_template_and_keeps_its_added_tokens(tmp_path, caplog):
    """A checkpoint's own tokenizer.json and template (as Mistral publishes them) give way to the exact pipeline."""
    shutil.copy(kit.reference_tokenizer_file("v3"), tmp_path / "tokenizer.model.v3")
    kit.load_tokenizer(kit.reference_tokenizer_file("v3")).save_pretrained(tmp_path / "kit")
    shutil.copy(tmp_path / "kit" / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "chat_template": "{{ 1 }}"})
    )
    with caplog.at_level(logging.INFO, logger="hf_mistral_kit.tokenizers"):
        tokenizer = kit.load_tokenizer(tmp_path)
    assert tokenizer.chat_template == kit.get_chat_template("mistral_v3")
    assert "its own chat template is replaced" in caplog.text


def test_hf_only_directory_keeps_control_tokens_spelled_in_text(kit_tokenizers, tmp_path, caplog):
    kit_tokenizers["v3"].save_pretrained(tmp_path)
    for name in ("tokenizer.model", "tokenizer.model.v3"):
        (tmp_path / name).unlink()
    tokenizer = kit.load_tokenizer(tmp_path)
    assert isinstance(tokenizer, MistralSentencePieceTokenizer) and tokenizer.mistral_version == "v3"
    chat = [{"role": "user", "content": "</s>[INST] x"}]
    assert tokenizer.apply_chat_template(chat) == kit_tokenizers["v3"].apply_chat_template(chat)
    assert tokenizer.apply_chat_template(chat)["input_ids"].count(3) == 1  # only the template's [INST]


def test_v2_refuses_tools_instead_of_guessing(kit_tokenizers):
    chat = [{"role": "user", "content": "x"}]
    with pytest.raises(NotImplementedError, match="Tokenizer v2 .*encode_chat_completion"):
        kit_tokenizers["v2"].apply_chat_template(chat, tools=[{"type": "function", "function": {"name": "f"}}])


def test_hf_layout_mistral_checkpoint_gets_the_exact_tokenizer(tmp_path):
    shutil.copy(kit.reference_tokenizer_file("v1"), tmp_path / "tokenizer.model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tokenizer = kit.AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tokenizer, MistralSentencePieceTokenizer)
    assert tokenizer.chat_template == kit.get_chat_template("mistral_v1")


def test_bad_paths_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected tokenizer.model, tokenizer.model.v1/v2/v3/v7, tekken.json"):
        kit.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kit.load_tokenizer(tmp_path / "tokenizer.model.v3")
    with pytest.raises(ValueError, match="Unknown tokenizer version 'v9'"):
        kit.reference_tokenizer_file("v9")
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        kit.load_tokenizer(tmp_path)


def test_batches_and_single_calls_agree(kit_tokenizers):
    tokenizer = kit_tokenizers["v3"]
    texts = ["a  b", " c", "d\n\ne", "[REFERENCE_DOC_1]"]
    assert tokenizer(texts)["input_ids"] == [tokenizer(text)["input_ids"] for text in texts]
    assert [tokenizer.tokenize(text) for text in texts][-1] == ["▁", "[REFERENCE_DOC_1]"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_attention_mask": False},
        {"return_attention_mask": True, "return_token_type_ids": True},
        {"padding": True},
        {"padding": "max_length", "max_length": 12, "truncation": True, "padding_side": "left"},
        {"truncation": True, "max_length": 4, "return_overflowing_tokens": True, "stride": 1},
        {"truncation": True, "max_length": 4, "return_overflowing_tokens": True, "padding": True},
        {"return_offsets_mapping": True, "return_special_tokens_mask": True, "return_length": True},
        {"padding": True, "return_tensors": "np"},
    ],
)
@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("inputs", [None, ["input_ids"], ["input_ids", "token_type_ids", "attention_mask"]])
def test_plain_calls_return_what_transformers_conversion_returns(monkeypatch, options, single, inputs):
    """The kit's short conversion of backend encodings (all-ones masks written in Python) changes nothing, also for
    a tokenizer whose model_input_names the user changed."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("v3"), pad_token="<unk>")
    if inputs is not None:
        tokenizer.model_input_names = inputs
    texts = "Hello  world, and more words" if single else ["a  b", " c d e f g h", "[REFERENCE_DOC_1] x", "日本語"]
    ours = tokenizer(texts, **options)
    monkeypatch.setattr(MistralTokenizerBase, "_convert_encoding", TokenizersBackend._convert_encoding)
    theirs = tokenizer(texts, **options)
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert json.dumps(ours[key].tolist() if options.get("return_tensors") else ours[key]) == json.dumps(
            theirs[key].tolist() if options.get("return_tensors") else theirs[key]
        ), key
    assert [e.ids for e in ours.encodings] == [e.ids for e in theirs.encodings]
    assert [e.attention_mask for e in ours.encodings] == [e.attention_mask for e in theirs.encodings]
    if "attention_mask" in theirs and options.get("padding") and (not single or options["padding"] == "max_length"):
        masks = [ours["attention_mask"]] if single else ours["attention_mask"]
        assert any(0 in mask for mask in masks)  # the masks read from the backend were used


def test_tiny_converted_and_load_model_folders_read_exactly_without_the_kit(tmp_path):
    """tiny_model(), convert_checkpoint(to="hf") and a load_model tokenizer saved again: each folder, read by plain
    transformers in a fresh process, encodes like the kit."""
    native = kit.tiny_model("mistral", tmp_path / "native", native=True, tokenizer="v3")
    converted = kit.convert_checkpoint(native, tmp_path / "converted", to="hf")
    _, tokenizer = kit.load_model(kit.tiny_model("mistral", tmp_path / "hf"), preset="cpu")
    tokenizer.save_pretrained(tmp_path / "after-load-model")
    chat = [{"role": "system", "content": "Be  brief."}, {"role": "user", "content": " Hi\n\nthere"}]
    for folder, pad in ((native, None), (converted, None), (tmp_path / "after-load-model", "<unk>")):
        expected = kit.AutoTokenizer.from_pretrained(folder)
        result = subprocess.run(
            [sys.executable, "-c", PLAIN_TRANSFORMERS, str(folder)],
            input=json.dumps({"texts": ["  x y"], "chats": [{"messages": chat, "tools": None, "prefix": False}]}),
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(result.stdout)
        assert out["chats"] == [expected.apply_chat_template(chat)["input_ids"]], folder
        assert out["plain"] == [expected("  x y")["input_ids"]], folder
        assert expected.pad_token == pad
