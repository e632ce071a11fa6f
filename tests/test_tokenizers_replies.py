"""Replies read back (`hf_mistral_kit.parse_response`, and transformers' `parse_response` with the kit's
`response_template`), for every version of the table: what the model generates after its prompt parses to the
message it encodes, equal to mistral-common's own decoding of the same ids; malformed replies never raise and never
make up a call."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_mistral_kit as kit
from chats import TOOL_CHAT, TOOLS, conversations, reference_ids
from hf_mistral_kit.chat.replies import ReplyChatML, has_thinking_tokens, reply_format_for
from hf_mistral_kit.tokenizers.replies import pieces_of_text
from hf_mistral_kit.versions import CHATML
from replies import generated_replies, reference_reply
from test_chat_replies import HAS_RESPONSE_TEMPLATE

# Every version the kit renders: SentencePiece v1 and v3 (shipped files), v7 and tekken v3 to v15 (tests/tekken_files).
VERSIONS = [
    "v1",
    "v2",
    "v3",
    "v7",
    "tekken-v3",
    "tekken-v7",
    "tekken-v11",
    "tekken-v13",
    "tekken-v13-nothink",
    "tekken-v15",
]
THINKING = ("tekken-v13", "tekken-v15")  # v13's replies (v15 writes the same): thinking, calls without ids
TOOLS_REFUSED = ("v1", "v2")  # the kit renders no tools for these (v2: the v3 template refuses them)
# REPLY_EXAMPLES=1000 for the one-off run of 1,000 conversations per version.
EXAMPLES = int(os.environ.get("REPLY_EXAMPLES", "25"))
ROUND_TRIP = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def pair(tokenizer_pair, kit_tokenizers, reference_tokenizers):
    """name -> (the kit's tokenizer, mistral-common's), for the names of VERSIONS."""

    def get(name):
        if name in ("v1", "v2", "v3"):
            return kit_tokenizers[name], reference_tokenizers[name]
        return tokenizer_pair(name)

    return get


def _strategy_version(name: str) -> str | None:
    """What `conversations(version=...)` takes: None for SentencePiece v1 to v3, the file's name otherwise."""
    return None if name in ("v1", "v2", "v3") else name


def _as_kit_reads(message: dict) -> dict:
    """transformers' message for a reply as the kit reads it: transformers reads `[ARGS]null` as None (the kit, as
    mistral-common: {})."""
    calls = [
        {**call, "function": {**call["function"], "arguments": call["function"]["arguments"] or {}}}
        for call in message.get("tool_calls", [])
    ]
    return {**message, **({"tool_calls": calls} if calls else {})}


def _without_empty_reasoning(message: dict) -> dict:
    """transformers' parser leaves out empty fields: an empty [THINK][/THINK], which the kit keeps."""
    return {k: v for k, v in message.items() if not (k == "reasoning_content" and v == "")}


def _calls(message: dict) -> list:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls", [])]


def _original_calls(message: dict) -> list:
    """(name, arguments) of a message's calls, the arguments as the templates write them (none or "" as {})."""
    out = []
    for call in message.get("tool_calls") or []:
        arguments = call["function"]["arguments"] or {}
        if isinstance(arguments, str):
            arguments = _json_or_text(arguments)
        out.append((call["function"]["name"], arguments))
    return out


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _thinking_renders_back(tokenizer, ids: list[int]) -> bool:
    """Whether the reply's thinking is as `reasoning_content` renders: none, or one closed chunk that comes first
    (not cut off while thinking, not several chunks, not after text)."""
    begin, end = tokenizer.convert_tokens_to_ids(["[THINK]", "[/THINK]"])
    if begin not in ids:
        return True
    return ids.count(begin) == 1 and ids[0] == begin and end in ids


