"""issue 19: what a conversation's data can hold (hf_mistral_kit/chat/limits.py), against mistral-common.

Lone surrogates: tekken encodes them as mistral-common's tiktoken does, SentencePiece refuses them with
ConversationError (mistral-common fails). JSON nesting: accepted as deep as mistral-common encodes it (its reference run
in a fresh thread, as from the top of a script), refused beyond with ConversationError. Size: refused before any
tokenizer sees it, in bounded memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import hf_mistral_kit as kit
from chats import deep_text, deep_value, reference_ids
from hf_mistral_kit import ConversationError
from hf_mistral_kit.chat.limits import MAX_CHAT_BYTES, MAX_NESTING, nesting, recursion_room, text_nesting

S = "a\udfffb"
ID = "abcDEF123"
TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
SENTENCEPIECE = ["v1", "v3", "v7"]
TEKKEN = ["tekken-v3", "tekken-v7", "tekken-v11", "tekken-v13"]


def _call(arguments) -> dict:
    return {"id": ID, "type": "function", "function": {"name": "f", "arguments": arguments}}


def _with_call(arguments, result="ok") -> list[dict]:
    return [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [_call(arguments)]},
        {"role": "tool", "tool_call_id": ID, "content": result},
    ]


# Each place a caller's text reaches the prompt: (messages, tools, continue_final_message).
SURROGATE_PLACES = {
    "content": ([{"role": "user", "content": S}], None, False),
    "content-part": ([{"role": "user", "content": [{"type": "text", "text": S}]}], None, False),
    "system": ([{"role": "system", "content": S}, {"role": "user", "content": "hi"}], None, False),
    "pair-as-two-code-points": ([{"role": "user", "content": "smile \ud83d\ude00"}], None, False),
    "arguments": (_with_call({"x": S}), [TOOL], False),
    "arguments-json-escape": (_with_call('{"x": "\\ud800"}'), [TOOL], False),
    "arguments-key": (_with_call({S: 1}), [TOOL], False),
    "tool-result": (_with_call({"x": 1}, S), [TOOL], False),
    "tool-result-json": (_with_call({"x": 1}, '{"r": "\\udfff"}'), [TOOL], False),
    "tool-description": (
        [{"role": "user", "content": "hi"}],
        [{"type": "function", "function": {"name": "f", "description": S, "parameters": {}}}],
        False,
    ),
    "schema-key": (
        [{"role": "user", "content": "hi"}],
        [{"type": "function", "function": {"name": "f", "parameters": {"properties": {S: {"type": "string"}}}}}],
        False,
    ),
    "prefix": ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": S}], None, True),
}


def _pair(name, kit_tokenizers, reference_tokenizers, tokenizer_pair):
    if name in kit_tokenizers:
        return kit_tokenizers[name], reference_tokenizers[name]
    return tokenizer_pair(name)


@pytest.mark.parametrize("place", list(SURROGATE_PLACES))
@pytest.mark.parametrize("name", TEKKEN)
def test_tekken_encodes_lone_surrogates_as_mistral_common(name, place, tokenizer_pair):
    tokenizer, reference = tokenizer_pair(name)
    messages, tools, prefix = SURROGATE_PLACES[place]
    expected = reference_ids(reference, messages, tools, prefix)
    assert expected is not None, "mistral-common encodes it"
    ids = tokenizer.apply_chat_template(messages, tools=tools, continue_final_message=prefix)["input_ids"]
    assert ids == expected
    text = tokenizer.apply_chat_template(messages, tools=tools, continue_final_message=prefix, tokenize=False)
    assert text.encode("utf-8")  # what it renders is text: it tokenizes to the same ids on its own
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected


@pytest.mark.parametrize(
    ("name", "place"),
    [(name, place) for name in SENTENCEPIECE for place, (_, tools, _) in SURROGATE_PLACES.items() if tools is None]
    + [(name, place) for name in SENTENCEPIECE[1:] for place, (_, tools, _) in SURROGATE_PLACES.items() if tools],
)  # v1 has no tool calls
def test_sentencepiece_refuses_lone_surrogates_like_mistral_common(
    name, place, kit_tokenizers, reference_tokenizers, tokenizer_pair
):
    tokenizer, reference = _pair(name, kit_tokenizers, reference_tokenizers, tokenizer_pair)
    messages, tools, prefix = SURROGATE_PLACES[place]
    expected = reference_ids(reference, messages, tools, prefix)
    if (name, place) == ("v7", "tool-result-json"):  # v7 writes the result's text as it is: the escape stays ASCII
        assert tokenizer.apply_chat_template(messages, tools=tools)["input_ids"] == expected
        return
    assert expected is None, "mistral-common cannot encode it"
    with pytest.raises(ConversationError, match=r"lone surrogate: not a character.*Fix: Remove it"):
        tokenizer.apply_chat_template(messages, tools=tools, continue_final_message=prefix)
    with pytest.raises(ConversationError, match="lone surrogate"):
        kit.render(messages, tokenizer.kit_template, tools=tools, continue_final_message=prefix)


@pytest.mark.parametrize("name", ["v7", "v7m1"])  # v3 takes no conversation without a user message
def test_tools_no_user_message_encodes_may_hold_surrogates(name, kit_tokenizers, reference_tokenizers, tokenizer_pair):
    # Found by the adversarial parity test: the tools are written before the last user message, so without one they
    # are never encoded and mistral-common takes them as they are (a system message alone, here).
    tokenizer, reference = _pair(name, kit_tokenizers, reference_tokenizers, tokenizer_pair)
    _, tools, _ = SURROGATE_PLACES["schema-key"]
    messages = [{"role": "system", "content": "x"}]
    expected = reference_ids(reference, messages, tools, False)
    assert expected is not None, "mistral-common encodes it"
    assert tokenizer.apply_chat_template(messages, tools=tools)["input_ids"] == expected
    # With a user message the tools are encoded, and refused as before.
    with pytest.raises(ConversationError, match=r"tools: the text holds \\udfff"):
        tokenizer.apply_chat_template([*messages, {"role": "user", "content": "hi"}], tools=tools)


def test_chatml_refuses_lone_surrogates():
    with pytest.raises(ConversationError, match=r"messages\[0\] \(user\): the text holds \\udfff"):
        kit.render([{"role": "user", "content": S}], "chatml")


def test_two_schema_keys_that_become_one_character_are_refused(tokenizer_pair):
    tokenizer, _ = tokenizer_pair("tekken-v3")
    properties = dict.fromkeys(["\ud800", "\udfff"], {})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"properties": properties}}}]
    with pytest.raises(ConversationError, match="two keys become"):
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=tools)


# --- nesting ------------------------------------------------------------------------------------------------------


def _fresh_thread(function):
    """`function()` from the top of a new thread's stack (a few frames below a script's top level)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


