"""The kit's tekken tokenizer (Mistral-Nemo and later) and SentencePiece v7: plain encoding equal to mistral-common's
encoders on any text, decoding equal to its decoding on any ids, the special-token id space, saving, reloading, what
plain transformers reads from a saved folder, and the load paths (files, folders, checkpoints, load_model)."""

import json
import logging
import re
import shutil
import subprocess
import sys

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

import hf_mistral_kit as kit
from chats import conversations, plain_text, portable_corpus, reference_ids
from hf_mistral_kit.tokenizers.tekken import MistralTekkenTokenizer
from tekken_files import BACKTRACKS, CRAFTED, crafted

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


def _tekken(pair):
    tokenizer, reference = pair
    return tokenizer, reference.instruct_tokenizer.tokenizer


# --- plain encoding and decoding ------------------------------------------------------------------------------


@FUZZ
@given(plain_text)
def test_plain_encode_matches_tiktoken(tokenizer_pair, sample):
    tokenizer, tekken = _tekken(tokenizer_pair("tekken-v3"))
    assert tokenizer(sample, split_special_tokens=True)["input_ids"] == tekken.encode(sample, bos=True, eos=False)


@FUZZ
@given(plain_text)
def test_plain_encode_matches_sentencepiece_v7(tokenizer_pair, sample):
    tokenizer, reference = tokenizer_pair("v7")
    expected = reference.instruct_tokenizer.tokenizer.encode(sample, bos=True, eos=False)
    assert tokenizer(sample, split_special_tokens=True)["input_ids"] == expected
    assert tokenizer.decode(expected, skip_special_tokens=True) == reference.instruct_tokenizer.tokenizer.decode(
        expected
    )


# Any ids: special ones (named and fillers), single bytes (so invalid UTF-8 sequences, also split by special tokens),
# and the rest of the vocabulary.
any_ids = st.lists(
    st.integers(0, 40) | st.integers(1000, 1255) | st.integers(1256, 131071),
    max_size=24,
)


@FUZZ
@given(any_ids)
def test_decode_matches_mistral_common_on_any_ids(tokenizer_pair, ids):
    for name in ("tekken-v3", "tekken-v13"):
        tokenizer, tekken = _tekken(tokenizer_pair(name))
        assert tokenizer.decode(ids, skip_special_tokens=True) == tekken.decode(ids, SpecialTokenPolicy.IGNORE)
        assert tokenizer.decode(ids) == tekken.decode(ids, SpecialTokenPolicy.KEEP)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(plain_text)
def test_text_round_trips(tokenizer_pair, sample):
    tokenizer, _ = tokenizer_pair("tekken-v3")
    assert tokenizer.decode(tokenizer(sample, split_special_tokens=True)["input_ids"], skip_special_tokens=True) == (
        sample
    )


def test_runs_of_one_piece_merge_as_tiktoken_does(tokenizer_pair):
    """BPE tie-breaking: runs of one character (or piece) of every length up to 120 give tiktoken's merges."""
    tokenizer, tekken = _tekken(tokenizer_pair("tekken-v3"))
    texts = [
        piece * length
        for piece in (" ", "=", "-", "a", "0", "\n", "\t", "!", ".", "*", "é", "日", "🙂", "ab", "=-", " a", "\r\n")
        for length in range(1, 121)
    ]
    encoded = tokenizer(texts, split_special_tokens=True, add_special_tokens=False)["input_ids"]
    assert encoded == [tekken.encode(text, bos=False, eos=False) for text in texts]


def test_code_points_in_context_match_tiktoken(tokenizer_pair):
    """Every 61st code point (every one in the note's run) between letters, digits, spaces and newlines: the
    pre-tokenizer regex's Unicode classes (\\p{L}, \\p{N}, \\s ...) are tiktoken's."""
    tokenizer, tekken = _tekken(tokenizer_pair("tekken-v3"))
    points = [c for c in range(0, 0x110000, 61) if not 0xD800 <= c < 0xE000]
    texts = [f"x{chr(c)}Ab{chr(c)}{chr(c)} 1{chr(c)}\n{chr(c)} {chr(c)}a" for c in points]
    encoded = tokenizer(texts, split_special_tokens=True, add_special_tokens=False)["input_ids"]
    assert encoded == [tekken.encode(text, bos=False, eos=False) for text in texts]


