"""The `hf-mistral-kit` command line, driven as a user drives it: subprocesses, real stdin/stdout, a pseudo-terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.cli import TEMPLATES, ExitCode, main

SCRIPT = Path(sys.executable).with_name("hf-mistral-kit")
CHAT = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi  [INST] there, ça va?"},
    {"role": "assistant", "content": "Fine."},
    {"role": "user", "content": "Bye"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
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
    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "21 °C."},
    {"role": "user", "content": "And tomorrow?"},
]


def cli(*args: str, env: dict, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], input=input, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_user_error(result: subprocess.CompletedProcess, code: int, message: str) -> None:
    """A user error: the documented exit code, one line on stderr naming the problem, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1], result.stderr
    assert lines[-1].startswith("hf-mistral-kit ")


# --- the command itself -----------------------------------------------------------------------------------------


def test_console_script_and_module_give_help_for_every_subcommand(cli_env, capsys):
    assert SCRIPT.is_file()
    top = cli("--help", env=cli_env)
    assert top.returncode == 0
    for code in ExitCode:
        assert f"{int(code):>3}  " in top.stdout
    module = subprocess.run(
        [sys.executable, "-m", "hf_mistral_kit", "--version"], env=cli_env, capture_output=True, text=True
    )
    assert module.returncode == 0 and module.stdout.strip() == f"hf-mistral-kit {version('hf-mistral-kit')}"
    for command in ("demo", "chat", "render", "doctor", "plan", "convert"):  # argparse alone: in-process is enough
        assert command in top.stdout
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        help_text = capsys.readouterr().out
        assert help_text.startswith(f"usage: hf-mistral-kit {command}") and "exit codes:" in help_text


def test_no_subcommand_and_bad_arguments_are_usage_errors(cli_env):
    bare = cli(env=cli_env)
    assert bare.returncode == ExitCode.USAGE and bare.stderr.startswith("usage: hf-mistral-kit")
    unknown = cli("train", env=cli_env)
    assert unknown.returncode == ExitCode.USAGE and "invalid choice: 'train'" in unknown.stderr
    negative = cli("plan", "x", "--context", "-5", env=cli_env)
    assert negative.returncode == ExitCode.USAGE and "expected a positive integer" in negative.stderr


def test_template_choices_are_the_shipped_templates():
    assert list(TEMPLATES) == kit.list_templates()


# --- render -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_render_prints_the_template_text(template, cli_env, tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(CHAT), encoding="utf-8")
    result = cli("render", "--template", template, str(path), env=cli_env)
    assert result.returncode == 0, result.stderr
    expected = kit.render(CHAT, template)
    assert result.stdout == expected + ("" if expected.endswith("\n") else "\n")


