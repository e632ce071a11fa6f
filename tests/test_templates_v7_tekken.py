"""The v7 and tekken templates on their own: golden snapshots (which must also tokenize to mistral-common's ids),
transformers' rendering of raw messages (no kit in front) equal to the kit's, refusals, and linear rendering time."""

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import TemplateError
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from transformers.utils.chat_template_utils import render_jinja_template

import hf_mistral_kit as kit
from chats import TOOL_CHAT, TOOLS, conversations, rendering_time_ratio
from hf_mistral_kit.chat.errors import ConversationError
from hf_mistral_kit.chat.prepare import prepare_chat

GOLDEN = Path(__file__).parent / "golden"
NEW = ["mistral_v7", "mistral_tekken_v3", "mistral_tekken_v7", "mistral_tekken_v11", "mistral_tekken_v13"]
FILE_OF = {
    "mistral_v7": "v7",
    "mistral_tekken_v3": "tekken-v3",
    "mistral_tekken_v7": "tekken-v7",
    "mistral_tekken_v11": "tekken-v11",
    "mistral_tekken_v13": "tekken-v13",
}
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi  there,\n how are you?"},
    {"role": "assistant", "content": "Fine. "},
    {"role": "user", "content": "Bonjour, ça va ? 日本語"},
    {"role": "system", "content": ""},
]
# Two parallel calls answered out of order, text beside the calls (v7 and later), thinking (v13).
PARALLEL = [
    {"role": "system", "content": "Use the tools."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "abcDEF123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {"id": "xyzXYZ789", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ],
    },
    {"role": "tool", "tool_call_id": "xyzXYZ789", "content": "rain"},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 21}'},
    {"role": "assistant", "reasoning_content": "Paris is dry.", "content": "Paris: 21 °C, Rome: rain. "},
    {"role": "user", "content": "Thanks"},
]
CASES = [(name, "chat", CHAT, None) for name in NEW]
CASES += [(name, "tools", TOOL_CHAT, TOOLS) for name in NEW]
CASES += [(name, "parallel", PARALLEL, TOOLS) for name in ("mistral_tekken_v13",)]
CASES += [
    (name, "parallel", [*PARALLEL[:5], {**PARALLEL[5], "reasoning_content": None}, PARALLEL[6]], TOOLS)
    for name in ("mistral_v7", "mistral_tekken_v7", "mistral_tekken_v11")
]


@pytest.mark.parametrize(("name", "kind", "chat", "tools"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_golden_snapshots(name, kind, chat, tools, tokenizer_pair):
    """Rendered text frozen in tests/golden/; it must also tokenize to mistral-common's ids."""
    text = kit.render(chat, name, tools=tools)
    golden = GOLDEN / f"{name}-{kind}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    tokenizer, reference = tokenizer_pair(FILE_OF[name])
    expected = reference.encode_chat_completion(ChatCompletionRequest.from_openai(chat, tools)).tokens
    assert tokenizer.encode(text, add_special_tokens=False) == expected
    assert tokenizer.apply_chat_template(chat, tools=tools)["input_ids"] == expected


def _raw(messages, tools, name, prefix):
    """What a transformers user passes: the kit's prepared messages (tool-call arguments already in mistral-common's
    JSON: Jinja cannot parse JSON; `prefix` on a message to continue), thinking that leads an assistant message's
    content given as `reasoning_content` instead (the field transformers' chat templates read)."""
    prepared = prepare_chat(messages, tools, template=name, continue_final_message=prefix).messages
    raw = []
    for message in prepared:
        content = message.get("content")
        if (
            message["role"] == "assistant"
            and isinstance(content, list)
            and content
            and content[0]["type"] == "thinking"
            and content[0]["closed"]
        ):
            rest = content[1:]
            if not any(part["type"] == "thinking" for part in rest):
                message = {**message, "reasoning_content": content[0]["thinking"], "content": rest}
        raw.append(message)
    return raw


@pytest.mark.parametrize("name", NEW)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_templates_alone_render_what_the_kit_renders(name, data):
    """transformers' own rendering (no validation, no escaping in front) of the messages equals the kit's, tool
    results out of the calls' order included (the v11/v13 templates sort them themselves)."""
    messages, tools, prefix = data.draw(conversations(tools=True, version=FILE_OF[name]))
    alone, _ = render_jinja_template(
        conversations=[_raw(messages, tools, name, prefix)],
        tools=tools,
        chat_template=kit.get_chat_template(name),
        bos_token="<s>",
        eos_token="</s>",
    )
    assert alone[0] == kit.render(messages, name, tools=tools, continue_final_message=prefix)


@pytest.mark.parametrize(
    ("name", "chat", "message"),
    [
        ("mistral_tekken_v7", [{"role": "bot", "content": "x"}], "got 'bot'"),
        ("mistral_v7", [{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}], "tool_call_id"),
        ("mistral_tekken_v13", [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}], "non-empty"),
        ("mistral_tekken_v11", [{"role": "user", "content": [{"type": "image", "url": "x.png"}]}], "text content"),
        (
            "mistral_tekken_v11",
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]},
            ],
            "text content",
        ),
        ("mistral_tekken_v13", [{"role": "user", "content": [{"type": "thinking", "thinking": "t"}]}], "text content"),
        ("mistral_tekken_v13", [{"role": "system", "content": [{"type": "image", "url": "x"}]}], "text and thinking"),
    ],
)
def test_templates_alone_refuse_what_they_cannot_render(name, chat, message):
    with pytest.raises(TemplateError, match=message):
        render_jinja_template(conversations=[chat], chat_template=kit.get_chat_template(name))
    with pytest.raises(ConversationError):
        kit.render(chat, name)