def test_special_tokens_and_offsets(tokenizer_pair):
    tokenizer, _ = tokenizer_pair("tekken-v13")
    assert tokenizer.is_fast and len(tokenizer) == 131072
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "[INST]", "<pad>", "[TOOL_CONTENT]"]) == [
        0,
        1,
        2,
        3,
        11,
        19,
    ]
    assert tokenizer.convert_tokens_to_ids(["[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]", "<SPECIAL_999>"]) == [
        32,
        33,
        34,
        35,
        999,
    ]
    assert tokenizer("[INST] hi")["input_ids"] == [1, 3, 14994]  # a plain call matches special tokens, as HF does
    assert tokenizer("[INST] hi", split_special_tokens=True)["input_ids"] == [1, 1091, 3174, 3074, 1093, 14994]
    encoded = tokenizer(["Hello  world", "日本語"], return_offsets_mapping=True)
    assert encoded["input_ids"] == [[1, 22177, 1032, 4304], [1, 10008, 15199]]
    assert encoded["offset_mapping"] == [[(0, 0), (0, 5), (5, 6), (6, 12)], [(0, 0), (0, 2), (2, 3)]]
    assert encoded.word_ids(0) == [None, 0, 1, 2] and encoded.char_to_token(0, 7) == 3


def test_a_rendered_conversation_decodes_to_its_text(tokenizer_pair):
    tokenizer, _ = tokenizer_pair("tekken-v13")
    chat = [
        {"role": "system", "content": "Be  brief. 日本語"},
        {"role": "user", "content": "Hi [INST] there"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Yo"}]},
    ]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert (
        text
        == "<s>[SYSTEM_PROMPT]Be  brief. 日本語[/SYSTEM_PROMPT][INST]Hi [INST] there[/INST][THINK]hmm[/THINK]Yo</s>"
    )
    assert tokenizer.decode(tokenizer.apply_chat_template(chat)["input_ids"]) == text


# --- what the kit refuses -------------------------------------------------------------------------------------


def _tekken_file(tmp_path, name, edit):
    data = json.loads(kit.reference_tokenizer_file("tekken").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_versions_and_files_the_kit_does_not_template_are_refused_with_the_fix(tmp_path, mistral_file):
    later = _tekken_file(tmp_path, "v99.tekken.json", lambda d: d["config"].update(version="v99"))
    with pytest.raises(ValueError, match="version 'v99'.*MistralCommonBackend"):
        kit.load_tokenizer(later)
    no_specials = _tekken_file(tmp_path, "v11.tekken.json", lambda d: d["config"].update(version="v11"))
    with pytest.raises(ValueError, match="without its special_tokens list"):
        kit.load_tokenizer(no_specials)
    with pytest.raises(ValueError):  # mistral-common refuses it too
        MistralTokenizer.from_file(str(no_specials))
    specials = json.loads(mistral_file("tekken-v11").read_text(encoding="utf-8"))["special_tokens"]
    no_args = [token for token in specials if token["token_str"] != "[ARGS]"]
    no_args.append({"rank": 32, "token_str": "<SPECIAL_32>", "is_control": True})

    def without_args(data):
        data["config"]["version"] = "v13"
        data["special_tokens"] = no_args

    missing = _tekken_file(tmp_path, "no-args.tekken.json", without_args)
    with pytest.raises(ValueError, match=r"without the control tokens \[ARGS\]"):
        kit.load_tokenizer(missing)
    (tmp_path / "bad.tekken.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a tekken tokenizer file"):
        kit.load_tokenizer(tmp_path / "bad.tekken.json")


# --- tokenizer v15: the file's model_settings_builder ------------------------------------------------------------

SMALL_4 = {"reasoning_effort": {"type": "enum", "accepts_none": True, "default": "none", "values": ["none", "high"]}}
HI = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]


def _v15_file(tmp_path, mistral_file, name, edit):
    data = json.loads(mistral_file("tekken-v15").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / f"tekken_{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _reference_encodes(path, **request):
    """Whether mistral-common loads the file and encodes HI with it."""
    try:
        return reference_ids(MistralTokenizer.from_file(str(path)), HI, **request) is not None
    except Exception:
        return False


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("no-builder", lambda d: d.pop("model_settings_builder"), "without its model_settings_builder"),
        (
            "v13-with-builder",
            lambda d: d["config"].update(version="v13"),
            "v13 file with a model_settings_builder, which tokenizer v15 introduced",
        ),
        (
            "no-default",
            lambda d: d["model_settings_builder"]["reasoning_effort"].update(default=None),
            "its model_settings_builder is not one mistral-common reads",
        ),
        (
            "default-not-a-value",
            lambda d: d["model_settings_builder"]["reasoning_effort"].update(default="low"),
            "its model_settings_builder is not one mistral-common reads",
        ),
        (
            "unknown-effort",
            lambda d: d["model_settings_builder"]["reasoning_effort"].update(values=["none", "turbo"]),
            "its model_settings_builder is not one mistral-common reads",
        ),
        ("no-reasoning-effort", lambda d: d.update(model_settings_builder={}), "has no reasoning_effort"),
        (
            "json-schema",
            lambda d: d["model_settings_builder"].update(json_schema={"type": "json_schema", "accepts_none": False}),
            "has json_schema (response_format as model settings)",
        ),
    ],
)
def test_v15_model_settings_builders_the_kit_refuses_name_the_fix(name, edit, message, tmp_path, mistral_file):
    """A v15 file must carry a builder mistral-common reads, and a file before v15 none (mistral-common refuses to load
    those, or loads a v15 file without one and then refuses every conversation); the builders the kit does not render
    (no reasoning_effort, or response_format as model settings) are sent to MistralCommonBackend."""
    path = _v15_file(tmp_path, mistral_file, name, edit)
    with pytest.raises(kit.TokenizerFileError, match=re.escape(message)) as raised:
        kit.load_tokenizer(path)
    assert str(path) in str(raised.value)
    assert ("use the model's own tekken.json" in str(raised.value)) != ("MistralCommonBackend" in str(raised.value))
    if name in ("no-reasoning-effort", "json-schema"):  # mistral-common renders these (not Mistral's files)
        assert _reference_encodes(path)
    else:
        assert not _reference_encodes(path)


