"""The `hf-mistral-kit` command line, driven as a user drives it: subprocesses, real stdin/stdout, a pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from transformers import __version__ as transformers_version
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

import hf_mistral_kit as kit
from chats import TOOL_CHAT, TOOLS
from hf_mistral_kit.cli import COMMAND_EXIT_CODES, TEMPLATES, ExitCode
from hf_mistral_kit.cli.common import EXIT_CODE_MEANINGS, MAX_INPUT_BYTES, CLIError
from reference_configs import MISTRAL_7B, MIXTRAL_8X7B, MIXTRAL_8X7B_PARAMS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("hf-mistral-kit")
CHAT = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi  [INST] there, ça va?"},
    {"role": "assistant", "content": "Fine."},
    {"role": "user", "content": "Bye"},
]


def cli(*args: str, env: dict, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`hf-mistral-kit ARGS` in a subprocess, as a user runs it."""
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


def test_help_for_every_subcommand_and_python_dash_m(cli_env, run):
    assert SCRIPT.is_file()
    top = subprocess.run(
        [sys.executable, "-m", "hf_mistral_kit", "--help"], env=cli_env, capture_output=True, text=True, check=False
    )
    assert top.returncode == 0 and top.stdout.startswith("usage: hf-mistral-kit")
    for code in ExitCode:
        assert f"{int(code):>3}  " in top.stdout
    assert run("--version").stdout.strip() == f"hf-mistral-kit {version('hf-mistral-kit')}"
    for command in ("demo", "chat", "render", "doctor", "plan", "convert"):
        assert command in top.stdout
        result = run(command, "--help")
        assert result.returncode == 0
        assert result.stdout.startswith(f"usage: hf-mistral-kit {command}") and "exit codes:" in result.stdout
        # issue 20: the codes this command can end with, on one line, not the whole table again.
        (codes,) = [line for line in result.stdout.splitlines() if line.startswith("exit codes: ")]
        listed = [int(code) for code in re.findall(r"(\d+) [a-z ]+[,;]", codes)]
        assert listed == [int(code) for code in COMMAND_EXIT_CODES[command]] and "1 is a bug" in codes
        assert EXIT_CODE_MEANINGS[ExitCode.MISSING] not in result.stdout
    assert "5 mismatch" in run("render", "--help").stdout and "5 mismatch" not in run("plan", "--help").stdout
    # The defaults are said: render's template, plan's and demo's context.
    assert "Without --template or --tokenizer the template is mistral_v1" in " ".join(
        run("render", "--help").stdout.split()
    )
    assert "(default: 4096, or the model's window if shorter)" in " ".join(run("plan", "--help").stdout.split())


def test_no_subcommand_and_bad_arguments_are_usage_errors(cli_env, run):
    bare = cli(env=cli_env)
    assert bare.returncode == ExitCode.USAGE and bare.stderr.startswith("usage: hf-mistral-kit")
    unknown = run("train")
    assert unknown.returncode == ExitCode.USAGE and "invalid choice: 'train'" in unknown.stderr
    negative = run("plan", "x", "--context", "-5")
    assert negative.returncode == ExitCode.USAGE and "expected a positive integer" in negative.stderr