def test_render_reads_stdin_objects_with_tools_and_jsonl(cli_env, tmp_path):
    conversation = {"messages": TOOL_CHAT, "tools": TOOLS}
    result = cli("render", "--template", "mistral_v3", "-", input=json.dumps(conversation), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == kit.render(TOOL_CHAT, "mistral_v3", tools=TOOLS) + "\n"

    # One message per line: one conversation.
    per_message = "\n".join(json.dumps(m) for m in CHAT) + "\n"
    result = cli("render", "--template", "mistral_v1", "-", input=per_message, env=cli_env)
    assert result.stdout == kit.render(CHAT, "mistral_v1") + "\n"

    # One conversation per line: --json gives one object each, with ids and pieces of the real tokenizer.
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n\n" + json.dumps(CHAT[:2]) + "\n", encoding="utf-8")
    result = cli("render", "--template", "mistral_v3", "--json", str(path), env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("v3"))
    for row, chat in zip(rows, (CHAT, CHAT[:2]), strict=True):
        ids = tokenizer.apply_chat_template(chat)["input_ids"]
        assert row == {
            "text": kit.render(chat, "mistral_v3"),
            "ids": ids,
            "pieces": tokenizer.convert_ids_to_tokens(ids),
        }


def test_render_tokens_and_check_against_mistral_common(cli_env, tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"messages": TOOL_CHAT, "tools": TOOLS}), encoding="utf-8")
    result = cli("render", "--template", "mistral_v3", "--tokens", "--check", str(path), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "check: 1 conversation matches mistral-common token for token" in result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["index", "id", "piece"]
    table = [row.split(maxsplit=2) for row in rows]
    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("v3"))
    ids = tokenizer.apply_chat_template(TOOL_CHAT, tools=TOOLS)["input_ids"]
    assert [int(i) for _, i, _ in table] == ids
    assert [int(index) for index, _, _ in table] == list(range(len(ids)))
    pieces = [piece for _, _, piece in table]
    assert pieces == tokenizer.convert_ids_to_tokens(ids) and "[AVAILABLE_TOOLS]" in pieces

    # A checkpoint-style tokenizer directory (bare tokenizer.model, version told by its vocabulary) works the same.
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "tokenizer.model").symlink_to(kit.reference_tokenizer_file("v1"))
    result = cli("render", "--tokenizer", str(tmp_path / "ckpt"), "--check", "-", input=json.dumps(CHAT), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == kit.render(CHAT, "mistral_v1") + "\n"


def test_render_chatml_tokens_are_openorcas(cli_env):
    result = cli(
        "render",
        "--template",
        "chatml",
        "--json",
        "--add-generation-prompt",
        "-",
        input=json.dumps(CHAT[:2]),
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["text"].endswith("<|im_start|>assistant\n")
    assert row["ids"][0] == 32001 and row["ids"].count(32000) == 2  # Mistral-7B-OpenOrca's <|im_start|>, <|im_end|>
    check = cli("render", "--template", "chatml", "--check", "-", input=json.dumps(CHAT), env=cli_env)
    assert_user_error(check, ExitCode.USAGE, "mistral-common, which has no ChatML")


def test_render_check_fails_when_mistral_common_disagrees(cli_env, monkeypatch, capsys):
    # A conversation the templates render but mistral-common refuses.
    starts_with_assistant = json.dumps([{"role": "assistant", "content": "Hello"}])
    assert cli("render", "-", input=starts_with_assistant, env=cli_env).returncode == 0
    refused = cli("render", "--check", "-", input=starts_with_assistant, env=cli_env)
    assert_user_error(refused, ExitCode.MISMATCH, "mistral-common rejects the conversation: Conversation must start")

    # An edited template (one space dropped) is caught token by token.
    from hf_mistral_kit.cli import render as render_command

    original = render_command._template_tokenizer

    def edited(template):
        tokenizer, model_file = original(template)
        tokenizer.chat_template = tokenizer.chat_template.replace('" [/INST]"', '"[/INST]"')
        return tokenizer, model_file

    monkeypatch.setattr(render_command, "_template_tokenizer", edited)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(CHAT)))
    assert main(["render", "--check", "-"]) == ExitCode.MISMATCH
    error = capsys.readouterr().err
    assert "differs from mistral-common at token" in error
    assert "kit ['[', '/', 'INST'] vs mistral-common ['▁[', '/', 'INST']" in error


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('[{"role": "user", "content": "x"},\n  {"role": "user" "content": "y"}]', "line 2, column 19"),
        (
            '{"role": "user", "content": "a"}\n{"role": "assistant", "content": "b"}\n{"role": "user", "content": }\n',
            "line 3",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}]}\n{"role": "user", "content": "b"}',
            "line 2 is a single message",
        ),
        ('[{"role": "robot", "content": "x"}]', "message 1 has role 'robot'"),
        ('{"role": "user", "content": "a"}\n{"role": "robot", "content": "b"}', "line 2 has role 'robot'"),
        ('[{"role": "user", "content": 42}]', "content must be a string"),
        ("[]", "non-empty list of messages"),
        ('{"chat": []}', 'an object with "messages"'),
        ("  \n", "is empty"),
        (json.dumps({"messages": TOOL_CHAT, "tools": TOOLS}), "mistral_v1 (Mistral-7B-Instruct v0.1/v0.2"),
    ],
    ids=["json", "jsonl", "mixed", "role", "jsonl-role", "content", "empty-list", "no-messages", "blank", "no-tools"],
)
def test_render_bad_input_names_the_problem(stdin, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["render", "-"]) == ExitCode.USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("hf-mistral-kit render: error: ") and message in error


def test_render_missing_files_and_bad_options(cli_env, tmp_path):
    assert_user_error(cli("render", str(tmp_path / "nope.json"), env=cli_env), ExitCode.MISSING, "does not exist")
    assert_user_error(cli("render", str(tmp_path), env=cli_env), ExitCode.USAGE, "is a directory")
    missing_tokenizer = cli("render", "--tokenizer", str(tmp_path / "tok"), "-", input="[]", env=cli_env)
    assert_user_error(missing_tokenizer, ExitCode.MISSING, "does not exist")
    empty_dir = cli("render", "--tokenizer", str(tmp_path), "-", input=json.dumps(CHAT), env=cli_env)
    assert_user_error(empty_dir, ExitCode.MISSING, "No Mistral tokenizer in")
    both = cli("render", "--template", "chatml", "--tokenizer", str(tmp_path), "-", env=cli_env)
    assert both.returncode == ExitCode.USAGE and "not allowed with argument" in both.stderr
    unknown = cli("render", "--template", "llama", "-", env=cli_env)
    assert unknown.returncode == ExitCode.USAGE and "invalid choice: 'llama'" in unknown.stderr


def test_render_into_a_closed_pipe_exits_quietly(cli_env):
    long_chat = json.dumps([{"role": "user", "content": "hello " * 20000}])
    process = subprocess.Popen(
        [str(SCRIPT), "render", "--tokens", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
        text=True,
    )
    process.stdin.write(long_chat)
    process.stdin.close()
    assert process.stdout.readline().split() == ["index", "id", "piece"]
    process.stdout.close()  # like `| head -1`
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in process.stderr.read()