def test_v15_reasoning_effort_given_default_and_refused_as_mistral_common(tokenizer_pair):
    from mistral_common.protocol.instruct.request import ReasoningEffort

    tokenizer, reference = tokenizer_pair("tekken-v15")
    assert tokenizer.model_settings_builder == SMALL_4
    for effort in (None, "none", "high", ReasoningEffort.high):
        ids = tokenizer.apply_chat_template(HI, reasoning_effort=effort)["input_ids"]
        assert ids == reference_ids(reference, HI, reasoning_effort=effort)
    text = tokenizer.apply_chat_template(HI, tokenize=False)
    settings = '[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS]'
    assert text == f"<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT]{settings}[INST]Hi[/INST]"
    assert '{"reasoning_effort": "high"}' in tokenizer.apply_chat_template(HI, tokenize=False, reasoning_effort="high")
    # A conversation that spells the block keeps it as text: the model settings are the caller's argument only.
    spelled = [{"role": "user", "content": '[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS]'}]
    ids = tokenizer.apply_chat_template(spelled)["input_ids"]
    assert ids == reference_ids(reference, spelled)
    assert ids.count(tokenizer.convert_tokens_to_ids("[MODEL_SETTINGS]")) == 1
    for effort, shown in (("low", "'low'"), ("bogus", "'bogus'"), ("HIGH", "'HIGH'"), (5, "a int")):
        with pytest.raises(kit.ConversationError, match=re.escape(f"should be one of ['none', 'high'], got {shown}.")):
            tokenizer.apply_chat_template(HI, reasoning_effort=effort)
        assert reference_ids(reference, HI, reasoning_effort=effort) is None
    with pytest.raises(
        kit.ConversationError, match=re.escape("reasoning_effort should be one of ['none', 'high'], got 'low'.")
    ):
        kit.render(HI, "mistral_tekken_v15", reasoning_effort="low")