def test_readme_lists_the_exit_codes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\d+)` \| (.+?) \|$", readme, flags=re.MULTILINE)
    assert [int(code) for code, _ in rows] == [int(code) for code in ExitCode]


def test_template_choices_are_the_shipped_templates():
    assert list(TEMPLATES) == kit.list_templates()


# --- render -----------------------------------------------------------------------------------------------------


def test_render_prints_the_template_text(run, tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(CHAT), encoding="utf-8")
    for template in TEMPLATES:
        result = run("render", "--template", template, str(path))
        expected = kit.render(CHAT, template)
        assert result.stdout == expected + ("" if expected.endswith("\n") else "\n")
    assert run("render", str(path)).stdout == kit.render(CHAT, "mistral_v1") + "\n"  # the default template


def test_render_reads_stdin_objects_with_tools_and_jsonl(cli_env, run, tmp_path):
    conversation = {"messages": TOOL_CHAT, "tools": TOOLS}
    result = cli("render", "--template", "mistral_v3", "-", input=json.dumps(conversation), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == kit.render(TOOL_CHAT, "mistral_v3", tools=TOOLS) + "\n"

    # One message per line: one conversation.
    per_message = "\n".join(json.dumps(m) for m in CHAT) + "\n"
    assert run("render", "-", input=per_message).stdout == kit.render(CHAT, "mistral_v1") + "\n"

    # One conversation per line: --json gives one object each, with ids and pieces of the real tokenizer.
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n\n" + json.dumps(CHAT[:2]) + "\n", encoding="utf-8")
    result = run("render", "--template", "mistral_v3", "--json", str(path))
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


def test_render_tokens_and_check_against_mistral_common(cli_env, run, tmp_path):
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
    result = run("render", "--tokenizer", str(tmp_path / "ckpt"), "--check", "-", input=json.dumps(CHAT))
    assert result.returncode == 0, result.stderr
    assert result.stdout == kit.render(CHAT, "mistral_v1") + "\n"


def test_render_chatml_tokens_are_openorcas(run):
    result = run("render", "--template", "chatml", "--json", "--add-generation-prompt", "-", input=json.dumps(CHAT[:2]))
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["text"].endswith("<|im_start|>assistant\n")
    assert row["ids"][0] == 32001 and row["ids"].count(32000) == 2  # Mistral-7B-OpenOrca's <|im_start|>, <|im_end|>
    check = run("render", "--template", "chatml", "--check", "-", input=json.dumps(CHAT))
    assert_user_error(check, ExitCode.USAGE, "mistral-common, which has no ChatML")


def test_render_check_fails_when_mistral_common_disagrees(cli_env, run, monkeypatch):
    # A conversation mistral-common refuses is refused by the kit's validation, with the rule and the fix.
    starts_with_assistant = json.dumps([{"role": "assistant", "content": "Hello"}])
    for options in ([], ["--check"], ["--tokens"]):
        refused = run("render", *options, "-", input=starts_with_assistant)
        assert_user_error(refused, ExitCode.USAGE, "messages[0] (assistant): a conversation of one message must be")

    # An edited template (one space dropped) is caught token by token.
    from hf_mistral_kit.cli import render as render_command

    original = render_command._template_tokenizer

    def edited(template):
        tokenizer, model_file = original(template)
        tokenizer.chat_template = tokenizer.chat_template.replace('" [/INST]"', '"[/INST]"')
        return tokenizer, model_file

    monkeypatch.setattr(render_command, "_template_tokenizer", edited)
    mismatch = run("render", "--check", "-", input=json.dumps(CHAT))
    assert_user_error(mismatch, ExitCode.MISMATCH, "differs from mistral-common at token")
    assert "kit ['[', '/', 'INST'] vs mistral-common ['▁[', '/', 'INST']" in mismatch.stderr


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
def test_render_bad_input_names_the_problem(stdin, message, run):
    result = run("render", "-", input=stdin)
    assert_user_error(result, ExitCode.USAGE, message)
    assert result.stderr.count("\n") == 1 and result.stdout == ""


# issue 19: the JSONL reader is linear in its input, and render reads a bounded input, refusing binary at once.


class _ScannedText(str):
    """A str that adds up how many characters its searching methods and slices look at."""

    scanned = 0

    def _add(self, start=None, end=None):
        start, end, _ = slice(start, end).indices(len(self))
        _ScannedText.scanned += max(end - start, 0)

    def count(self, sub, start=None, end=None):
        self._add(start, end)
        return super().count(sub, start, end)

    def find(self, sub, start=None, end=None):
        self._add(start, end)
        return super().find(sub, start, end)

    def rfind(self, sub, start=None, end=None):
        self._add(start, end)
        return super().rfind(sub, start, end)

    def index(self, sub, start=None, end=None):
        self._add(start, end)
        return super().index(sub, start, end)

    def rindex(self, sub, start=None, end=None):
        self._add(start, end)
        return super().rindex(sub, start, end)

    def splitlines(self, keepends=False):
        self._add()
        return super().splitlines(keepends)

    def __getitem__(self, key):
        if isinstance(key, slice):
            self._add(key.start, key.stop)
        return super().__getitem__(key)


def test_the_jsonl_reader_looks_at_each_character_a_bounded_number_of_times(monkeypatch):
    """Structural, not timed: reading N lines scans O(N) characters (it scanned ~N**2 / 2 lines' worth before)."""
    from hf_mistral_kit.cli.common import json_values

    lines = 4000
    text = "\n".join(json.dumps({"role": "user", "content": f"message {i}"}) for i in range(lines)) + "\n"
    monkeypatch.setattr(_ScannedText, "scanned", 0)
    values = json_values(_ScannedText(text), "<stdin>")
    assert [line for line, _ in values] == list(range(1, lines + 1))
    assert _ScannedText.scanned <= 2 * len(text), f"scanned {_ScannedText.scanned:,} characters of {len(text):,}"

    # Line numbers stay exact across blank lines, several values on one line and values spanning lines.
    mixed = '\n\n{"a": 1} {"b": 2}\n[1,\n 2]\n\n"s"\n'
    assert [line for line, _ in json_values(mixed, "x")] == [3, 3, 4, 7]
    late = '{"role": "user", "content": "a"}\n' * 3000 + '{"role": "user" "content": "b"}\n'
    with pytest.raises(CLIError, match=r"^x: invalid JSON at line 3001, column 17: Expecting ',' delimiter\.$"):
        json_values(late, "x")


MEMORY_RUN = """
import json, os, resource, subprocess, sys

FEED = "import sys\\nwhile True: sys.stdout.buffer.write(b'{}\\\\n' * 65536)"
script, source = sys.argv[1], sys.argv[2]

def capped():  # a regression must not take the machine's memory: 2 GB of address space at most
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

feeder = None
if source == "/dev/zero":
    stdin = open(source, "rb")
else:  # an endless stream of text that is not binary
    feeder = subprocess.Popen([sys.executable, "-c", FEED], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdin = feeder.stdout
result = subprocess.run(
    [script, "render", "--template", "mistral_v3", "-"], stdin=stdin, capture_output=True, text=True,
    preexec_fn=capped, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
)
if feeder is not None:
    feeder.kill()
    feeder.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": result.returncode, "stderr": result.stderr, "peak": peak}))
"""


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/dev/zero", "<stdin> is binary data, not text (byte 0x00 at offset 0): pass a JSON or JSONL"),
        ("endless text", "<stdin> is larger than 64 MiB, the most the kit reads as one input: split it"),
    ],
    ids=["dev-zero", "endless-text"],
)
def test_render_of_an_endless_stdin_stops_with_a_usage_error_in_bounded_memory(cli_env, source, message):
    """`hf-mistral-kit render - < /dev/zero` grew past 3.8 GB, then suggested --preset 4bit (render has none)."""
    measured = subprocess.run(
        [sys.executable, "-c", MEMORY_RUN, str(SCRIPT), source],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result = json.loads(measured.stdout)
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == ExitCode.USAGE and len(lines) == 1, result["stderr"]
    assert lines[0].startswith("hf-mistral-kit render: error: ") and message in lines[0]
    assert "preset" not in lines[0]
    assert result["peak"] < 2**30, f"peak memory {result['peak'] / 2**20:.0f} MiB"


def test_render_refuses_files_over_the_input_bound_and_says_so_in_its_help(run, tmp_path):
    huge = tmp_path / "huge.jsonl"
    huge.write_bytes(b'{"role": "user", "content": "a"}\n')
    os.truncate(huge, MAX_INPUT_BYTES + 1)  # sparse: nothing is written, and nothing must be read
    assert_user_error(run("render", str(huge)), ExitCode.USAGE, f"{huge} is larger than 64 MiB, the most the kit")
    assert "(at most 64 MiB)" in run("render", "--help").stdout


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        (["render", "-"], "Render a smaller input: split the file"),
        (["chat", "x", "--preset", "4bit"], "Try a shorter context or a smaller model (4bit is the smallest preset)."),
    ],
    ids=["render", "chat-4bit"],
)
def test_out_of_memory_suggests_a_smaller_preset_only_where_there_is_one(run, monkeypatch, args, fix):
    import importlib

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(importlib.import_module(f"hf_mistral_kit.cli.{args[0]}"), "run", exhausted)
    result = run(*args, input="[]")
    assert_user_error(result, ExitCode.OUT_OF_MEMORY, f"out of memory (host RAM). {fix}")
    if args[0] == "render":
        assert "preset" not in result.stderr


def test_render_missing_files_and_bad_options(cli_env, run, tmp_path):
    assert_user_error(cli("render", str(tmp_path / "nope.json"), env=cli_env), ExitCode.MISSING, "does not exist")
    assert_user_error(run("render", str(tmp_path)), ExitCode.USAGE, "is a directory")
    missing_tokenizer = run("render", "--tokenizer", str(tmp_path / "tok"), "-", input="[]")
    assert_user_error(missing_tokenizer, ExitCode.MISSING, "does not exist")
    empty_dir = run("render", "--tokenizer", str(tmp_path), "-", input=json.dumps(CHAT))
    assert_user_error(empty_dir, ExitCode.MISSING, "No Mistral tokenizer in")
    both = run("render", "--template", "chatml", "--tokenizer", str(tmp_path), "-")
    assert both.returncode == ExitCode.USAGE and "not allowed with argument" in both.stderr
    unknown = run("render", "--template", "llama", "-")
    assert unknown.returncode == ExitCode.USAGE and "invalid choice: 'llama'" in unknown.stderr
    exclusive = run("render", "--add-generation-prompt", "--continue-final-message", "-", input=json.dumps(CHAT))
    assert_user_error(exclusive, ExitCode.USAGE, "exclude each other")


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


# --- demo -------------------------------------------------------------------------------------------------------


def readme_install_and_demo_command() -> list[str]:
    """What the README's first command line runs after creating the venv and installing (not run: it makes a venv)."""
    first = (ROOT / "README.md").read_text(encoding="utf-8").split("```bash\n", 1)[1].splitlines()[0]
    setup, *_, demo = first.split(" && ")
    assert setup == "python3 -m venv .venv" and demo == ".venv/bin/hf-mistral-kit demo"
    return demo.removeprefix(".venv/bin/").split()