def test_v13_tool_results_are_sorted_by_the_template_itself():
    """Plain transformers gets mistral-common's order too: results answering the calls out of order are written in
    the calls' order; a result answering no call goes last."""
    calls = [
        {"id": f"call{i}abcd", "type": "function", "function": {"name": "f", "arguments": {"i": i}}} for i in range(3)
    ]
    chat = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": calls},
        *({"role": "tool", "tool_call_id": f"call{i}abcd", "content": f"r{i}"} for i in (2, 0, 1)),
        {"role": "user", "content": "ok"},
    ]
    text = kit.render(chat, "mistral_tekken_v13")
    assert "[TOOL_RESULTS]r0[/TOOL_RESULTS][TOOL_RESULTS]r1[/TOOL_RESULTS][TOOL_RESULTS]r2[/TOOL_RESULTS]" in text
    stray = [*chat[:3], {"role": "tool", "tool_call_id": "other", "content": "rX"}, *chat[3:]]
    alone, _ = render_jinja_template(conversations=[stray], chat_template=kit.get_chat_template("mistral_tekken_v13"))
    assert "r0[/TOOL_RESULTS][TOOL_RESULTS]r1[/TOOL_RESULTS][TOOL_RESULTS]r2[/TOOL_RESULTS][TOOL_RESULTS]rX" in alone[0]
    text = kit.render(chat, "mistral_tekken_v11")
    assert "[TOOL_RESULTS]call0abcd[TOOL_CONTENT]r0[/TOOL_RESULTS][TOOL_RESULTS]call1abcd[TOOL_CONTENT]r1" in text


def _chat(count, tools):
    chat = []
    for i in range(count // 4):
        chat.append({"role": "user", "content": f"question {i} with a few words"})
        if tools:
            call = {"id": f"c{i:08d}", "type": "function", "function": {"name": "f", "arguments": {"x": i}}}
            chat.append({"role": "assistant", "tool_calls": [call]})
            chat.append({"role": "tool", "tool_call_id": call["id"], "content": "result"})
        else:
            chat.append({"role": "system", "content": "a note"})
            chat.append({"role": "user", "content": "more"})
        chat.append({"role": "assistant", "content": f"answer {i}"})
    return chat + [{"role": "user", "content": "last"}]


@pytest.mark.parametrize(("name", "tools"), [("mistral_v7", False), ("mistral_tekken_v13", True)])
def test_rendering_time_grows_linearly(name, tools):
    """32x the messages take about 32x the time (quadratic would be 1024x): see test_templates.py."""
    ratio = rendering_time_ratio(name, _chat(2_000, tools), _chat(64_000, tools))
    assert ratio < 70, ratio


def test_template_models_are_listed():
    """The README's table and the version table (`versions.template_models`) name every template."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for name in kit.list_templates():
        assert kit.versions.template_models(name)
        assert f"| `{name}` |" in readme
    assert json.dumps(list(kit.versions.TEMPLATES)) == json.dumps(kit.list_templates())
