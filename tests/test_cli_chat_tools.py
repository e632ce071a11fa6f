"""`hf-mistral-kit chat --tools` and the replies it reads back (issue 18): tools from a JSON or Python file reach the
template; each reply is read with `parse_response`, --jsonl carries its tool_calls and reasoning_content, the text
modes show a call as one `[tool call]` line and thinking between markers, and the history keeps the parsed message.

A tiny random model never writes a tool call, so most tests here run the command on a scripted model: a stand-in
whose `generate` streams the ids of a reply encoded with the tokenizer (the assistant turn of a conversation minus
its prompt), as a model taught that reply would generate them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import hf_mistral_kit as kit
from hf_mistral_kit.cli import ExitCode
from hf_mistral_kit.cli.chat import read_tools, reply_line, tool_call_line
from hf_mistral_kit.tokenizers.replies import parse_response

TESTS = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).with_name("hf-mistral-kit")

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = [{"type": "function", "function": WEATHER}]
QUESTION = {"role": "user", "content": "Weather in Paris?"}
CALL = {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
THINKING = {"role": "assistant", "content": "Let me check.", "reasoning_content": "They want the weather."}

TOOLS_PY = '''\
"""Tools for the chat."""

from json import dumps  # imported, not defined here: not a tool


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return dumps({"city": city})


def add(a: int, b: int = 1) -> int:
    """Adds two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def _helper() -> None:
    pass