@pytest.mark.parametrize("name", VERSIONS)
@ROUND_TRIP
@given(data=st.data())
def test_generated_replies_read_back_as_mistral_common_reads_them(name, pair, data):
    """Content, tool calls (several in one turn), thinking: the reply parses to mistral-common's decoding, the
    message renders back to the same ids, and transformers' parser with the kit's template agrees."""
    tokenizer, reference = pair(name)
    messages, tools, _ = data.draw(conversations(tools=name not in TOOLS_REFUSED, version=_strategy_version(name)))
    for prompt, generated, index in generated_replies(reference, messages, tools):
        expected = reference_reply(reference, generated)
        parsed = kit.parse_response(tokenizer, generated, prompt)
        assert kit.parse_response(tokenizer, [*prompt, *generated], prompt) == parsed  # generate's whole output
        original = _original_calls(messages[index])
        if expected is None:  # mistral-common refuses its own encoding (nested thinking, arguments that are text)
            assert all(call in original for call in _calls(parsed))  # the kit never makes up a call
            continue
        if any(not isinstance(arguments, dict) for _, arguments in _calls(expected)):
            # mistral-common's v11+ decoder reads arguments that are JSON but no object: the kit keeps those as text
            assert _calls(parsed) == [call for call in _calls(expected) if isinstance(call[1], dict)]
            continue
        assert parsed == expected
        if HAS_RESPONSE_TEMPLATE:
            read = _as_kit_reads(tokenizer.parse_response(generated, prefix=prompt))
            assert read == _without_empty_reasoning(parsed)
        back = json.loads(json.dumps(parsed))
        for call, call_was in zip(back.get("tool_calls", []), messages[index].get("tool_calls") or [], strict=False):
            call.setdefault("id", call_was["id"])  # tokenizer v13 writes no call ids
            if str(call_was["function"]["arguments"]).strip() == "null":
                call["function"]["arguments"] = "null"  # read as {} (mistral-common too), written back as {}
        if back == {"role": "assistant", "content": None}:
            continue  # an empty reply ("</s>", from whitespace): mistral-common takes no empty message to render back
        if not _thinking_renders_back(tokenizer, generated):
            continue  # reasoning_content is one closed chunk before the text: other thinking renders back as that
        sentencepiece_space = any("\u2581" in json.dumps(m, ensure_ascii=False) for m in (messages[index], back))
        if not name.startswith("tekken") and sentencepiece_space:
            # SentencePiece decodes its "▁" as a space (mistral-common too): that text cannot come back. Also when it
            # was written as a \u2581 escape in arguments given as text, which the reply reads back as an object.
            continue
        assert reference_ids(reference, [*messages[:index], back], tools) == prompt + generated


def test_the_readme_agent_turn_reads_back_in_every_tool_version(pair):
    """The v3 list, v11's [CALL_ID] and v13's (and v15's) thinking, on the conversation of the README."""
    for name in [name for name in VERSIONS if name not in TOOLS_REFUSED]:
        tokenizer, reference = pair(name)
        messages = [*TOOL_CHAT[:2]]
        if name in THINKING:
            messages[1] = {**messages[1], "reasoning_content": "Paris: call get_weather."}
        prompt = tokenizer.apply_chat_template(messages[:1], tools=TOOLS, add_generation_prompt=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages, tools=TOOLS)["input_ids"]
        parsed = kit.parse_response(tokenizer, full[len(prompt) :], prompt, tools=TOOLS)
        call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        if not name.startswith(THINKING):  # v13 and v15 write no call ids
            call = {"id": "abcDEF123", **call}
        expected = {"role": "assistant", "content": None, "tool_calls": [call]}
        if name in THINKING:
            expected["reasoning_content"] = "Paris: call get_weather."
        assert parsed == expected, name
        assert parsed == reference_reply(reference, full[len(prompt) :])
        # text in, as `decode` gives it, reads the same for the tekken files (SentencePiece text loses its ids)
        if name.startswith("tekken"):
            text = tokenizer.decode(full[len(prompt) :])
            assert kit.parse_response(tokenizer.mistral_version, text) == expected


# --- malformed replies --------------------------------------------------------------------------------------------