@pytest.mark.parametrize("name", ["v7", "tekken-v3", "tekken-v11", "tekken-v13"])
def test_reasoning_effort_is_refused_below_v15_as_mistral_common_does(name, tokenizer_pair):
    tokenizer, reference = tokenizer_pair(name)
    assert tokenizer.model_settings_builder is None
    assert tokenizer.apply_chat_template(HI, reasoning_effort=None) == tokenizer.apply_chat_template(HI)
    for effort in ("none", "high"):
        with pytest.raises(
            kit.ConversationError, match=rf"reasoning_effort='{effort}' is not supported .* Fix: Drop reasoning_effort"
        ):
            tokenizer.apply_chat_template(HI, reasoning_effort=effort)
        assert reference_ids(reference, HI, reasoning_effort=effort) is None
    template = tokenizer.kit_template
    with pytest.raises(kit.ConversationError, match=f"{template}: tokenizer .* has no model settings"):
        kit.render(HI, template, reasoning_effort="high")


def test_v15_values_and_default_come_from_the_file(tmp_path, mistral_file):
    """Any builder mistral-common reads: its default when reasoning_effort is not given, its values allowed, the rest
    refused with its list; the template renders whatever the file allows."""

    def builder(data):
        data["model_settings_builder"]["reasoning_effort"].update(default="medium", values=["low", "medium", "max"])

    path = _v15_file(tmp_path, mistral_file, "other-builder", builder)
    tokenizer, reference = kit.load_tokenizer(path), MistralTokenizer.from_file(str(path))
    assert tokenizer.model_settings_builder["reasoning_effort"]["values"] == ["low", "medium", "max"]
    assert '{"reasoning_effort": "medium"}' in tokenizer.apply_chat_template(HI, tokenize=False)
    for effort in (None, "low", "medium", "max"):
        ids = tokenizer.apply_chat_template(HI, reasoning_effort=effort)["input_ids"]
        assert ids == reference_ids(reference, HI, reasoning_effort=effort)
    for effort in ("none", "high"):
        with pytest.raises(kit.ConversationError, match=re.escape(f"['low', 'medium', 'max'], got '{effort}'")):
            tokenizer.apply_chat_template(HI, reasoning_effort=effort)
        assert reference_ids(reference, HI, reasoning_effort=effort) is None


def test_v15_saved_folders_keep_the_files_model_settings(tokenizer_pair, mistral_file, tmp_path):
    tokenizer, reference = tokenizer_pair("tekken-v15")
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (config["mistral_version"], config["model_settings_builder"]) == ("v15", SMALL_4)
    assert (tmp_path / "chat_template.jinja").read_text() == kit.get_chat_template("mistral_tekken_v15")
    assert (tmp_path / "tekken.json").read_bytes() == mistral_file("tekken-v15").read_bytes()
    chat = [*HI, {"role": "assistant", "content": "yo "}, {"role": "user", "content": "[MODEL_SETTINGS] x"}]
    expected = reference_ids(reference, chat, reasoning_effort="high")
    assert kit.load_tokenizer(tmp_path).apply_chat_template(chat, reasoning_effort="high")["input_ids"] == expected
    (tmp_path / "tekken.json").unlink()  # tokenizer.json alone: the builder comes from tokenizer_config.json
    reloaded = kit.load_tokenizer(tmp_path)
    assert reloaded.model_settings_builder == SMALL_4 and reloaded.mistral_version == "v15"
    assert reloaded.apply_chat_template(chat, reasoning_effort="high")["input_ids"] == expected
    with pytest.raises(kit.ConversationError, match="got 'low'"):
        reloaded.apply_chat_template(chat, reasoning_effort="low")