'''


# --- a scripted model ------------------------------------------------------------------------------------------


class ScriptedModel:
    """Generates the given replies (lists of ids), one per `generate` call, streamed as `generate` streams them, and
    records every prompt."""

    device = torch.device("cpu")
    name_or_path = "scripted"

    def __init__(self, replies: list[list[int]], eos_token_id: int):
        self.replies = [list(reply) for reply in replies]
        self.prompts: list[list[int]] = []
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)

    def generate(self, input_ids, streamer=None, stopping_criteria=None, max_new_tokens=20, eos_token_id=None, **_):
        self.prompts.append(input_ids[0].tolist())
        ids = input_ids
        if streamer is not None:
            streamer.put(input_ids)
        stop = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
        for token in self.replies.pop(0)[:max_new_tokens]:
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if (stopping_criteria is not None and stopping_criteria(ids, None).any()) or token in stop:
                break
        if streamer is not None:
            streamer.end()
        return ids


def scripted(monkeypatch, tokenizer, *replies: list[int]) -> ScriptedModel:
    """`chat` loads the scripted model (with `tokenizer`) whatever checkpoint it is given."""
    model = ScriptedModel(replies, tokenizer.eos_token_id)
    monkeypatch.setattr("hf_mistral_kit.loading.load_model", lambda *args, **kwargs: (model, tokenizer))
    return model


def _ids(encoding) -> list[int]:
    return list(encoding["input_ids"] if hasattr(encoding, "keys") else encoding)


def encoded_reply(tokenizer, messages: list[dict], reply: dict, tools=TOOLS) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids) of `reply` after `messages`: what a model taught the reply generates."""
    prompt = _ids(tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True))
    full = _ids(tokenizer.apply_chat_template([*messages, reply], tools=tools))
    assert full[: len(prompt)] == prompt
    return prompt, full[len(prompt) :]


def text_reply(tokenizer, text: str) -> list[int]:
    """The ids of a plain text reply (its text, then the end of sequence)."""
    return [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]


@pytest.fixture(scope="module")
def v3(tiny_checkpoints):
    """The tiny Mistral's tokenizer (v3: `[TOOL_CALLS] [{"name": ..., "arguments": ..., "id": ...}]`)."""
    return kit.load_tokenizer(tiny_checkpoints["mistral"])


@pytest.fixture(scope="module")
def v13(mistral_file):
    """A tekken v13 tokenizer with [THINK] (`[THINK]...[/THINK]text[TOOL_CALLS]name[ARGS]{...}`)."""
    return kit.load_tokenizer(mistral_file("tekken-v13"))


def assert_user_error(result: subprocess.CompletedProcess, code: int, *messages: str) -> None:
    """A user error: the documented exit code, one line on stderr naming the problem, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after the progress bars of loading, if any
    assert last.startswith("hf-mistral-kit chat: error: "), result.stderr
    for message in messages:
        assert message in last, result.stderr


@pytest.fixture
def tools_json(tmp_path) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(TOOLS))
    return path


def _jsonl(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- how a parsed reply is shown ----------------------------------------------------------------------------------


def test_a_tool_call_is_one_line_with_keyword_json_arguments():
    call = {
        "type": "function",
        "function": {"name": "book", "arguments": {"city": "Paris", "nights": 2, "rooms": [{"beds": 1}], "late": True}},
    }
    assert tool_call_line(call) == '[tool call] book(city="Paris", nights=2, rooms=[{"beds": 1}], late=true)'
    # No argument; line breaks and non-ASCII in values stay on the line (JSON escapes), names that are not
    # identifiers are quoted.
    assert tool_call_line({"function": {"name": "now", "arguments": {}}}) == "[tool call] now()"
    odd = {"function": {"name": "a\nb", "arguments": {"first-name": "Zoé\nX"}}}
    assert tool_call_line(odd) == '[tool call] "a\\nb"("first-name"="Zoé\\nX")'
    assert "\n" not in tool_call_line(odd)


def test_the_jsonl_line_of_a_parsed_reply(v13):
    reply = {**THINKING, "tool_calls": [CALL]}
    prompt, ids = encoded_reply(v13, [QUESTION], reply)
    message = parse_response(v13, ids, prompt, tools=TOOLS)
    usage = SimpleNamespace(prompt_tokens=len(prompt), new_tokens=len(ids))
    assert reply_line(usage, message) == {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "They want the weather.",
        # v13 writes no call ids
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids)},
    }
    # A plain reply keeps the keys it always had.
    prompt, ids = encoded_reply(v13, [QUESTION], {"role": "assistant", "content": "Sunny."})
    message = parse_response(v13, ids, prompt, tools=TOOLS)
    usage = SimpleNamespace(prompt_tokens=len(prompt), new_tokens=len(ids))
    assert reply_line(usage, message) == {
        "role": "assistant",
        "content": "Sunny.",
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids)},
    }


# --- replies read back, end to end (scripted model) --------------------------------------------------------------


def test_jsonl_carries_calls_and_thinking_and_the_history_keeps_the_parsed_message(
    monkeypatch, run, v13, tiny_checkpoints, tools_json
):
    prompt, call_ids = encoded_reply(v13, [QUESTION], {**THINKING, "tool_calls": [CALL]})
    model = scripted(monkeypatch, v13, call_ids, text_reply(v13, "Sunny."))
    stdin = json.dumps(QUESTION) + "\n" + json.dumps({"content": "Thanks"}) + "\n"
    first, second = _jsonl(
        run("chat", str(tiny_checkpoints["mistral"]), "--tools", str(tools_json), "--jsonl", input=stdin)
    )
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert first == {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "They want the weather.",
        "tool_calls": [call],
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(call_ids)},
    }
    assert second["content"] == "Sunny." and set(second) == {"role", "content", "usage"}
    # The tools reach the template on every turn, and the second prompt renders the first reply as it was generated:
    # it starts with the first prompt and the reply's own ids.
    assert model.prompts[0] == prompt
    assert v13.convert_tokens_to_ids("[AVAILABLE_TOOLS]") in model.prompts[1]
    assert model.prompts[1][: len(prompt) + len(call_ids)] == prompt + call_ids
    # v13 needs an id for a call of the history (and writes none): the history's call has one.
    history = [
        QUESTION,
        {**THINKING, "tool_calls": [{"id": "call00001", **call}]},
        {"role": "user", "content": "Thanks"},
    ]
    assert model.prompts[1] == _ids(v13.apply_chat_template(history, tools=TOOLS, add_generation_prompt=True))


def test_text_modes_show_one_line_per_call_and_mark_thinking(monkeypatch, run, v13, tiny_checkpoints, tools_json):
    other = {"id": "xyzXYZ789", "type": "function", "function": {"name": "get_weather", "arguments": {}}}
    two_calls = {**THINKING, "tool_calls": [CALL, other]}
    _, ids = encoded_reply(v13, [QUESTION], two_calls)
    scripted(monkeypatch, v13, ids, text_reply(v13, "Sunny."))
    result = run("chat", str(tiny_checkpoints["mistral"]), "--tools", str(tools_json), input="Weather?\nThanks\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "[thinking] They want the weather. [/thinking]\n"
        "Let me check.\n"
        '[tool call] get_weather(city="Paris")\n'
        "[tool call] get_weather()\n"
        "Sunny.\n"
    )


def test_v3_calls_and_malformed_calls(monkeypatch, run, v3, tiny_checkpoints, tools_json):
    prompt, ids = encoded_reply(v3, [QUESTION], {"role": "assistant", "tool_calls": [CALL]})
    # A call cut short, and a call of a tool that was not offered: text, as the parser reads it.
    tool_calls = v3.convert_tokens_to_ids("[TOOL_CALLS]")
    cut = [tool_calls, *v3.encode(' [{"name": "get_weather", "argum', add_special_tokens=False), v3.eos_token_id]
    unknown = [tool_calls, *v3.encode(' [{"name": "rm", "arguments": {}}]', add_special_tokens=False)]
    unknown = [*v3.encode("Sure.", add_special_tokens=False), *unknown, v3.eos_token_id]
    model = scripted(monkeypatch, v3, ids, cut, unknown)
    lines = [json.dumps({"content": text}) for text in ("Weather in Paris?", "Again", "Delete it")]
    model_dir = str(tiny_checkpoints["mistral"])
    replies = _jsonl(run("chat", model_dir, "--tools", str(tools_json), "--jsonl", input="\n".join(lines) + "\n"))
    assert replies[0]["content"] is None and replies[0]["tool_calls"] == [CALL]
    assert replies[0]["usage"]["prompt_tokens"] == len(prompt)
    assert replies[1]["content"] == '[TOOL_CALLS] [{"name": "get_weather", "argum' and "tool_calls" not in replies[1]
    assert replies[2]["content"] == 'Sure.[TOOL_CALLS] [{"name": "rm", "arguments": {}}]'
    assert model.prompts[0] == prompt

    scripted(monkeypatch, v3, ids, cut, unknown)
    result = run("chat", model_dir, "--tools", str(tools_json), input="Weather in Paris?\nAgain\nDelete it\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        '[tool call] get_weather(city="Paris")\n'
        '[TOOL_CALLS] [{"name": "get_weather", "argum\n'
        'Sure.[TOOL_CALLS] [{"name": "rm", "arguments": {}}]\n'
    )


def test_the_text_shown_is_the_content_parsed(monkeypatch, run, v3, tiny_checkpoints):
    # A control token the format does not read ([INST] in a reply, or one a random model writes) is left out, as
    # mistral-common decodes a reply: the streamed text shows the content as the JSONL line has it.
    words = [v3.encode(text, add_special_tokens=False) for text in ("Hi", " there", "\nnew line")]
    inst = v3.convert_tokens_to_ids("[INST]")
    control = next(token for token in v3.get_vocab() if token.startswith("[control_"))
    reply = [*words[0], inst, *words[1], v3.convert_tokens_to_ids(control), *words[2], v3.eos_token_id]
    scripted(monkeypatch, v3, reply)
    (line,) = _jsonl(run("chat", str(tiny_checkpoints["mistral"]), "--jsonl", input='"Hello"\n'))
    assert line["content"].startswith("Hi") and "[INST]" not in line["content"] and control not in line["content"]
    scripted(monkeypatch, v3, reply)
    assert run("chat", str(tiny_checkpoints["mistral"]), input="Hello\n").stdout == line["content"] + "\n"


def test_text_next_to_a_call_where_the_version_takes_either(monkeypatch, run, v3, tiny_checkpoints):
    # Without --tools any name is a call. v3 refuses text and calls in one assistant turn, and a call without an id
    # in the history: the history keeps the call, with an id.
    tool_calls = v3.convert_tokens_to_ids("[TOOL_CALLS]")
    call = v3.encode(' [{"name": "get_weather", "arguments": {"city": "Paris"}}]', add_special_tokens=False)
    reply = [*v3.encode("Sure.", add_special_tokens=False), tool_calls, *call, v3.eos_token_id]
    model = scripted(monkeypatch, v3, reply, text_reply(v3, "Sunny."))
    stdin = json.dumps(QUESTION) + "\n" + json.dumps({"content": "Thanks"}) + "\n"
    first, _ = _jsonl(run("chat", str(tiny_checkpoints["mistral"]), "--jsonl", input=stdin))
    parsed = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert first["content"] == "Sure." and first["tool_calls"] == [parsed]
    history = [
        QUESTION,
        {"role": "assistant", "tool_calls": [{"id": "call00001", **parsed}]},
        {"role": "user", "content": "Thanks"},
    ]
    assert model.prompts[1] == _ids(v3.apply_chat_template(history, add_generation_prompt=True))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interactive_mode_streams_text_and_shows_calls(v13, mistral_file, tiny_checkpoints, cli_env, tmp_path):
    import pexpect

    _, ids = encoded_reply(v13, [QUESTION], {**THINKING, "tool_calls": [CALL]})
    replies = [ids, text_reply(v13, "Sunny in Paris.")]
    script = tmp_path / "scripted_chat.py"
    script.write_text(
        textwrap.dedent(f"""\
            import sys
            sys.path.insert(0, {str(TESTS)!r})
            import pytest
            import hf_mistral_kit as kit
            from hf_mistral_kit.cli import main
            from test_cli_chat_tools import scripted

            tokenizer = kit.load_tokenizer({str(mistral_file("tekken-v13"))!r})
            scripted(pytest.MonkeyPatch(), tokenizer, *{replies!r})
            sys.exit(main(["chat", {str(tiny_checkpoints["mistral"])!r}, "--tools", {str(tmp_path / "tools.py")!r}]))
        """)
    )
    (tmp_path / "tools.py").write_text(TOOLS_PY)
    child = pexpect.spawn(
        sys.executable, [str(script)], env=cli_env, encoding="utf-8", timeout=60, preexec_fn=_default_sigint
    )
    child.expect(r", tools get_weather, add\)")  # the banner names the tools of tools.py
    child.expect(">>> ")
    child.sendline("Weather in Paris?")
    child.expect("Weather in Paris\\?\r\n")  # the terminal's echo
    child.expect(">>> ")
    assert child.before == (
        '[thinking] They want the weather. [/thinking]\r\nLet me check.\r\n[tool call] get_weather(city="Paris")\r\n'
    )
    child.sendline("Thanks")
    child.expect("Thanks\r\n")
    child.expect(">>> ")
    assert child.before == "Sunny in Paris.\r\n"
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# --- --tools FILE ----------------------------------------------------------------------------------------------


def test_json_tools_in_openai_or_bare_form(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([TOOLS[0], {**WEATHER, "name": "get_time"}]))
    assert read_tools(str(path)) == [TOOLS[0], {"type": "function", "function": {**WEATHER, "name": "get_time"}}]


def test_python_tools_are_the_public_functions_defined_in_the_file(tmp_path):
    path = tmp_path / "my-tools.py"
    path.write_text(TOOLS_PY)
    tools = read_tools(str(path))
    assert [tool.__name__ for tool in tools] == ["get_weather", "add"]
    assert tools[1](2) == 3
    (tmp_path / "listed.py").write_text(TOOLS_PY + '\n__all__ = ["add"]\n')
    assert [tool.__name__ for tool in read_tools(str(tmp_path / "listed.py"))] == ["add"]


@pytest.mark.parametrize("kind", ["json", "py"])
def test_the_tools_reach_the_template_of_a_real_model(kind, cli_env, tiny_checkpoints, tmp_path):
    path = tmp_path / f"tools.{kind}"
    path.write_text(json.dumps(TOOLS) if kind == "json" else TOOLS_PY)
    stdin = json.dumps({"content": "Hi"}) + "\n"
    result = subprocess.run(
        [
            str(SCRIPT),
            "chat",
            str(tiny_checkpoints["mistral"]),
            "--tools",
            str(path),
            "--jsonl",
            "--max-new-tokens",
            "2",
        ],
        input=stdin,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    (reply,) = _jsonl(result)
    tokenizer = kit.load_tokenizer(tiny_checkpoints["mistral"])
    tools = TOOLS if kind == "json" else read_tools(str(path))
    prompt = _ids(
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tools=tools, add_generation_prompt=True)
    )
    assert tokenizer.convert_tokens_to_ids("[AVAILABLE_TOOLS]") in prompt
    assert reply["usage"]["prompt_tokens"] == len(prompt)


def test_tools_the_scripted_model_sees(monkeypatch, run, v3, tiny_checkpoints, tmp_path):
    (tmp_path / "tools.py").write_text(TOOLS_PY)
    model = scripted(monkeypatch, v3, text_reply(v3, "Hi."))
    result = run("chat", str(tiny_checkpoints["mistral"]), "--tools", str(tmp_path / "tools.py"), input="Hi\n")
    assert result.returncode == 0, result.stderr
    text = v3.decode(model.prompts[0], skip_special_tokens=False)
    assert (
        '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "The weather'
        in text
    )
    assert '"name": "add"' in text and "_helper" not in text and "dumps" not in text


def test_tools_file_errors(run, tiny_checkpoints, tmp_path):
    model = str(tiny_checkpoints["mistral"])

    def tools(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    assert_user_error(run("chat", model, "--tools", str(tmp_path / "nope.json")), ExitCode.MISSING, "does not exist")
    assert_user_error(run("chat", model, "--tools", str(tmp_path / "nope.py")), ExitCode.MISSING, "does not exist")
    assert_user_error(run("chat", model, "--tools", str(tmp_path)), ExitCode.USAGE, "is a directory")
    bad_json = run("chat", model, "--tools", tools("bad.json", '[{"type": "function",'))
    assert_user_error(bad_json, ExitCode.USAGE, "bad.json: invalid JSON at line 1")
    assert_user_error(run("chat", model, "--tools", tools("o.json", "{}")), ExitCode.USAGE, "expected one JSON list")
    assert_user_error(run("chat", model, "--tools", tools("e.json", "[]")), ExitCode.USAGE, "lists no tools")
    unnamed = run("chat", model, "--tools", tools("u.json", '[{"type": "function", "function": {}}]'))
    assert_user_error(unnamed, ExitCode.USAGE, "tool 1 needs", '"name"')

    undocumented = tools("undocumented.py", "def get_weather(city: str) -> str:\n    return city\n")
    assert_user_error(
        run("chat", model, "--tools", undocumented),
        ExitCode.USAGE,
        "function get_weather cannot be a tool",
        "no docstring",
        "Fix: give get_weather type hints and a Google-style docstring",
    )
    untyped = tools("untyped.py", 'def f(x):\n    """F.\n\n    Args:\n        x: X.\n    """\n')
    assert_user_error(
        run("chat", model, "--tools", untyped), ExitCode.USAGE, "function f cannot be a tool", "type hint"
    )
    syntax = tools("syntax.py", "def f(:\n")
    assert_user_error(run("chat", model, "--tools", syntax), ExitCode.USAGE, "raised SyntaxError at line 1")
    raising = tools("raising.py", "import no_such_module_here\n")
    assert_user_error(run("chat", model, "--tools", raising), ExitCode.USAGE, "raised ModuleNotFoundError")
    exiting = tools("exiting.py", "raise SystemExit(3)\n")
    assert_user_error(run("chat", model, "--tools", exiting), ExitCode.USAGE, "raised SystemExit")
    empty = tools("empty.py", "X = 1\n")
    assert_user_error(run("chat", model, "--tools", empty), ExitCode.USAGE, "defines no public function")


def test_tools_for_a_model_without_tool_calling(run, tiny_checkpoints, tools_json):
    # The tiny Mixtral has tokenizer v1: its template has no tool calling.
    result = run("chat", str(tiny_checkpoints["mixtral"]), "--tools", str(tools_json), input="Hi\n")
    assert_user_error(result, ExitCode.USAGE, f"--tools {tools_json}: mistral_v1 ", "has no tool calling")