# Where JSON nests: a tool schema, call arguments (a dict, or JSON text) and, before v7, a tool result (JSON text).
# `PLACES[place](levels)` builds a conversation (messages, tools) whose deepest JSON is `levels` containers deep. The
# same source builds them here and in the reference script.
BUILDERS = f"""
TOOL = {TOOL!r}
def with_call(arguments, result="ok"):
    call = {{"id": {ID!r}, "type": "function", "function": {{"name": "f", "arguments": arguments}}}}
    return [
        {{"role": "user", "content": "hi"}},
        {{"role": "assistant", "tool_calls": [call]}},
        {{"role": "tool", "tool_call_id": {ID!r}, "content": result}},
    ]
PLACES = {{
    "schema": lambda levels: (
        [{{"role": "user", "content": "hi"}}],
        [{{"type": "function", "function": {{"name": "f", "parameters": deep_value(levels)}}}}],
    ),
    "arguments": lambda levels: (with_call(deep_value(levels)), [TOOL]),
    "arguments-text": lambda levels: (with_call(deep_text(levels)), [TOOL]),
    "tool-result": lambda levels: (with_call({{}}, deep_text(levels)), [TOOL]),
}}
"""
LEVELS = (MAX_NESTING, MAX_NESTING + 2, 5_000)
# mistral-common's ids for each place and depth, computed at a script's top level (where its recursion reaches
# deepest; None where it fails).
REFERENCE_SCRIPT = f"""
import json, sys
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from chats import deep_text, deep_value
{BUILDERS}
reference = MistralTokenizer.from_file(sys.argv[1])
out = {{}}
for place, build in PLACES.items():
    for levels in {LEVELS!r}:
        messages, tools = build(levels)
        try:
            request = ChatCompletionRequest.from_openai(messages, tools)
            out[f"{{place}} {{levels}}"] = reference.encode_chat_completion(request).tokens
        except RecursionError:
            out[f"{{place}} {{levels}}"] = None
print(json.dumps(out))
"""


