"""Token-for-token parity of the kit's tokenizers + templates with mistral-common over generated conversations, for
every version of the table (`hf_mistral_kit.versions.FORMATS`): the same ids when mistral-common accepts a
conversation, the kit's ConversationError when it rejects one, the assistant masks over exactly mistral-common's
assistant tokens. SentencePiece v1, v2 and v3 run on the shipped files; v7 and tekken (v3, v7, v11, v13, v15) on every
file mistral-common ships and the tekken versions derived from them (tests/tekken_files.py says how and why that is
faithful), with `reasoning_effort` drawn too (v15 takes it, the others refuse it).

PARITY_EXAMPLES=1000 runs the v7 and tekken parity tests on that many conversations each (the one-off run; select a
file with -k, e.g. `-k tekken-v15`)."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_mistral_kit as kit
from chats import (
    any_conversations,
    assert_agrees,
    conversations,
    in_input_forms,
    reference_assistant_tokens,
    reference_ids,
)
from hf_mistral_kit.versions import FORMATS
from tekken_files import TEMPLATES, row_of

PARITY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADVERSARIAL = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(kit, reference, messages, tools, continue_final_message):
    expected = reference_ids(reference, messages, tools, continue_final_message)
    assert expected is not None, "the generator makes conversations mistral-common accepts"
    ids = kit.apply_chat_template(messages, tools=tools, continue_final_message=continue_final_message)["input_ids"]
    assert ids == expected, kit.apply_chat_template(
        messages, tools=tools, tokenize=False, continue_final_message=continue_final_message
    )


@PARITY
@given(conversations())
def test_v1_matches_mistral_common(kit_tokenizers, reference_tokenizers, chat):
    messages, _, prefix = chat
    _check(kit_tokenizers["v1"], reference_tokenizers["v1"], messages, None, prefix)


@PARITY
@given(conversations(tools=True))
def test_v3_matches_mistral_common(kit_tokenizers, reference_tokenizers, chat):
    messages, tools, prefix = chat
    _check(kit_tokenizers["v3"], reference_tokenizers["v3"], messages, tools, prefix)


@PARITY
@given(conversations())
def test_v2_without_tools_matches_mistral_common(kit_tokenizers, reference_tokenizers, chat):
    messages, _, prefix = chat
    _check(kit_tokenizers["v2"], reference_tokenizers["v2"], messages, None, prefix)


@ADVERSARIAL
@given(any_conversations(tools=True))
def test_v1_accepts_and_rejects_what_mistral_common_does(kit_tokenizers, reference_tokenizers, chat):
    assert_agrees(kit_tokenizers["v1"], reference_tokenizers["v1"], chat, refuses_tools=True)


@ADVERSARIAL
@given(any_conversations(tools=True))
def test_v3_accepts_and_rejects_what_mistral_common_does(kit_tokenizers, reference_tokenizers, chat):
    assert_agrees(kit_tokenizers["v3"], reference_tokenizers["v3"], chat)


@ADVERSARIAL
@given(any_conversations())
def test_v2_accepts_and_rejects_what_mistral_common_does(kit_tokenizers, reference_tokenizers, chat):
    assert_agrees(kit_tokenizers["v2"], reference_tokenizers["v2"], chat)


@ADVERSARIAL
@given(in_input_forms(any_conversations(tools=True)))
def test_every_input_form_is_read_as_its_dicts(kit_tokenizers, reference_tokenizers, chats):
    """Objects, tuples, Conversation objects and functions as tools: the ids (or the rejection) of their dict form."""
    plain, forms = chats
    for version in ("v1", "v3"):
        assert_agrees(
            kit_tokenizers[version], reference_tokenizers[version], plain, forms, refuses_tools=version == "v1"
        )


# --- v7 and tekken ----------------------------------------------------------------------------------------------

FILES = list(TEMPLATES)  # v7, v7m1, tekken-v3, tekken-v3-image, tekken-v7, tekken-v11, tekken-v13, tekken-v15
ONE_PER_VERSION = [name for name in FILES if not name.endswith(("m1", "-image"))]  # v7, tekken-v3, ... tekken-v15
ONE_OFF = os.environ.get("PARITY_EXAMPLES")
LATER_PARITY = settings(max_examples=int(ONE_OFF or 120), deadline=None, suppress_health_check=list(HealthCheck))
LATER_ADVERSARIAL = settings(max_examples=int(ONE_OFF or 150), deadline=None, suppress_health_check=list(HealthCheck))
# Valid reasoning efforts of the derived v15 files (Mistral Small 4's builder), and what a caller might pass.
EFFORTS = [None, None, "none", "high"]
ANY_EFFORTS = [None] * 8 + ["none", "high", "low", "max", "bogus", "", 5, "HIGH"]


def _effort(name: str, data, valid: bool):
    """A reasoning_effort for a conversation of file `name`: valid ones (or None) for v15, anything for the
    adversarial tests (every version but v15 refuses all but None)."""
    if valid:
        return data.draw(st.sampled_from(EFFORTS)) if row_of(name).version >= "v15" else None
    return data.draw(st.sampled_from(ANY_EFFORTS))


def test_every_version_of_the_table_is_compared():
    """The SentencePiece files above and `FILES` cover every row of the version table."""
    covered = {("sentencepiece", version) for version in ("v1", "v2", "v3")}
    covered |= {(row_of(name).kind.value, row_of(name).version.value) for name in FILES}
    assert covered == {(row.kind.value, row.version.value) for row in FORMATS}


@pytest.mark.parametrize("name", FILES)
def test_each_v7_and_tekken_file_gets_its_version_and_template(name, tokenizer_pair):
    tokenizer, reference = tokenizer_pair(name)
    assert tokenizer.mistral_version == reference.instruct_tokenizer.tokenizer.version.value
    assert tokenizer.chat_template == kit.get_chat_template(TEMPLATES[name])
    expected_class = kit.MistralTekkenTokenizer if name.startswith("tekken") else kit.MistralSentencePieceTokenizer
    assert isinstance(tokenizer, expected_class) and tokenizer.is_fast


@pytest.mark.parametrize("name", FILES)
@LATER_PARITY
@given(data=st.data())
def test_v7_and_tekken_valid_conversations_get_mistral_commons_ids(name, tokenizer_pair, data):
    """System prompts, tools, tool calls and results (with text, out of order, free-form ids where the version
    takes them), thinking (v13), multi-turn, unicode and whitespace."""
    tokenizer, reference = tokenizer_pair(name)
    messages, tools, prefix = data.draw(conversations(tools=True, version=name))
    effort = _effort(name, data, valid=True)
    expected = reference_ids(reference, messages, tools, prefix, reasoning_effort=effort)
    assert expected is not None, "the generator makes conversations mistral-common accepts"
    kwargs = {"tools": tools, "continue_final_message": prefix, "reasoning_effort": effort}
    ids = tokenizer.apply_chat_template(messages, **kwargs)["input_ids"]
    assert ids == expected, tokenizer.apply_chat_template(messages, **kwargs, tokenize=False)


@pytest.mark.parametrize("name", [*FILES, "tekken-v13-nothink", "tekken-v15-nothink"])
@LATER_ADVERSARIAL
@given(data=st.data())
def test_v7_and_tekken_accept_and_reject_what_mistral_common_does(name, tokenizer_pair, data):
    tokenizer, reference = tokenizer_pair(name)
    chat = data.draw(any_conversations(tools=True, later=True))
    assert_agrees(tokenizer, reference, chat, reasoning_effort=_effort(name, data, valid=False))


@pytest.mark.parametrize("name", ["v7", "tekken-v7", "tekken-v13"])
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_v7_and_tekken_read_every_input_form_as_its_dicts(name, tokenizer_pair, data):
    tokenizer, reference = tokenizer_pair(name)
    plain, forms = data.draw(in_input_forms(any_conversations(tools=True, later=True)))
    assert_agrees(tokenizer, reference, plain, forms)


@pytest.mark.parametrize("name", ONE_PER_VERSION)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_v7_and_tekken_masks_cover_exactly_the_reference_assistant_tokens(name, tokenizer_pair, data):
    tokenizer, reference = tokenizer_pair(name)
    messages, tools, prefix = data.draw(conversations(tools=True, version=name))
    out = tokenizer.apply_chat_template(
        messages, tools=tools, continue_final_message=prefix, return_assistant_tokens_mask=True
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert masked == reference_assistant_tokens(reference, messages, tools, prefix)


@pytest.mark.parametrize("role", ["assistant", "system"])
@pytest.mark.parametrize(("thinking", "text"), [(" ", "hello"), ("x ", "hello"), ("a", " b"), ("", "hello")])
def test_an_open_thinking_chunk_is_encoded_apart_from_the_text_after_it(role, thinking, text, tokenizer_pair):
    """mistral-common encodes an open thinking chunk and the text after it separately ("[THINK] " then "hello", not
    " hello"); the rendered text is the same, so only the kit's tokenizer can split there (and drops the split)."""
    tokenizer, reference = tokenizer_pair("tekken-v13")
    content = [{"type": "thinking", "thinking": thinking, "closed": False}, {"type": "text", "text": text}]
    question = {"role": "user", "content": "q"}
    chat = (
        [{"role": role, "content": content}, question]
        if role == "system"
        else [question, {"role": role, "content": content}]
    )
    expected = reference_ids(reference, chat)
    joined = tokenizer.encode(f"[THINK]{thinking}{text}", add_special_tokens=False)
    apart = tokenizer.encode(thinking, add_special_tokens=False) + tokenizer.encode(text, add_special_tokens=False)
    assert f"[THINK]{thinking}{text}" in tokenizer.apply_chat_template(chat, tokenize=False)
    out = tokenizer.apply_chat_template(chat, return_assistant_tokens_mask=True)
    assert out["input_ids"] == expected
    position = next(
        i for i in range(len(expected)) if expected[i : i + 1] == [tokenizer.convert_tokens_to_ids("[THINK]")]
    )
    assert expected[position + 1 : position + 1 + len(apart)] == apart
    if joined[1:] != apart:  # the case that needs the split
        assert expected[position : position + len(joined)] != joined
    if role == "assistant":
        masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
        assert masked == reference_assistant_tokens(reference, chat, None, False)
    # Data that spells the split itself stays text.
    spelled = [question, {"role": "assistant", "content": "a\ue000\ue002b \ue002 \ue000"}]
    assert tokenizer.apply_chat_template(spelled)["input_ids"] == reference_ids(reference, spelled)
