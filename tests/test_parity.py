"""Token-for-token parity of the kit's tokenizers + templates with mistral-common over generated conversations:
the same ids when mistral-common accepts a conversation, the kit's ConversationError when it rejects one."""

import pytest
from hypothesis import HealthCheck, given, settings

from chats import any_conversations, conversations, in_input_forms, reference_ids
from hf_mistral_kit.conversation import ConversationError

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


def _agree(kit, reference, chat, version, forms=None):
    """Accepted by both with the same ids, or rejected by both (the kit with its ConversationError). `forms` is the
    same conversation in other input forms, for the kit only."""
    messages, tools, prefix, mode = chat
    expected = reference_ids(reference, messages, tools, prefix, mode)
    kit_messages, kit_tools, *_ = forms or chat

    def encode():
        return kit.apply_chat_template(
            kit_messages, tools=kit_tools, continue_final_message=prefix, validation_mode=mode
        )

    if expected is None or (version == "v1" and tools):  # v1 refuses tools that mistral-common would drop
        with pytest.raises(ConversationError):
            encode()
    else:
        assert encode()["input_ids"] == expected


@ADVERSARIAL
@given(any_conversations(tools=True))
def test_v1_accepts_and_rejects_what_mistral_common_does(kit_tokenizers, reference_tokenizers, chat):
    _agree(kit_tokenizers["v1"], reference_tokenizers["v1"], chat, "v1")


@ADVERSARIAL
@given(any_conversations(tools=True))
def test_v3_accepts_and_rejects_what_mistral_common_does(kit_tokenizers, reference_tokenizers, chat):
    _agree(kit_tokenizers["v3"], reference_tokenizers["v3"], chat, "v3")


@ADVERSARIAL
@given(any_conversations())
def test_v2_accepts_and_rejects_what_mistral_common_does(kit_tokenizers, reference_tokenizers, chat):
    _agree(kit_tokenizers["v2"], reference_tokenizers["v2"], chat, "v2")


@ADVERSARIAL
@given(in_input_forms(any_conversations(tools=True)))
def test_every_input_form_is_read_as_its_dicts(kit_tokenizers, reference_tokenizers, chats):
    """Objects, tuples, Conversation objects and functions as tools: the ids (or the rejection) of their dict form."""
    plain, forms = chats
    for version in ("v1", "v3"):
        _agree(kit_tokenizers[version], reference_tokenizers[version], plain, version, forms)
