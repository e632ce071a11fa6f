"""Token-for-token parity with mistral-common for tokenizer v7 (SentencePiece) and tekken (v3, v7, v11, v13): every
file mistral-common ships and the tekken versions derived from them (tests/tekken_files.py says how and why that is
faithful). Valid conversations get mistral-common's ids; anything else is rejected exactly when mistral-common
rejects it; the assistant masks cover exactly mistral-common's assistant tokens."""

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
from tekken_files import TEMPLATES

FILES = list(TEMPLATES)  # v7, v7m1, tekken-v3, tekken-v3-image, tekken-v7, tekken-v11, tekken-v13
PARITY = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
ADVERSARIAL = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", FILES)
def test_each_file_gets_its_version_and_template(name, tokenizer_pair):
    tokenizer, reference = tokenizer_pair(name)
    assert tokenizer.mistral_version == reference.instruct_tokenizer.tokenizer.version.value
    assert tokenizer.chat_template == kit.get_chat_template(TEMPLATES[name])
    expected_class = kit.MistralTekkenTokenizer if name.startswith("tekken") else kit.MistralSentencePieceTokenizer
    assert isinstance(tokenizer, expected_class) and tokenizer.is_fast


@pytest.mark.parametrize("name", FILES)
@PARITY
@given(data=st.data())
def test_valid_conversations_get_mistral_commons_ids(name, tokenizer_pair, data):
    """System prompts, tools, tool calls and results (with text, out of order, free-form ids where the version
    takes them), thinking (v13), multi-turn, unicode and whitespace."""
    tokenizer, reference = tokenizer_pair(name)
    messages, tools, prefix = data.draw(conversations(tools=True, version=name))
    expected = reference_ids(reference, messages, tools, prefix)
    assert expected is not None, "the generator makes conversations mistral-common accepts"
    ids = tokenizer.apply_chat_template(messages, tools=tools, continue_final_message=prefix)["input_ids"]
    assert ids == expected, tokenizer.apply_chat_template(
        messages, tools=tools, continue_final_message=prefix, tokenize=False
    )


@pytest.mark.parametrize("name", [*FILES, "tekken-v13-nothink"])
@ADVERSARIAL
@given(data=st.data())
def test_accepts_and_rejects_what_mistral_common_does(name, tokenizer_pair, data):
    tokenizer, reference = tokenizer_pair(name)
    assert_agrees(tokenizer, reference, data.draw(any_conversations(tools=True, later=True)))


@pytest.mark.parametrize("name", ["v7", "tekken-v7", "tekken-v13"])
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_input_form_is_read_as_its_dicts(name, tokenizer_pair, data):
    tokenizer, reference = tokenizer_pair(name)
    plain, forms = data.draw(in_input_forms(any_conversations(tools=True, later=True)))
    assert_agrees(tokenizer, reference, plain, forms)


@pytest.mark.parametrize("name", ["v7", "tekken-v3", "tekken-v7", "tekken-v11", "tekken-v13"])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_masks_cover_exactly_thereference_assistant_tokens(name, tokenizer_pair, data):
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