def _places() -> dict:
    namespace = {"deep_value": deep_value, "deep_text": deep_text}
    exec(BUILDERS, namespace)
    return namespace["PLACES"]


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="MAX_NESTING is mistral-common's depth measured on CPython 3.11"
)
@pytest.mark.parametrize("name", ["v3", "tekken-v3", "tekken-v13"])
def test_json_as_deep_as_mistral_common_encodes_is_encoded_and_deeper_is_refused(
    name, kit_tokenizers, tokenizer_pair, mistral_file, cli_env
):
    tokenizer = kit_tokenizers[name] if name in kit_tokenizers else tokenizer_pair(name)[0]
    path = kit.reference_tokenizer_file(name) if name in kit_tokenizers else mistral_file(name)
    result = subprocess.run(
        [sys.executable, "-c", REFERENCE_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
        env={**cli_env, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr
    reference = json.loads(result.stdout.strip().splitlines()[-1])
    for place, build in _places().items():
        messages, tools = build(MAX_NESTING)
        assert reference[f"{place} {MAX_NESTING}"] is not None, "mistral-common encodes it"
        ids = tokenizer.apply_chat_template(messages, tools=tools)["input_ids"]  # from pytest's deep stack
        assert ids == reference[f"{place} {MAX_NESTING}"], place
        for levels in LEVELS[1:]:
            messages, tools = build(levels)
            expected = reference[f"{place} {levels}"]
            if place == "tool-result" and name == "tekken-v13":  # v7+ writes tool results as text, never parsed
                assert tokenizer.apply_chat_template(messages, tools=tools)["input_ids"] == expected
                continue
            assert expected is None, f"{place} {levels}: mistral-common fails"
            with pytest.raises(
                ConversationError, match=rf"nested {levels} levels deep; mistral-common encodes at most"
            ):
                tokenizer.apply_chat_template(messages, tools=tools)


@pytest.mark.parametrize(
    "conversation",
    [
        _with_call({}, "log: " + "[" * 5000),  # text, not JSON: the parser fails at once and keeps it as text
        _with_call({}, "{'a': '" + "{" * 5000 + "'}"),  # a Python repr
        _with_call("x" + "[" * 5000),
        _with_call({}, "[" * 300 + "x"),  # the parser recurses 300 deep, then fails: text
    ],
    ids=["log-line", "python-repr", "arguments-text", "shallow-invalid"],
)
@pytest.mark.parametrize("name", ["v3", "tekken-v3"])
def test_text_with_brackets_that_is_not_json_stays_text(
    name, conversation, kit_tokenizers, reference_tokenizers, tokenizer_pair
):
    tokenizer, reference = _pair(name, kit_tokenizers, reference_tokenizers, tokenizer_pair)
    expected = reference_ids(reference, conversation, [TOOL])
    assert expected is not None
    assert tokenizer.apply_chat_template(conversation, tools=[TOOL])["input_ids"] == expected


def test_text_the_parser_recurses_into_past_the_limit_is_refused(kit_tokenizers):
    """mistral-common's parser fails with RecursionError there (from any stack)."""
    with pytest.raises(ConversationError, match=r"nested 5000 levels deep"):
        kit_tokenizers["v3"].apply_chat_template(_with_call({}, "[" * 5000 + "x"), tools=[TOOL])
    with pytest.raises(ConversationError, match=r"nested 100000 levels deep"):
        kit_tokenizers["v3"].apply_chat_template(_with_call({}, "[" * 100_000 + "x"), tools=[TOOL])


def test_a_schema_too_deep_for_the_draft7_check_is_refused_by_both(kit_tokenizers, reference_tokenizers):
    schema: dict = {"type": "string"}
    for _ in range(400):  # 801 containers, but jsonschema recurses through several frames per level
        schema = {"type": "object", "properties": {"a": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    messages = [{"role": "user", "content": "hi"}]
    assert _fresh_thread(lambda: reference_ids(reference_tokenizers["v3"], messages, tools)) is None
    with pytest.raises(ConversationError, match="nested too deeply for the draft-7 schema check"):
        kit_tokenizers["v3"].apply_chat_template(messages, tools=tools)


def test_render_takes_the_deepest_schema_from_a_deep_stack():
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep_value(MAX_NESTING)}}]

    def deep(n):
        return deep(n - 1) if n else kit.render([{"role": "user", "content": "hi"}], "mistral_v3", tools=tools)

    limit = sys.getrecursionlimit()
    assert deep(200).count('{"a": ') == MAX_NESTING - 1
    assert sys.getrecursionlimit() == limit  # restored


def test_nesting_is_measured_without_recursion():
    assert nesting(1) == 0 and nesting({}) == 1 and nesting({"a": [1, {"b": []}]}) == 4
    assert nesting(deep_value(200_000)) == 200_000
    assert text_nesting('{"a": "[[[{{{", "b": [[1]]}') == 3 and text_nesting('"\\"["') == 0
    assert text_nesting(deep_text(200_000)) == 200_000


def test_the_schema_check_runs_at_the_callers_limit_while_another_thread_holds_the_room(kit_tokenizers):
    schema: dict = {"type": "string"}
    for _ in range(400):
        schema = {"type": "object", "properties": {"a": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    entered, release = threading.Event(), threading.Event()

    def hold():
        with recursion_room():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    threading.Timer(0.2, release.set).start()
    with pytest.raises(ConversationError, match="nested too deeply for the draft-7 schema check"):
        kit_tokenizers["v3"].apply_chat_template([{"role": "user", "content": "hi"}], tools=tools)
    holder.join()


def test_a_limit_set_inside_the_room_is_kept():
    limit = sys.getrecursionlimit()
    try:
        with recursion_room():
            sys.setrecursionlimit(20_000)
        assert sys.getrecursionlimit() == 20_000
    finally:
        sys.setrecursionlimit(limit)


def test_recursion_room_is_restored_by_its_last_user():
    limit = sys.getrecursionlimit()
    with recursion_room():
        raised = sys.getrecursionlimit()
        with recursion_room():
            assert sys.getrecursionlimit() == raised > limit
        assert sys.getrecursionlimit() == raised
    assert sys.getrecursionlimit() == limit


# --- size ---------------------------------------------------------------------------------------------------------


def test_the_size_bound_counts_every_string_of_the_conversation():
    """Keys and roles count too: the bound is on what the template may print."""
    overhead = len("roleusercontentroleassistantcontentabc")
    fits = "x" * (MAX_CHAT_BYTES - overhead - 2) + "é"  # 2 bytes in UTF-8
    assert len(kit.render([{"role": "user", "content": fits}, {"role": "assistant", "content": "abc"}], "mistral_v1"))
    with pytest.raises(ConversationError, match=r"messages\[1\] \(assistant\): the conversation's text is more than"):
        kit.render([{"role": "user", "content": fits}, {"role": "assistant", "content": "abcd"}], "mistral_v1")


@pytest.mark.parametrize("name", ["v3", "tekken"])
def test_ten_million_private_use_characters_are_refused_in_bounded_memory(name, cli_env):
    """Before the bound, the Rust tokenizer aborted the process (an allocation failure nothing can catch)."""
    script = textwrap.dedent(
        f"""
        import json
        import hf_mistral_kit as kit
        tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file({name!r}))
        try:
            tokenizer.apply_chat_template([{{"role": "user", "content": "\\ue000" * 10_000_000}}])
        except kit.ConversationError as error:
            message = str(error)
        with open("/proc/self/status") as status:  # VmHWM starts anew at exec (ru_maxrss keeps the parent's)
            peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        print(json.dumps({{"message": message, "peak": peak}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=cli_env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "the conversation's text is more than 8,388,608 bytes of UTF-8" in report["message"]
    assert report["peak"] < 2**30