# issue 19: crafted tekken.json files (tests/tekken_files.py) end in TokenizerFileError naming what is wrong, in
# bounded memory.
@pytest.mark.parametrize("name", [name for name in CRAFTED if name != "backtrack"])
def test_crafted_tekken_files_are_refused_with_a_typed_error(name, tmp_path):
    path = crafted(name, tmp_path)
    with pytest.raises(kit.TokenizerFileError, match=re.escape(CRAFTED[name][1])) as raised:
        kit.load_tokenizer(path)
    assert str(path) in str(raised.value)
    if name != "specials-1e9":  # mistral-common allocates ~20 GB of names for it
        with pytest.raises(Exception):  # noqa: B017 - mistral-common refuses each too (TypeError, ValueError ...)
            MistralTokenizer.from_file(str(path))


def test_a_pattern_that_backtracks_without_end_is_a_typed_error_not_a_panic(tmp_path):
    """tokenizers' Oniguruma stops the crafted pattern (a pyo3 PanicException, which `except Exception` misses);
    mistral-common's tiktoken encodes the text."""
    tokenizer = kit.load_tokenizer(crafted("backtrack", tmp_path))
    for encode in (
        lambda: tokenizer.apply_chat_template([{"role": "user", "content": BACKTRACKS}]),
        lambda: tokenizer(BACKTRACKS),
        lambda: tokenizer([BACKTRACKS, "b"]),
    ):
        with pytest.raises(kit.TokenizerFileError, match=re.escape(CRAFTED["backtrack"][1])):
            encode()
    assert tokenizer("aaa")["input_ids"]  # other text still encodes


def test_a_template_for_the_other_kind_of_tokenizer_is_refused(tokenizer_pair):
    tekken, _ = tokenizer_pair("tekken-v7")
    sentencepiece, _ = tokenizer_pair("v7")
    chat = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="mistral_v7 is written for Mistral's SentencePiece.*Use mistral_tekken_v7"):
        tekken.apply_chat_template(chat, chat_template=kit.get_chat_template("mistral_v7"))
    with pytest.raises(ValueError, match="mistral_tekken_v7 is written for Mistral's tekken.*Use mistral_v7"):
        sentencepiece.apply_chat_template(chat, chat_template=kit.get_chat_template("mistral_tekken_v7"))
    assert tekken.apply_chat_template(chat, chat_template=kit.get_chat_template("chatml"), tokenize=False)


# --- saving and reloading -------------------------------------------------------------------------------------


def test_saved_folder_holds_every_file_consumers_read(tokenizer_pair, mistral_file, tmp_path):
    tokenizer, _ = tokenizer_pair("tekken-v13")
    tokenizer.save_pretrained(tmp_path)
    names = {path.name for path in tmp_path.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tekken.json"} <= names
    assert (tmp_path / "tekken.json").read_bytes() == mistral_file("tekken-v13").read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["add_bos_token"], config["add_eos_token"], config["mistral_version"]) == (True, False, "v13")
    assert (tmp_path / "chat_template.jinja").read_text() == kit.get_chat_template("mistral_tekken_v13")
    reference = MistralTokenizer.from_file(str(tmp_path / "tekken.json"))  # what vLLM's mistral mode reads
    assert reference.instruct_tokenizer.tokenizer.version.value == "v13"
    reloaded = kit.load_tokenizer(tmp_path)
    assert isinstance(reloaded, MistralTekkenTokenizer) and reloaded.mistral_version == "v13"
    chat = [{"role": "user", "content": "Hi   [INST] x"}, {"role": "assistant", "content": "yo "}]
    assert reloaded.apply_chat_template(chat) == tokenizer.apply_chat_template(chat)


