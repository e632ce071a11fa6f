"""Hypothesis strategies for conversations, and the mistral-common reference encoding they are checked against."""

from __future__ import annotations

import json
import string

from hypothesis import strategies as st
from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

# Pieces that stress the encoder: runs of spaces, newlines, tabs, unicode, and spellings of control tokens.
_SPECIAL_TEXT = [
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\t",
    " \n ",
    "[INST]",
    "[/INST]",
    "</s>",
    "<s>",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "<|im_end|>",
    "é",
    "日本語",
    "🙂",
    "\u00a0",
    "▁",
    "{",
    '"',
    "\ue000",
    "\\n",
]
_WORDS = ["hello", "Hello", "world", "What", "is", "the", "weather", "?", "!", ".", "42", "Paris", "naïve", "x"]

text = st.lists(st.sampled_from(_WORDS + _SPECIAL_TEXT) | st.text(max_size=4), max_size=8).map("".join)
# Plain text for the differential fuzz of the tokenizers pipeline against SentencePiece: whitespace of every kind and
# length, leading and trailing, unicode (byte fallback), user-defined pieces, spellings of special tokens and bytes.
_PLAIN = [
    *_SPECIAL_TEXT,
    " " * 17,
    " " * 33,
    "\r\n",
    "\u3000",
    "\u2028",
    "\x00",
    "\x7f",
    "▁▁",
    "[IMG]",
    "[control_8]",
    "<0x0A>",
    "<unk>",
    "[REFERENCE_DOC_1]",
    "[REFERENCE_DOC_10]",
    "\U0001f9d1\u200d\U0001f9b0",
    "\u0301",
    "ﬁ",
]
plain_text = st.lists(
    st.sampled_from(_WORDS + _PLAIN) | st.text(max_size=5) | st.characters(codec="utf-8"), max_size=12
).map("".join)
nonempty_text = text.filter(lambda s: s != "")
tool_name = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
call_id = st.text(string.ascii_letters + string.digits, min_size=9, max_size=9)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=6,
)


# A conversation with one tool call and its result, as OpenAI-style messages, and the tool it calls.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": 'Weather for a "city".',
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "abcDEF123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 21, "unit": "C"}'},
    {"role": "assistant", "content": "21 °C."},
    {"role": "user", "content": "And tomorrow?"},
]


@st.composite
def conversations(draw, tools: bool = False):
    """(messages, tools, continue_final_message) in OpenAI format, valid for mistral-common."""
    messages: list[dict] = []
    for _ in range(draw(st.integers(0, 2))):
        messages.append({"role": "system", "content": draw(text)})
    for turn in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(1, 2))):  # consecutive user messages get merged
            messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()) and turn:
            messages.append({"role": "system", "content": draw(text)})
        if tools and draw(st.booleans()):
            calls = []
            for _ in range(draw(st.integers(1, 2))):
                arguments = draw(st.dictionaries(text, json_value, max_size=2).map(json.dumps) | text)
                calls.append(
                    {
                        "id": draw(call_id),
                        "type": "function",
                        "function": {"name": draw(tool_name), "arguments": arguments},
                    }
                )
            messages.append({"role": "assistant", "tool_calls": calls})
            for call in calls:
                content = draw(json_value.map(json.dumps) | text)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
            messages.append({"role": "assistant", "content": draw(nonempty_text)})
        else:
            for _ in range(draw(st.integers(1, 2))):
                messages.append({"role": "assistant", "content": draw(nonempty_text)})
    ending = draw(st.sampled_from(["user", "assistant", "prefix"]))
    if ending == "user":
        messages.append({"role": "user", "content": draw(text)})
    tool_list = None
    if tools and draw(st.booleans()):
        tool_list = [
            {
                "type": "function",
                "function": {
                    "name": draw(tool_name),
                    "description": draw(text),
                    "parameters": draw(st.dictionaries(text, json_value, max_size=2)),
                },
            }
            for _ in range(draw(st.integers(1, 2)))
        ]
    return messages, tool_list, ending == "prefix"


def reference_ids(tokenizer: MistralTokenizer, messages, tools=None, continue_final_message=False) -> list[int] | None:
    """mistral-common's ids for the conversation, or None when mistral-common rejects it."""
    finetuning = messages[-1]["role"] == "assistant" and not continue_final_message
    mode = ValidationMode.finetuning if finetuning else ValidationMode.test
    validator = tokenizer._chat_completion_request_validator
    default_mode, validator._mode = validator._mode, mode
    try:
        request = ChatCompletionRequest.from_openai(messages, tools, continue_final_message=continue_final_message)
        return tokenizer.encode_chat_completion(request).tokens
    except (MistralCommonException, ValueError, AssertionError):
        return None
    finally:
        validator._mode = default_mode
