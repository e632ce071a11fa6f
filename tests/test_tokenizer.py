"""load_tokenizer: which files it takes, plain encoding parity, decoding, saving and reloading."""

import json
import shutil

import pytest
from hypothesis import given, settings
from transformers import AutoTokenizer

import hf_mistral_kit as kit
from chats import text
from hf_mistral_kit.tokenizer import MistralSentencePieceTokenizer


@settings(max_examples=200, deadline=None)
@given(text)
def test_plain_encode_matches_mistral_common(kit_tokenizers, reference_tokenizers, sample):
    for version in ("v1", "v2", "v3"):
        expected = reference_tokenizers[version].instruct_tokenizer.tokenizer.encode(sample, bos=True, eos=False)
        assert kit_tokenizers[version](sample, split_special_tokens=True)["input_ids"] == expected


@settings(max_examples=100, deadline=None)
@given(text)
def test_decode_matches_mistral_common(kit_tokenizers, reference_tokenizers, sample):
    for version, tokenizer in kit_tokenizers.items():
        reference = reference_tokenizers[version].instruct_tokenizer.tokenizer
        ids = reference.encode(sample, bos=True, eos=False)
        assert tokenizer.decode(ids, skip_special_tokens=True) == reference.decode(ids)
        if version == "v1":  # every run of text decodes like a fresh SentencePiece string
            assert tokenizer.decode(ids) == "<s>" + reference.decode(ids[1:])


@pytest.mark.parametrize(("version", "template"), [("v1", "mistral_v1"), ("v2", "mistral_v3"), ("v3", "mistral_v3")])
def test_files_get_the_matching_template(version, template, tmp_path):
    source = kit.reference_tokenizer_file(version)
    tokenizer = kit.load_tokenizer(source)
    assert isinstance(tokenizer, MistralSentencePieceTokenizer)
    assert tokenizer.chat_template == kit.get_chat_template(template)
    # A bare tokenizer.model in a checkpoint directory: version told by its vocabulary.
    shutil.copy(source, tmp_path / "tokenizer.model")
    assert kit.load_tokenizer(tmp_path).chat_template == kit.get_chat_template(template)


def test_save_and_reload_keeps_ids(kit_tokenizers, tmp_path):
    chat = [{"role": "user", "content": "Hi  [INST] there"}, {"role": "assistant", "content": "Yo"}]
    tokenizer = kit_tokenizers["v3"]
    tokenizer.save_pretrained(tmp_path)
    reloaded = kit.load_tokenizer(tmp_path)
    assert reloaded.apply_chat_template(chat)["input_ids"] == tokenizer.apply_chat_template(chat)["input_ids"]


def test_openorca_style_directory_gets_chatml(tmp_path):
    shutil.copy(kit.reference_tokenizer_file("v1"), tmp_path / "tokenizer.model")
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|im_end|>": 32000, "<|im_start|>": 32001}))
    tokenizer = kit.load_tokenizer(tmp_path)
    assert tokenizer.chat_template == kit.get_chat_template("chatml")
    assert tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"]) == [32000, 32001]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)["input_ids"]
    assert ids[0] == 32001 and ids.count(32000) == 1  # no <s>: as the OpenOrca card renders it


def test_hf_only_directory_uses_autotokenizer(kit_tokenizers, tmp_path):
    fast = AutoTokenizer.from_pretrained(str(_save_fast(kit_tokenizers["v1"], tmp_path)))
    tokenizer = kit.load_tokenizer(tmp_path)
    assert type(tokenizer) is type(fast)
    assert tokenizer.chat_template == kit.get_chat_template("mistral_v1")


def _save_fast(tokenizer, path):
    from transformers import LlamaTokenizer

    LlamaTokenizer(vocab_file=tokenizer.vocab_file).save_pretrained(path)
    (path / "tokenizer.model").unlink(missing_ok=True)
    return path


def test_bad_paths_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected tokenizer.model, tokenizer.model.v1/v2/v3"):
        kit.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kit.load_tokenizer(tmp_path / "tokenizer.model.v3")
    with pytest.raises(ValueError, match="tekken tokenizer .* MistralCommonBackend"):
        kit.load_tokenizer(kit.tokenizer.MISTRAL_COMMON_DATA / "tekken_240718.json")
    with pytest.raises(ValueError, match="Unknown tokenizer version 'v9'"):
        kit.reference_tokenizer_file("v9")


def test_v2_refuses_tools_instead_of_guessing(kit_tokenizers):
    chat = [{"role": "user", "content": "x"}]
    with pytest.raises(NotImplementedError, match="Tokenizer v2 .*encode_chat_completion"):
        kit_tokenizers["v2"].apply_chat_template(chat, tools=[{"type": "function", "function": {"name": "f"}}])


def test_saved_tokenizer_reloads_exactly_through_both_auto_classes(kit_tokenizers, tmp_path):
    chat = [{"role": "user", "content": "Hi   [INST] x"}, {"role": "assistant", "content": "yo "}]
    tokenizer = kit_tokenizers["v3"]
    tokenizer.save_pretrained(tmp_path)
    for auto in (AutoTokenizer, kit.AutoTokenizer):
        reloaded = auto.from_pretrained(tmp_path)
        assert isinstance(reloaded, MistralSentencePieceTokenizer) and reloaded.legacy is False
        assert reloaded.apply_chat_template(chat)["input_ids"] == tokenizer.apply_chat_template(chat)["input_ids"]


def test_hf_layout_mistral_checkpoint_gets_the_exact_tokenizer(tmp_path):
    shutil.copy(kit.reference_tokenizer_file("v1"), tmp_path / "tokenizer.model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tokenizer = kit.AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tokenizer, MistralSentencePieceTokenizer)
    assert tokenizer.chat_template == kit.get_chat_template("mistral_v1")
