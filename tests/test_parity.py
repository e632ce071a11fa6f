"""Token-for-token parity of the kit's tokenizers + templates with mistral-common over generated conversations:
the same ids when mistral-common accepts a conversation, the kit's ConversationError when it rejects one."""

from hypothesis import HealthCheck, given, settings

from chats import any_conversations, assert_agrees, conversations, in_input_forms, reference_ids

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