def test_reload_keeps_what_the_user_set_and_added_tokens_keep_tekken_json_out(tokenizer_pair, tmp_path, caplog):
    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("tekken"), padding_side="left")
    tokenizer.pad_token = "<pad>"
    tokenizer.add_tokens(["<extra>"])
    with caplog.at_level(logging.WARNING, logger="hf_mistral_kit.tokenizers"):
        tokenizer.save_pretrained(tmp_path)
    assert "tekken.json is not saved: it cannot hold the 1 token(s) added" in caplog.text
    assert not (tmp_path / "tekken.json").exists()
    for reloaded in (kit.load_tokenizer(tmp_path), kit.AutoTokenizer.from_pretrained(tmp_path)):
        assert isinstance(reloaded, MistralTekkenTokenizer) and reloaded.mistral_version == "v3"
        assert (reloaded.pad_token, reloaded.pad_token_id, reloaded.padding_side) == ("<pad>", 11, "left")
        assert reloaded.convert_tokens_to_ids("<extra>") == 131072
        assert reloaded.chat_template == kit.get_chat_template("mistral_tekken_v3")
    chat = [{"role": "user", "content": "<extra> [INST]"}]
    assert kit.load_tokenizer(tmp_path).apply_chat_template(chat) == tokenizer.apply_chat_template(chat)


def test_hf_only_tekken_folder_of_unknown_version_keeps_its_template(tmp_path, caplog):
    kit.load_tokenizer(kit.reference_tokenizer_file("tekken")).save_pretrained(tmp_path)
    (tmp_path / "tekken.json").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["mistral_version"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}")
    with caplog.at_level(logging.WARNING, logger="hf_mistral_kit.tokenizers"):
        tokenizer = kit.load_tokenizer(tmp_path)
    assert "its tekken version (v3, v7, v11, v13, v15), which decides Mistral's chat format, is unknown" in caplog.text
    assert isinstance(tokenizer, MistralTekkenTokenizer) and tokenizer.mistral_version is None
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "</s>x"}])["input_ids"]
    assert ids == [1, *tokenizer.encode("</s>x", add_special_tokens=False, split_special_tokens=True)]


# A fresh interpreter that never imports hf_mistral_kit: what plain transformers (and vLLM's default mode, TRL ...)
# get from a folder the kit saved.
PLAIN_TRANSFORMERS = """
import json, sys
import transformers
folder, how, cases = sys.argv[1], sys.argv[2], json.load(sys.stdin)
if how == "fast":
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(folder)
else:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
out = {"class": type(tokenizer).__name__, "plain": [], "chats": []}
for text in cases["texts"]:
    out["plain"].append(tokenizer(text)["input_ids"])
for chat in cases["chats"]:
    effort = {"reasoning_effort": chat["effort"]} if chat.get("effort") else {}
    ids = tokenizer.apply_chat_template(
        chat["messages"], tools=chat["tools"], continue_final_message=chat["prefix"], **effort
    )
    out["chats"].append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
assert "hf_mistral_kit" not in sys.modules
print(json.dumps(out))
"""
SPELLINGS = (
    "[INST]",
    "[/INST]",
    "</s>",
    "<s>",
    "[TOOL_",
    "[AVAILABLE",
    "[/AVAILABLE",
    "[SYSTEM",
    "[/SYSTEM",
    "[THINK",
    "[MODEL_SETTINGS",
    "[/MODEL_SETTINGS",
)