def test_demo_offline_from_an_empty_cache_in_under_a_minute(cli_env, tmp_path):
    from hf_mistral_kit.cli.demo import CONVERSATION

    script, *args = readme_install_and_demo_command()
    assert script == SCRIPT.name
    env = {**cli_env, "HF_MISTRAL_KIT_CACHE": str(tmp_path / "cache")}
    start = time.perf_counter()
    result = cli(*args, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert elapsed < 60, f"demo took {elapsed:.1f} s"
    assert "RANDOM weights" in out and "noise" in out
    assert "building a tiny random mistral" in out and "building a tiny random mixtral" in out
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"tiny-mistral-{version('hf-mistral-kit')}",
        f"tiny-mixtral-{version('hf-mistral-kit')}",
    ]
    for name in TEMPLATES:  # every template renders the same conversation, shown verbatim
        assert f"--- {name}\n{kit.render(CONVERSATION, name, add_generation_prompt=name == 'chatml')}" in out
    assert out.count("preset 'auto'") == 2 and out.count("memory plan:") == 2
    assert "KitMistralForCausalLM" in out and "KitMixtralForCausalLM" in out
    assert "template mistral_v3" in out and "template mistral_v1" in out
    assert out.count(" tokens/s ") == 2
    assert "Traceback" not in result.stderr

    again = cli("demo", "--max-new-tokens", "4", env=env, timeout=120)  # cached: nothing is built twice
    assert again.returncode == 0 and "building" not in again.stdout and "4 tokens in" in again.stdout


