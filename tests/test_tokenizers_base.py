"""`return_assistant_tokens_mask=True` marks exactly the tokens mistral-common emits for assistant messages."""

from hypothesis import HealthCheck, given, settings

from chats import conversations, reference_assistant_tokens, reference_ids


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(tools=True))
def test_masks_cover_exactly_thereference_assistant_tokens(kit_tokenizers, reference_tokenizers, chat):
    messages, tools, _ = chat
    for version in ("v1", "v3"):
        use_tools = tools if version == "v3" else None
        if version == "v1" and any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
            continue
        reference = reference_tokenizers[version]
        if reference_ids(reference, messages, use_tools) is None:
            continue
        out = kit_tokenizers[version].apply_chat_template(messages, tools=use_tools, return_assistant_tokens_mask=True)
        masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
        assert masked == reference_assistant_tokens(reference, messages, use_tools)


def test_masks_batched_and_padded(kit_tokenizers):
    tokenizer = kit_tokenizers["v3"]
    tokenizer.pad_token = tokenizer.unk_token
    chats = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c d e"}],
        [{"role": "user", "content": "a much longer question here"}, {"role": "assistant", "content": "b"}],
    ]
    out = tokenizer.apply_chat_template(chats, return_assistant_tokens_mask=True, padding=True, return_tensors="pt")
    assert out["input_ids"].shape == out["assistant_masks"].shape == out["attention_mask"].shape
    for row, mask, attention in zip(out["input_ids"], out["assistant_masks"], out["attention_mask"], strict=True):
        assert row[mask.bool()].tolist()[-1] == tokenizer.eos_token_id
        assert not (mask.bool() & ~attention.bool()).any()
