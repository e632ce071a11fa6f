"""Token-for-token parity of the kit's tokenizers + templates with mistral-common over generated conversations."""

from hypothesis import HealthCheck, given, settings

from chats import conversations, reference_ids

PARITY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(kit, reference, messages, tools, continue_final_message):
    expected = reference_ids(reference, messages, tools, continue_final_message)
    if expected is None:
        return False
    ids = kit.apply_chat_template(messages, tools=tools, continue_final_message=continue_final_message)["input_ids"]
    assert ids == expected, kit.apply_chat_template(
        messages, tools=tools, tokenize=False, continue_final_message=continue_final_message
    )
    return True


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
