"""issue 18: `transformers serve` reads a kit-saved Mistral model's replies back by itself.

A tiny model is taught (`hf_mistral_kit.tiny.teach`) to answer one user message with a tool call, then served by
plain `transformers serve <folder>` in a subprocess (offline, no kit in the server: transformers reads the folder's
`response_template` from tokenizer_config.json), and an `openai` client asks it that message with the same tools,
without and with streaming: the call (and, for tekken v13, the thinking before it) must come back as OpenAI fields,
`tool_calls` and `reasoning_content`, not as text.

Two tokenizers: SentencePiece v3 (`[TOOL_CALLS] [{"name": ..., "arguments": ..., "id": ...}]`) and tekken v13
(`[THINK]...[/THINK][TOOL_CALLS]name[ARGS]{...}`, the file derived in tests/tekken_files.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.tiny import teach
from test_chat_replies import HAS_RESPONSE_TEMPLATE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAS_RESPONSE_TEMPLATE,
        reason="transformers < 5.25: its `transformers serve` reads no `response_template` from token ids (5.10 to "
        "5.15 read replies with the older `response_schema`)",
    ),
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city, e.g. Paris."}},
                "required": ["city"],
            },
        },
    }
]
QUESTION = {"role": "user", "content": "What is the weather like in Paris?"}
ARGUMENTS = {"city": "Paris"}
THINKING = "The user asks about the weather in Paris: get_weather tells it."


def tool_call(call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}}


# name -> what the model is taught to answer QUESTION with (v3 writes the call's id, v13 writes none).
REPLIES = {
    "v3": {"role": "assistant", "tool_calls": [tool_call("call00001")]},
    "tekken-v13": {"role": "assistant", "reasoning_content": THINKING, "tool_calls": [tool_call("call00001")]},
}
SERVER_START_TIMEOUT = 180  # seconds: importing transformers and loading the model, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"transformers serve not ready after {SERVER_START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down, its model process with it), then SIGKILL to its process group if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module", params=list(REPLIES))
def served(request, tmp_path_factory, mistral_file, cli_env):
    """(name, folder served, port, the prompt's ids): a taught tiny model behind `transformers serve`."""
    name = request.param
    root = tmp_path_factory.mktemp(f"serve-{name}")
    tokenizer = "v3" if name == "v3" else mistral_file(name)
    model = teach(kit.tiny_model("mistral", root / "taught", tokenizer=tokenizer), [[QUESTION, REPLIES[name]]], TOOLS)
    prompt = kit.load_tokenizer(model).apply_chat_template([QUESTION], tools=TOOLS, add_generation_prompt=True)
    folder = root / "served"
    # transformers (5.25) loads a mistral folder holding a tekken.json with mistral-common's backend
    # (MistralCommonBackend) whenever mistral-common is installed, whatever tokenizer_config.json says. That backend
    # ignores the folder's `response_template`: `transformers serve` then answers with the reply as text, and fails to
    # stream ("'MistralTokenizer' object has no attribute '_tokenizer'"). Without tekken.json the folder loads from
    # tokenizer.json and tokenizer_config.json, the kit's `response_template` included.
    shutil.copytree(model, folder, ignore=shutil.ignore_patterns("tekken.json"))

    port = free_port()
    log = root / "serve.log"
    # `transformers serve <folder> --host 127.0.0.1 --port <port>`, run by this interpreter
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, env=cli_env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_ready(process, port, log)
        yield name, str(folder), port, list(prompt["input_ids"])
    finally:
        stop(process)


def client(port: int):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)


def ask(served, **kwargs):
    name, folder, port, _ = served
    return client(port).chat.completions.create(
        model=folder, messages=[QUESTION], tools=TOOLS, temperature=0, max_tokens=64, **kwargs
    )


def test_a_served_reply_reads_back_as_a_tool_call(served):
    name, _, _, prompt = served
    response = ask(served)
    assert response.usage.prompt_tokens == len(prompt)  # the server's prompt is the kit's, token for token
    (choice,) = response.choices
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    (call,) = message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    assert not message.content  # the call is not left in the text
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert reasoning == (THINKING if name == "tekken-v13" else None)


def test_a_streamed_reply_delivers_the_tool_call_and_the_thinking(served):
    # v2/v3/v7 lists read as one region per call (`transformers serve` streams a region's value as one call)
    name, _, _, _ = served
    calls: dict[int, dict[str, str]] = {}
    reasoning, content, finish = [], [], None
    for chunk in ask(served, stream=True):
        if not chunk.choices:
            continue
        (choice,) = chunk.choices
        delta = choice.delta
        finish = choice.finish_reason or finish
        content.append(delta.content or "")
        reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += (call.function and call.function.name) or ""
            entry["arguments"] += (call.function and call.function.arguments) or ""
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == ARGUMENTS
    assert finish == "tool_calls" and not "".join(content).strip()
    assert "".join(reasoning) == (THINKING if name == "tekken-v13" else "")
    if name == "tekken-v13":
        assert sum(1 for text in reasoning if text) > 1  # streamed as it is generated, not in one piece