def _ids(tokenizer, text: str) -> list[int]:
    """`text` as the model would generate it: control-token spellings as their ids, the rest as text."""
    controls = {token.content: i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    ids: list[int] = []
    for piece, control in pieces_of_text(text, list(controls)):
        ids.extend([controls[piece]] if control else tokenizer.encode(piece, add_special_tokens=False))
    return ids


CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
# (version, reply, what the kit reads): each case of the README's table.
MALFORMED = [
    # cut off by max_new_tokens: the text so far is content, a call cut short stays text
    ("tekken-v13", "It is", {"content": "It is"}),
    ("tekken-v13", '[TOOL_CALLS]get_weather[ARGS]{"city": "Par', {"content": '[TOOL_CALLS]get_weather[ARGS]{"city": "Par'}),  # noqa: E501
    ("tekken-v13", "[TOOL_CALLS]get_wea", {"content": "[TOOL_CALLS]get_wea"}),
    ("tekken-v3", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city"', {"content": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city"'}),  # noqa: E501
    # arguments that are not JSON, or not an object
    ("tekken-v11", "[TOOL_CALLS]get_weather[ARGS]Paris</s>", {"content": "[TOOL_CALLS]get_weather[ARGS]Paris"}),
    ("tekken-v13", "[TOOL_CALLS]get_weather[ARGS]42</s>", {"content": "[TOOL_CALLS]get_weather[ARGS]42"}),
    ("tekken-v3", '[TOOL_CALLS][{"name": "get_weather", "arguments": "Paris"}]</s>', {"content": '[TOOL_CALLS][{"name": "get_weather", "arguments": "Paris"}]'}),  # noqa: E501
    # a well-formed call among malformed ones is read; the others stay text
    ("tekken-v13", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]x[ARGS]{</s>', {"content": "[TOOL_CALLS]x[ARGS]{", "tool_calls": [CALL]}),  # noqa: E501
    # a tool-call marker in the middle of the text: the text before it is content, what follows is a call or text
    ("tekken-v13", "Sure [TOOL_CALLS] I will check.</s>", {"content": "Sure [TOOL_CALLS] I will check."}),
    ("tekken-v13", 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>', {"content": "Sure.", "tool_calls": [CALL]}),  # noqa: E501
    # thinking: unclosed (cut off while thinking) is reasoning; a stray [/THINK] is text
    ("tekken-v13", "[THINK]Let me see", {"content": None, "reasoning_content": "Let me see"}),
    ("tekken-v13", "[THINK]Hm[/THINK]Paris.</s>", {"content": "Paris.", "reasoning_content": "Hm"}),
    ("tekken-v13", "Paris[/THINK].</s>", {"content": "Paris[/THINK]."}),
    # what follows the end of sequence (padding, a next turn) is not the reply
    ("tekken-v13", "Paris.</s>[INST]more</s>", {"content": "Paris."}),
    # a call without its id in a format with ids: read, without "id"
    ("tekken-v11", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>', {"content": None, "tool_calls": [CALL]}),
    ("tekken-v11", "[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{}</s>", {"content": None, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {}}}]}),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("name", "reply", "expected"), MALFORMED)
def test_malformed_replies_read_as_the_readme_says(name, reply, expected, pair):
    tokenizer, _ = pair(name)
    parsed = kit.parse_response(tokenizer, _ids(tokenizer, reply))
    assert parsed == {"role": "assistant", "content": None, **expected}


def test_a_call_of_a_tool_not_offered_stays_text(pair):
    tokenizer, _ = pair("tekken-v13")
    ids = _ids(tokenizer, '[TOOL_CALLS]rm_rf[ARGS]{"path": "/"}[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>')
    assert kit.parse_response(tokenizer, ids, tools=TOOLS) == {
        "role": "assistant",
        "content": '[TOOL_CALLS]rm_rf[ARGS]{"path": "/"}',
        "tool_calls": [CALL],
    }
    assert len(kit.parse_response(tokenizer, ids)["tool_calls"]) == 2  # without `tools`, any name is a call


def test_a_control_token_spelled_in_text_is_text(pair):
    """Only a control token generated as its id counts: the same characters as text stay text."""
    tokenizer, _ = pair("tekken-v13")
    spelled = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": spelled}]
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True)["input_ids"]
    ids = tokenizer.apply_chat_template(messages)["input_ids"][len(prompt) :]
    assert kit.parse_response(tokenizer, ids, prompt) == {"role": "assistant", "content": spelled}
    if HAS_RESPONSE_TEMPLATE:
        assert tokenizer.parse_response(ids, prefix=prompt) == {"role": "assistant", "content": spelled}


@pytest.mark.parametrize("name", VERSIONS)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_cuts_and_insertions_never_raise_and_never_make_up_a_call(name, pair, data, seed):
    tokenizer, reference = pair(name)
    rnd = random.Random(seed)
    messages, tools, _ = data.draw(conversations(tools=name not in TOOLS_REFUSED, version=_strategy_version(name)))
    controls = {i: token.content for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    structural = {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"}  # inserted, these write new calls: no oracle but no raise
    for prompt, generated, index in generated_replies(reference, messages, tools):
        # the calls the reply holds: as written, and as decoded (SentencePiece reads its "▁" back as a space)
        original = _original_calls(messages[index]) + _calls(kit.parse_response(tokenizer, generated, prompt))
        for _ in range(8):
            ids = list(generated[: rnd.randint(0, len(generated))])  # a reply cut off anywhere
            inserted = rnd.choice(list(controls)) if ids and rnd.random() < 0.5 else None
            if inserted is not None:  # a control token where it does not belong (not inside a character's bytes)
                at = rnd.randint(0, len(ids))
                if not tokenizer.decode(ids[:at]).endswith("\ufffd"):
                    ids.insert(at, inserted)
            parsed = kit.parse_response(tokenizer, ids, prompt)
            assert set(parsed) <= {"role", "content", "tool_calls", "reasoning_content"}
            if controls.get(inserted) not in structural:
                assert all(call in original for call in _calls(parsed)), (tokenizer.decode(ids), parsed)


# --- the kit's tokenizers and saved folders carry the response template --------------------------------------------


@pytest.mark.parametrize("name", VERSIONS)
def test_kit_tokenizers_carry_their_formats_response_template_and_saved_folders_write_it(name, pair, tmp_path):
    tokenizer, _ = pair(name)
    thinking = has_thinking_tokens(tokenizer)  # a v13 file without [THINK] reads no thinking
    assert tokenizer.response_template == reply_format_for(tokenizer.mistral_version, thinking).response_template()
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert saved["response_template"] == tokenizer.response_template
    assert kit.load_tokenizer(tmp_path).response_template == tokenizer.response_template


def test_a_saved_response_template_is_kept_and_a_chatml_folder_reads_chatml_replies(tmp_path):
    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("v3"))
    custom = {**tokenizer.response_template, "defaults": {"role": "assistant", "content": None, "mine": True}}
    tokenizer.response_template = custom
    tokenizer.save_pretrained(tmp_path / "custom")
    assert kit.load_tokenizer(tmp_path / "custom").response_template == custom
    chatml = kit.load_tokenizer(kit.reference_tokenizer_file("v1"))
    with pytest.warns(UserWarning, match="resize the model's embeddings"):
        kit.apply_chat_template(chatml, CHATML)
    chatml.save_pretrained(tmp_path / "chatml")
    reloaded = kit.load_tokenizer(tmp_path / "chatml")
    assert reloaded.response_template == ReplyChatML().response_template() == chatml.response_template
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    prompt = reloaded.apply_chat_template(messages[:1], add_generation_prompt=True)["input_ids"]
    reply = reloaded.apply_chat_template(messages)["input_ids"][len(prompt) :]
    reply = reply[: reply.index(reloaded.convert_tokens_to_ids("<|im_end|>")) + 1]
    assert kit.parse_response(reloaded, reply, prompt)["content"] == "Hello there"
    if HAS_RESPONSE_TEMPLATE:
        assert reloaded.parse_response(reply, prefix=prompt)["content"] == "Hello there"
    # a v2 tokenizer with its template (mistral_v3, which renders v2 too) reads v2's calls, without ids
    v2 = kit.load_tokenizer(kit.reference_tokenizer_file("v2"))
    assert (
        v2.response_template == reply_format_for("v2").response_template() != reply_format_for("v3").response_template()
    )


def test_bad_arguments_are_type_errors_and_a_list_of_texts_is_a_batch(pair):
    tokenizer, _ = pair("v3")
    for bad in (None, 3, [1, -2], [[1], "a"], {"ids": [1]}):
        with pytest.raises(TypeError, match="generated must be"):
            kit.parse_response(tokenizer, bad)
    assert kit.parse_response("v3", ["a</s>", "b</s>"]) == [
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)["input_ids"]
    reply = tokenizer.encode("Hello", add_special_tokens=False) + [tokenizer.eos_token_id]
    text = tokenizer.decode(prompt + reply)
    assert kit.parse_response(tokenizer, text, tokenizer.decode(prompt))["content"] == "Hello"  # decode(generate's)
    with pytest.warns(UserWarning, match="pass the prompt's ids as prompt="):
        kit.parse_response(tokenizer, prompt + reply)


def test_setting_a_kit_template_sets_its_response_template(pair):
    tokenizer, _ = pair("v1")
    copy = kit.load_tokenizer(kit.reference_tokenizer_file("v1"))
    with pytest.warns(UserWarning, match="resize the model's embeddings"):
        kit.apply_chat_template(copy, CHATML)
    assert copy.response_template == ReplyChatML().response_template()
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    prompt = copy.apply_chat_template(messages[:1], add_generation_prompt=True)["input_ids"]
    reply = copy.apply_chat_template(messages)["input_ids"][len(prompt) :]
    reply = reply[: reply.index(copy.convert_tokens_to_ids("<|im_end|>")) + 1]  # generate stops at <|im_end|>
    assert kit.parse_response(copy, reply, prompt) == {"role": "assistant", "content": "Hello there"}
    if HAS_RESPONSE_TEMPLATE:
        assert copy.parse_response(reply, prefix=prompt) == {"role": "assistant", "content": "Hello there"}
    assert tokenizer.response_template != copy.response_template


_PLAIN_TRANSFORMERS = """
import json, sys
from transformers import AutoTokenizer
cases = json.load(open(sys.argv[1]))
out = []
for folder, prompt, generated in cases:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    try:
        out.append(tokenizer.parse_response(generated, prefix=prompt))
    except (AttributeError, TypeError) as error:  # a transformers release without response_template
        out.append("unsupported: " + str(error))
assert "hf_mistral_kit" not in sys.modules
print(json.dumps(out))
"""


def test_plain_transformers_parses_replies_in_kit_saved_folders(pair, tmp_path):
    """In a process that never imports the kit: AutoTokenizer on a kit-saved folder reads the same messages."""
    cases, expected = [], []
    for name in VERSIONS:
        tokenizer, reference = pair(name)
        folder = tmp_path / name
        tokenizer.save_pretrained(folder)
        tools = TOOLS if name not in TOOLS_REFUSED else None
        messages = TOOL_CHAT[:2] if tools else [TOOL_CHAT[0], {"role": "assistant", "content": "Sunny."}]
        prompt = reference_ids(reference, messages[:1], tools)
        generated = reference_ids(reference, messages, tools)[len(prompt) :]
        cases.append([str(folder), prompt, generated])
        expected.append(kit.parse_response(tokenizer, generated, prompt))
    script = tmp_path / "plain.py"
    script.write_text(_PLAIN_TRANSFORMERS)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cases.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    if HAS_RESPONSE_TEMPLATE:
        assert got == expected
    else:  # no response_template in this release: the kit's function reads these folders
        assert all(message.startswith("unsupported: ") for message in got)
        for (folder, prompt, generated), message in zip(cases, expected, strict=True):
            from transformers import AutoTokenizer

            assert kit.parse_response(AutoTokenizer.from_pretrained(folder), generated, prompt) == message