def test_demo_on_a_given_model(cli_env, run, tiny_checkpoints):
    import torch

    result = cli("demo", "--model", str(tiny_checkpoints["mixtral"]), "--max-new-tokens", "3", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "RANDOM" not in result.stdout and "building" not in result.stdout
    assert f"== model: {tiny_checkpoints['mixtral']}" in result.stdout and "3 tokens in" in result.stdout
    impossible = run("demo", "--preset", "fa2")
    if not torch.cuda.is_available():
        assert_user_error(impossible, ExitCode.USAGE, "flash_attention_2 needs a CUDA GPU")
        assert impossible.stdout == ""  # refused before printing or building anything
    missing = run("demo", "--model", "./no-such-checkpoint")
    assert_user_error(missing, ExitCode.MISSING, "no-such-checkpoint does not exist")


# The 2025-26 architectures (issue 21), each as `tiny_model` builds it: what a user runs on a checkpoint works.
NEW_KINDS = [
    pytest.param(
        kind,
        marks=pytest.mark.skipif(
            kind not in CONFIG_MAPPING_NAMES, reason=f"transformers {transformers_version} has no {kind}"
        ),
    )
    for kind in ("ministral", "ministral3", "mistral4", "mistral3", "mistral_large4")
]


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_demo_chat_and_plan_on_every_architecture(kind, run, kit_cache):
    path = str(kit.tiny_model(kind))
    plan = run("plan", path, "--gpu", "h100")
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"^fits +yes on NVIDIA H100", plan.stdout, re.MULTILINE), plan.stdout
    demo = run("demo", "--model", path, "--max-new-tokens", "3", "--preset", "cpu")
    assert demo.returncode == 0, demo.stderr
    assert f"== model: {path}" in demo.stdout and "3 tokens in" in demo.stdout
    chat = run("chat", path, "--jsonl", "--max-new-tokens", "4", "--preset", "cpu", input='{"content": "Hi"}\n')
    assert chat.returncode == 0, chat.stderr
    (reply,) = [json.loads(line) for line in chat.stdout.splitlines()]
    assert reply["role"] == "assistant" and reply["usage"]["completion_tokens"] <= 4
    if kind != "mistral4":
        return
    # Mistral Small 4's tokenizer v15 takes model settings: --reasoning-effort, one of the tokenizer file's values.
    high = run(
        "chat", path, "--jsonl", "--max-new-tokens", "1", "--reasoning-effort", "high", input='{"content": "Hi"}\n'
    )
    (reply,) = [json.loads(line) for line in high.stdout.splitlines()]
    assert reply["usage"]["prompt_tokens"] > 0 and high.returncode == 0
    low = run("chat", path, "--reasoning-effort", "low", input="Hi\n")
    assert_user_error(low, ExitCode.USAGE, "--reasoning-effort low: reasoning_effort should be one of ['none', 'high']")
    rendered = run(
        "render",
        "--tokenizer",
        path,
        "--reasoning-effort",
        "high",
        "--check",
        "-",
        input='[{"role": "user", "content": "Hi"}]',
    )
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith('<s>[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS][INST]Hi[/INST]')


# --- chat -------------------------------------------------------------------------------------------------------


