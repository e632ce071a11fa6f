"""Replies as a model generates them, and mistral-common's own reading of them (the reference `parse_response` is
compared against)."""

from __future__ import annotations

import json

from mistral_common.experimental.think import _split_content_and_think_chunks
from mistral_common.experimental.tools import _decode_tool_calls, _split_content_and_tool_calls
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy, TokenizerVersion
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from chats import reference_ids


def generated_replies(reference: MistralTokenizer, messages, tools):
    """(prompt ids, generated ids, index) for each assistant message the model would generate after its prompt: the
    ids of the conversation up to that message, minus those of its prompt (the conversation before it, which ends
    with a user or tool message)."""
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("prefix") or index == 0:
            continue
        if messages[index - 1].get("role") not in ("user", "tool"):
            continue
        prompt = reference_ids(reference, messages[:index], tools)
        full = reference_ids(reference, messages[: index + 1], tools)
        if prompt is None or full is None or full[: len(prompt)] != prompt:
            continue
        yield prompt, full[len(prompt) :], index


def _arguments(arguments):
    """mistral-common keeps a call's arguments as JSON text; a text that is not JSON stays text."""
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return arguments


def reference_reply(reference: MistralTokenizer, ids: list[int]) -> dict | None:
    """mistral-common's decoding of generated ids into an assistant message (its reference server's
    `detokenize_to_assistant_message`: the content before the first [TOOL_CALLS], the calls, [THINK] chunks), in the
    OpenAI form `parse_response` returns (thinking chunks joined as `reasoning_content`, text chunks as `content`).
    None when mistral-common refuses the ids."""
    inner = reference.instruct_tokenizer.tokenizer
    try:
        if inner.version > TokenizerVersion.v1:
            content_ids, call_ids = _split_content_and_tool_calls(ids, inner.get_special_token("[TOOL_CALLS]"))
        else:
            content_ids, call_ids = ids, ()
        thoughts, texts = None, []
        instruct = reference.instruct_tokenizer
        if inner.version >= TokenizerVersion.v13 and getattr(instruct, "BEGIN_THINK", None) is not None:
            chunks = _split_content_and_think_chunks(content_ids, instruct.BEGIN_THINK, instruct.END_THINK)
            for chunk, is_think in chunks:
                if chunk != [inner.eos_id]:
                    text = reference.decode(chunk, special_token_policy=SpecialTokenPolicy.IGNORE)
                    if is_think:
                        thoughts = [*(thoughts or []), text]
                    else:
                        texts.append(text)
        elif content_ids:
            texts.append(reference.decode(content_ids, special_token_policy=SpecialTokenPolicy.IGNORE))
        calls = _decode_tool_calls(call_ids, inner) if call_ids else []
    except Exception:
        return None
    message = {"role": "assistant", "content": "".join(texts) or None}
    if thoughts is not None:  # an empty [THINK][/THINK] too
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = [
            {
                **({"id": call.id} if call.id and call.id != "null" else {}),
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments(call.function.arguments),
                },
            }
            for call in calls
        ]
    return message