def _plain(folder, how, cases):
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(folder), how],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", ["tekken-v7", "tekken-v13", "tekken-v15"])
def test_plain_transformers_reads_saved_folders_exactly(name, tokenizer_pair, tmp_path):
    """A tokenizer folder loads as the fast tokenizer with the kit's template; a model folder (config.json of a
    Mistral model) holding tekken.json loads, in transformers with mistral-common installed, as transformers'
    MistralCommonBackend, i.e. mistral-common itself; PreTrainedTokenizerFast.from_pretrained gives the fast one.
    v15: `reasoning_effort` given (or not: the file's default, which the saved template falls back on) reaches the
    saved template as transformers passes template variables."""
    tokenizer, reference = tokenizer_pair(name)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    chats = [
        c
        for c in portable_corpus(conversations(tools=True, version=name), 40, SPELLINGS, results_as_json=False)
        if reference_ids(reference, *c)
    ]
    efforts = [[None, "none", "high"][i % 3] if name == "tekken-v15" else None for i in range(len(chats))]
    prompts = [(c, e) for c, e in zip(chats, efforts, strict=True) if c[0][-1]["role"] != "assistant" or c[2]]
    texts = ["  leading", "a\n\n b", "Hello world", "日本語 🙂", " ", "x" + " " * 20 + "y"]
    cases = {
        "texts": texts,
        "chats": [
            {"messages": m, "tools": t, "prefix": p, "effort": e} for (m, t, p), e in zip(chats, efforts, strict=True)
        ],
    }
    out = _plain(tmp_path / "tokenizer", "auto", cases)
    assert out["class"] == "TokenizersBackend"
    assert out["plain"] == [tokenizer(text)["input_ids"] for text in texts]
    assert len(chats) >= 20
    for (messages, tools, prefix), effort, ids in zip(chats, efforts, out["chats"], strict=True):
        expected = reference_ids(reference, messages, tools, prefix, reasoning_effort=effort)
        assert ids == expected, json.dumps([messages, tools, prefix, effort])

    model = tmp_path / "model"
    shutil.copytree(tmp_path / "tokenizer", model)
    (model / "config.json").write_text(json.dumps({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}))
    cases["chats"] = [{"messages": m, "tools": t, "prefix": p, "effort": e} for (m, t, p), e in prompts]
    expected = [reference_ids(reference, m, t, p, reasoning_effort=e) for (m, t, p), e in prompts]
    out = _plain(model, "auto", cases)
    assert out["class"] == "MistralCommonBackend"
    assert out["chats"] == expected
    out = _plain(model, "fast", cases)
    assert out["class"] == "TokenizersBackend"
    assert out["chats"] == expected


# --- checkpoints --------------------------------------------------------------------------------------------------


def test_tiny_tekken_and_v7_models_load_with_their_exact_tokenizer(tmp_path):
    tekken_dir = kit.tiny_model("mistral", tmp_path / "tekken", tokenizer="tekken")
    assert (tekken_dir / "tekken.json").is_file() and (tekken_dir / "tokenizer.json").is_file()
    model, tokenizer = kit.load_model(tekken_dir, preset="cpu")
    assert isinstance(tokenizer, MistralTekkenTokenizer) and model.config.vocab_size == len(tokenizer) == 131072
    assert (tokenizer.pad_token, tokenizer.padding_side) == ("<pad>", "left")
    assert tokenizer.chat_template == kit.get_chat_template("mistral_tekken_v3")
    assert isinstance(kit.AutoTokenizer.from_pretrained(tekken_dir), MistralTekkenTokenizer)
    v7_dir = kit.tiny_model("mistral", tmp_path / "v7", tokenizer="v7")
    assert kit.AutoTokenizer.from_pretrained(v7_dir).chat_template == kit.get_chat_template("mistral_v7")
    assert (v7_dir / "tokenizer.model.v7").is_file()


def test_a_folder_with_only_tekken_json_and_a_native_checkpoint(tmp_path):
    shutil.copy(kit.reference_tokenizer_file("tekken"), tmp_path / "tekken.json")
    tokenizer = kit.AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tokenizer, MistralTekkenTokenizer)
    native = kit.tiny_model("mistral", tmp_path / "native", native=True, tokenizer="tekken")
    converted = kit.convert_checkpoint(native, tmp_path / "converted", to="hf")
    assert {"tekken.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in converted.iterdir()}
    chat = [{"role": "user", "content": "x  y"}]
    assert kit.load_tokenizer(converted).apply_chat_template(chat) == tokenizer.apply_chat_template(chat)


def test_v7_sentencepiece_folders(tmp_path):
    sentencepiece = spm.SentencePieceProcessor(model_file=str(kit.reference_tokenizer_file("v7")))
    shutil.copy(kit.reference_tokenizer_file("v7"), tmp_path / "tokenizer.model")  # version told by its vocabulary
    tokenizer = kit.load_tokenizer(tmp_path)
    assert tokenizer.mistral_version == "v7" and tokenizer.chat_template == kit.get_chat_template("mistral_v7")
    assert tokenizer.encode("  x\n y", add_special_tokens=False) == sentencepiece.encode("  x\n y")
    tokenizer.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.model.v7").is_file()
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert (config["mistral_version"], config["add_prefix_space"]) == ("v7", False)