def _jsonl(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_chat_through_pipes_keeps_history_and_resets(cli_env, run, tiny_checkpoints):
    model = str(tiny_checkpoints["mistral"])
    lines = [{"content": "Hello"}, "How are you?", {"role": "user", "content": "/reset"}, {"content": "Hello"}]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    replies = _jsonl(
        cli("chat", model, "--jsonl", "--temperature", "0", "--max-new-tokens", "8", input=stdin, env=cli_env)
    )
    # One output line per input line: /reset answers with an event.
    assert [r.get("event") for r in replies] == [None, None, "reset", None]
    first, second, reset, after_reset = replies
    assert all(r["role"] == "assistant" for r in (first, second, after_reset))
    # The second prompt holds the first exchange; /reset forgets it, so the same question gets the same reply.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert after_reset == first and reset == {"event": "reset"}
    assert first["usage"]["completion_tokens"] == 8
    # Blank lines and /exit answer too: one line out per line in.
    events = run("chat", model, "--jsonl", "--max-new-tokens", "1", input='\n  \n"/exit"\n{}\n')
    assert [json.loads(line) for line in events.stdout.splitlines()] == [
        {"event": "empty"},
        {"event": "empty"},
        {"event": "exit"},
    ]

    # Plain lines: the same replies, one per input line.
    plain = cli(
        "chat",
        model,
        "--temperature",
        "0",
        "--max-new-tokens",
        "8",
        input="Hello\n\nHow are you?\n/reset\nHello\n",
        env=cli_env,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "".join(r["content"] + "\n" for r in (first, second, after_reset))


def test_chat_reply_is_greedy_generate_with_the_template(cli_env, tiny_checkpoints):
    model_path = tiny_checkpoints["mixtral"]
    system = "You answer in French."
    stdin = json.dumps({"content": "Hello there"}) + "\n"
    (reply,) = _jsonl(
        cli(
            "chat",
            str(model_path),
            "--jsonl",
            "--system",
            system,
            "--temperature",
            "0",
            "--max-new-tokens",
            "10",
            input=stdin,
            env=cli_env,
        )
    )
    model, tokenizer = kit.load_model(model_path)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hello there"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    output = model.generate(**inputs, do_sample=False, max_new_tokens=10)
    new = output[0, inputs["input_ids"].shape[1] :]
    assert reply["usage"] == {"prompt_tokens": inputs["input_ids"].shape[1], "completion_tokens": len(new)}
    assert reply["content"] == tokenizer.decode(new, skip_special_tokens=True)


def test_chat_with_another_template(cli_env, tiny_checkpoints):
    stdin = json.dumps({"content": "Hi"}) + "\n"
    result = cli(
        "chat",
        str(tiny_checkpoints["mistral"]),
        "--template",
        "chatml",
        "--jsonl",
        "--max-new-tokens",
        "4",
        input=stdin,
        env=cli_env,
    )
    (reply,) = _jsonl(result)
    assert "chatml added tokens the model has never seen" in result.stderr
    tokenizer = kit.load_tokenizer(tiny_checkpoints["mistral"])
    with pytest.warns(UserWarning, match="resize"):
        kit.apply_chat_template(tokenizer, "chatml")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)["input_ids"]
    assert reply["usage"]["prompt_tokens"] == len(ids)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def _default_sigint() -> None:
    """Children of a background job inherit an ignored SIGINT (POSIX): restore it, as a user's terminal has it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_chat_seed_is_reproducible_and_quiet(cli_env, tiny_checkpoints):
    """issue 20: `--seed` went through transformers.set_seed, whose module (transformers.trainer_utils) imports peft
    and so bitsandbytes: ~2 s, and bitsandbytes' kernel-hub warning, on a model that is not even quantized."""
    args = ["chat", str(tiny_checkpoints["mistral"]), "--preset", "cpu", "--temperature", "1", "--max-new-tokens", "8"]
    first, again, other = (cli(*args, "--seed", seed, env=cli_env, input="Hello\n") for seed in ("7", "7", "8"))
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout != other.stdout  # the seed decides what is sampled
    lines = first.stderr.replace("\r", "\n").splitlines()
    assert [line for line in lines if line.strip() and "Loading weights" not in line] == [], first.stderr


def test_a_refused_message_in_a_terminal_is_said_and_the_chat_goes_on(tiny_checkpoints, monkeypatch, capsys):
    # A conversation the kit refuses (here: more text than one may hold) is one line, not the end of the session.
    import io

    from hf_mistral_kit.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    typed = iter(["x" * (8 * 2**20 + 1), "hi"])

    def type_a_line(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", type_a_line)
    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["chat", str(tiny_checkpoints["mistral"]), "--max-new-tokens", "2"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[1].startswith("(not sent: messages[0] (user): the conversation's text is more than 8,388,608 bytes")
    assert len(said) == 4 and said[2]  # then the reply to "hi", and the newline Ctrl-D prints


def test_chat_in_a_terminal(tiny_checkpoints, cli_env):
    import pexpect

    child = pexpect.spawn(
        str(SCRIPT),
        ["chat", str(tiny_checkpoints["mistral"]), "--temperature", "0", "--max-new-tokens", "100000"],
        env=cli_env,
        encoding="utf-8",
        timeout=60,
        searchwindowsize=4000,  # the reply floods the terminal: search only its tail
        preexec_fn=_default_sigint,
    )
    child.expect("/reset clears the history, /exit")
    child.expect(">>> ")
    child.sendline("Hello")
    child.expect("Hello\r\n")  # the terminal's echo
    child.expect(r"\S")  # the reply is streaming (100000 tokens: it is still going when Ctrl-C comes)
    child.sendintr()
    child.expect(r"\[interrupted\]")
    child.expect(">>> ")  # the session goes on
    child.sendintr()  # Ctrl-C at the prompt does not leave either
    child.expect("type /exit or press Ctrl-D")
    child.expect(">>> ")
    child.sendline("/help")
    child.expect("unknown command /help")
    child.sendline("/reset")
    child.expect(r"\(history cleared\)")
    child.expect(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    child = pexpect.spawn(
        str(SCRIPT),
        ["chat", str(tiny_checkpoints["mistral"])],
        env=cli_env,
        encoding="utf-8",
        timeout=60,
        preexec_fn=_default_sigint,
    )
    child.expect(">>> ")
    child.sendeof()  # Ctrl-D
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_errors(run, tiny_checkpoints, tmp_path):
    model = str(tiny_checkpoints["mistral"])
    assert_user_error(run("chat", str(tmp_path / "nope")), ExitCode.MISSING, "does not exist")
    assert_user_error(run("chat", str(tmp_path)), ExitCode.MISSING, "no config.json")
    assert_user_error(run("chat", model, "--preset", "turbo"), ExitCode.USAGE, "unknown preset 'turbo'")
    assert_user_error(run("chat", model, "--preset", "fa2"), ExitCode.USAGE, "flash_attention_2 needs")


def test_chat_jsonl_answers_every_line_bad_ones_with_an_error_line(run, tiny_checkpoints):
    # issue 20: the first malformed line ended the session, and every later line went unanswered.
    model = str(tiny_checkpoints["mistral"])
    lines = [
        '{"content": "hi"}',
        "not json",
        '{"content": 3}',
        '{"role": "system", "content": "x"}',
        json.dumps({"content": "x" * (8 * 2**20 + 1)}),  # more text than a conversation may hold
        '{"content": "\\ud800"}',
        '{"content": "hi"}',
    ]
    result = run("chat", model, "--jsonl", "--temperature", "0", "--max-new-tokens", "2", input="\n".join(lines) + "\n")
    assert_user_error(result, ExitCode.USAGE, "5 input lines got no reply (lines 2, 3, 4, 5, 6): their error lines")
    first, *errors, last = [json.loads(line) for line in result.stdout.splitlines()]
    # The failed lines left no trace in the history: the last reply is the one after the first exchange alone.
    twice = run("chat", model, "--jsonl", "--temperature", "0", "--max-new-tokens", "2", input=(lines[0] + "\n") * 2)
    assert [first, last] == [json.loads(line) for line in twice.stdout.splitlines()]
    assert [(error["event"], error["line"]) for error in errors] == [("error", n) for n in (2, 3, 4, 5, 6)]
    for error, expected in zip(
        errors,
        ["invalid JSON at column 1", "expected {", "role 'system'", "more than 8,388,608 bytes", "holds '\\ud800'"],
        strict=True,
    ):
        assert error["message"].startswith(f"stdin line {error['line']}") and expected in error["message"], error
    # Without --jsonl: each error on stderr as it happens, the other lines answered.
    text = run("chat", model, "--temperature", "0", "--max-new-tokens", "2", input="hi\n" + lines[4] + "\nhi\n")
    assert_user_error(text, ExitCode.USAGE, "1 input line got no reply (line 2): see the errors above.")
    assert "chat: error: stdin line 2: messages[2] (user): the conversation's text is more than" in text.stderr
    assert len(text.stdout.splitlines()) == 2


def test_chat_and_demo_take_a_gguf_file(run, tiny_checkpoints, tmp_path):
    # issue 20: load_model and plan took a GGUF file, chat and demo --model refused it ("is a file").
    model = tiny_checkpoints["mistral"]
    gguf = kit.convert_checkpoint(model, tmp_path / "tiny.gguf", to="gguf")
    ask = '{"content": "Hello"}\n'
    from_gguf = run("chat", str(gguf), "--jsonl", "--temperature", "0", "--max-new-tokens", "6", input=ask)
    from_folder = run("chat", str(model), "--jsonl", "--temperature", "0", "--max-new-tokens", "6", input=ask)
    assert from_gguf.returncode == 0, from_gguf.stderr
    assert json.loads(from_gguf.stdout) == json.loads(from_folder.stdout)  # same weights, same tokenizer: same reply
    demo = run("demo", "--model", str(gguf), "--max-new-tokens", "3")
    assert demo.returncode == 0, demo.stderr
    assert f"== model: {gguf}" in demo.stdout and "template mistral_v3" in demo.stdout and "3 tokens in" in demo.stdout
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    assert_user_error(run("chat", str(not_gguf)), ExitCode.USAGE, "notes.gguf is a file, and not a GGUF one")


def test_chat_refuses_a_model_predicted_not_to_fit(run, tmp_path):
    # A config alone (no weights): the plan says no before anything is loaded.
    config = {**MISTRAL_7B, "num_hidden_layers": 4000}  # 870B parameters: fits nowhere
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run("chat", str(tmp_path))
    assert_user_error(result, ExitCode.OUT_OF_MEMORY, "does not fit this machine in any preset")
    result = run("chat", str(tmp_path), "--preset", "bf16")
    assert_user_error(result, ExitCode.OUT_OF_MEMORY, f"predicted out of memory: {tmp_path} in preset 'bf16'")


# --- doctor -----------------------------------------------------------------------------------------------------


def test_doctor_reports_versions_devices_and_presets(cli_env, run):
    import torch

    text = run("doctor")
    assert text.returncode == 0, text.stderr
    for package in ("torch", "transformers", "accelerate", "bitsandbytes", "flash-attn"):
        assert package in text.stdout
    report = json.loads(cli("doctor", "--json", env=cli_env).stdout)
    assert report["packages"]["transformers"] == version("transformers")
    assert report["packages"]["torch"] == version("torch")
    assert len(report["cuda_devices"]) == torch.cuda.device_count()
    assert list(report["presets"]) == list(kit.PRESETS)
    assert report["presets"]["auto"]["available"]
    if not torch.cuda.is_available():
        assert "no CUDA device" in text.stdout
        assert report["presets"]["cpu"]["available"]
        assert not report["presets"]["fa2"]["available"]
        assert "needs a CUDA GPU" in report["presets"]["fa2"]["why"]


# --- plan -------------------------------------------------------------------------------------------------------


def test_plan_from_a_config_alone(cli_env, run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(MISTRAL_7B))
    result = cli(
        "plan", str(tmp_path), "--preset", "bf16", "--context", "8192", "--gpu", "a100-80gb", "--json", env=cli_env
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["parameters"] == 7_241_732_096
    assert plan["weights_bytes"] == 2 * 7_241_732_096  # bf16
    assert plan["kv_cache_bytes"] == 4096 * 128 * 1024  # 128 KiB per token, capped by the 4096-token window
    assert plan["fits"] is True and plan["hardware"].startswith("NVIDIA A100-SXM4-80GB")
    expected = kit.plan_memory(tmp_path, "bf16", context_length=8192, hardware=kit.Hardware.profile("a100-80gb"))
    assert plan["total_bytes"] == expected.total_bytes

    config = str(tmp_path / "config.json")
    table = run("plan", config, "--preset", "4bit", "--context", "4096", "--gpu", "t4")
    assert table.returncode == 0, table.stderr
    t4 = kit.Hardware.profile("t4")
    expected = kit.plan_memory(config, "4bit", context_length=4096, hardware=t4)
    notes = kit.resolve_preset("4bit", t4, model=config, context_length=4096).notes
    assert table.stdout == f"{expected}\nnotes:\n" + "".join(f"  - {note}\n" for note in notes)
    assert str(expected).splitlines()[0].startswith(f"{config}: 7.24B parameters")  # named as the user named it
    assert str(expected).splitlines()[-1].split()[:5] == ["fits", "yes", "on", "Tesla", "T4"]


def test_plan_says_where_the_model_runs_and_prints_the_notes(run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(MIXTRAL_8X7B))
    # Mixtral does not fit a T4 even in 4-bit with offloading (offloaded layers stay 16-bit in 32 GiB of RAM): the
    # verdict says the model runs on the CPU, and the notes say what auto skipped.
    result = run("plan", str(tmp_path), "--context", "4096", "--gpu", "t4")
    assert result.returncode == 0, result.stderr
    verdict = next(line for line in result.stdout.splitlines() if line.startswith("fits"))
    assert verdict.split(maxsplit=1)[1] == "yes in CPU RAM (32.0 GiB free): the model runs on the CPU, not on Tesla T4"
    notes = result.stdout.split("\nnotes:\n", 1)[1]
    assert "'4bit' on cuda needs 24.6 GiB, more than the 14.5 GiB free." in notes
    assert "auto -> '4bit' on cpu" in notes
    as_json = json.loads(run("plan", str(tmp_path), "--context", "4096", "--gpu", "t4", "--json").stdout)
    assert as_json["placement"] == "cpu" and any("auto -> '4bit' on cpu" in note for note in as_json["notes"])
    # With more GPU memory, 4-bit with offloaded layers: the verdict says how many.
    offload = run("plan", str(tmp_path), "--context", "4096", "--gpu", "rtx4090")
    verdict = next(line for line in offload.stdout.splitlines() if line.startswith("fits"))
    assert "yes on NVIDIA GeForce RTX 4090" in verdict and "with 2 decoder layers offloaded to CPU RAM" in verdict


def test_plan_predicts_out_of_memory(cli_env, run, tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(MIXTRAL_8X7B_PARAMS))  # native config
    result = cli("plan", str(tmp_path), "--preset", "fp16", "--context", "4096", "--gpu", "rtx4090", env=cli_env)
    assert_user_error(result, ExitCode.OUT_OF_MEMORY, "predicted out of memory: preset 'fp16' needs")
    assert "46.70B parameters" in result.stdout and "fits" in result.stdout  # the table is still printed
    auto = run("plan", str(tmp_path), "--context", "4096", "--gpu", "rtx4090")
    assert auto.returncode == 0 and "auto -> 4bit" in auto.stdout


def test_plan_errors(run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(MISTRAL_7B))
    args = ("--context", "4096")
    assert_user_error(
        run("plan", str(tmp_path), *args, "--preset", "bf16", "--gpu", "t4"),
        ExitCode.USAGE,
        "use preset='fp16'",
    )
    assert_user_error(
        run("plan", str(tmp_path), *args, "--gpu", "k80"), ExitCode.USAGE, "unknown hardware profile 'k80'"
    )
    assert_user_error(run("plan", str(tmp_path), *args, "--preset", "int3"), ExitCode.USAGE, "unknown preset 'int3'")
    assert_user_error(run("plan", str(tmp_path / "x"), *args), ExitCode.MISSING, "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(run("plan", str(tmp_path / "empty"), *args), ExitCode.MISSING, "no config.json or params.json")
    (tmp_path / "bad.json").write_text('{"model_type": "mistral"}')
    assert_user_error(run("plan", str(tmp_path / "bad.json"), *args), ExitCode.USAGE, "not a Mistral/Mixtral config")


def test_plan_context_defaults_as_in_the_api(run, tmp_path):
    # issue 20: `plan` required --context; load_model and resolve_preset plan for 4096 tokens (or the model's window).
    (tmp_path / "config.json").write_text(json.dumps(MISTRAL_7B))
    by_default = json.loads(run("plan", str(tmp_path), "--gpu", "t4", "--preset", "4bit", "--json").stdout)
    explicit = json.loads(
        run("plan", str(tmp_path), "--gpu", "t4", "--preset", "4bit", "--context", "4096", "--json").stdout
    )
    assert by_default["context_length"] == 4096
    assert by_default["notes"] == explicit["notes"] + [
        "memory planned for 4096 tokens per sequence (the default); --context N plans for N."
    ]
    assert {**by_default, "notes": None} == {**explicit, "notes": None}
    (tmp_path / "config.json").write_text(json.dumps({**MISTRAL_7B, "max_position_embeddings": 2048}))
    short = json.loads(run("plan", str(tmp_path), "--gpu", "t4", "--preset", "4bit", "--json").stdout)
    assert short["context_length"] == 2048


# --- convert ----------------------------------------------------------------------------------------------------


def test_convert_round_trip(cli_env, run, tiny_checkpoints, tmp_path):
    from safetensors.torch import load_file

    source = tiny_checkpoints["mistral"]
    native, back = tmp_path / "native", tmp_path / "hf"
    result = cli("convert", str(source), str(native), "--to", "native", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert (native / "params.json").is_file() and list(native.glob("consolidated*.safetensors"))
    result = cli("convert", str(native), str(back), "--to", "hf", env=cli_env)
    assert result.returncode == 0, result.stderr
    original, restored = load_file(source / "model.safetensors"), load_file(back / "model.safetensors")
    assert original.keys() == restored.keys()
    assert all(original[key].equal(restored[key]) for key in original)

    # The native checkpoint chats like the original (same weights, greedy).
    stdin = json.dumps({"content": "Hello"}) + "\n"
    replies = [
        run("chat", str(model), "--jsonl", "--temperature", "0", "--max-new-tokens", "6", input=stdin)
        for model in (source, native)
    ]
    assert replies[0].returncode == 0 and replies[0].stdout == replies[1].stdout


def test_convert_errors(run, tiny_checkpoints, tmp_path):
    source = str(tiny_checkpoints["mistral"])
    assert_user_error(
        run("convert", str(tmp_path / "x"), str(tmp_path / "y"), "--to", "native"),
        ExitCode.MISSING,
        "does not exist",
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert_user_error(
        run("convert", source, str(tmp_path / "full"), "--to", "native"),
        ExitCode.USAGE,
        "not an empty directory",
    )
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    no_target = run("convert", source, str(tmp_path / "z"))
    assert no_target.returncode == ExitCode.USAGE and "--to" in no_target.stderr
