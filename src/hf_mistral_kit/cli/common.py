"""What every subcommand shares: exit codes, the one-line user error, the cache directory, reading conversations."""

from __future__ import annotations

import json
import os
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

CACHE_ENV = "HF_MISTRAL_KIT_CACHE"
ROLES = ("system", "user", "assistant", "tool")


class ExitCode(IntEnum):
    """Exit codes scripts can rely on; what each means is in EXIT_CODE_MEANINGS (`--help`, README)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    MISSING = 3
    OUT_OF_MEMORY = 4
    MISMATCH = 5
    INTERRUPTED = 130


EXIT_CODE_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "unexpected error: a bug, reported with its traceback",
    ExitCode.USAGE: "bad arguments or input (unknown template/preset, invalid conversation JSON, impossible preset)",
    ExitCode.MISSING: "a file, directory or model that does not exist",
    ExitCode.OUT_OF_MEMORY: "out of memory predicted by the memory plan (or raised by the device)",
    ExitCode.MISMATCH: "render --check: the ids differ from mistral-common's",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C outside a streamed reply)",
}


class CLIError(Exception):
    """A user error: printed as one line on stderr, no traceback, and the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE):
        super().__init__(message)
        self.code = code


def cache_dir() -> Path:
    """Where the demo keeps its tiny checkpoints: $HF_MISTRAL_KIT_CACHE, else the user's cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hf-mistral-kit"


def existing_path(value: str, what: str) -> Path:
    """`value` as a Path, or a MISSING error naming `what`."""
    path = Path(value).expanduser()
    if not path.exists():
        raise CLIError(f"{what} {value} does not exist.", ExitCode.MISSING)
    return path


def read_text(source: str) -> str:
    """The contents of a file, or of stdin for '-'."""
    if source == "-":
        return sys.stdin.read()
    path = existing_path(source, "Input file")
    if path.is_dir():
        raise CLIError(f"{source} is a directory; expected a JSON or JSONL file.", ExitCode.USAGE)
    return path.read_text(encoding="utf-8")


def _json_error(error: json.JSONDecodeError, line_offset: int = 0) -> str:
    return f"line {error.lineno + line_offset}, column {error.colno}: {error.msg}"


def read_conversations(source: str) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]]:
    """(messages, tools) pairs from a JSON or JSONL file (or '-').

    JSON: a list of messages, or an object with "messages" (and optionally "tools"). JSONL: either one message per
    line (one conversation) or one conversation per line (many). Errors name the line.
    """
    text = read_text(source)
    name = "<stdin>" if source == "-" else source
    if not text.strip():
        raise CLIError(f"{name} is empty; expected a conversation in JSON or JSONL.")
    try:
        return [_conversation(json.loads(text), name)]
    except json.JSONDecodeError as error:
        if error.msg != "Extra data":
            raise CLIError(f"{name}: invalid JSON at {_json_error(error)}.") from None
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise CLIError(f"{name}: invalid JSON at {_json_error(error, number - 1)}.") from None
    if all(isinstance(value, dict) and "role" in value for _, value in values):
        for number, message in values:
            _check_message(message, f"{name}: line {number}")
        return [([message for _, message in values], None)]
    conversations = []
    for number, value in values:
        if isinstance(value, dict) and "role" in value:
            raise CLIError(f"{name}: line {number} is a single message but other lines are whole conversations.")
        conversations.append(_conversation(value, f"{name}: line {number}"))
    return conversations


def _conversation(value: Any, where: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    tools = None
    if isinstance(value, dict):
        if "messages" not in value:
            raise CLIError(f'{where}: expected a list of messages or an object with "messages".')
        value, tools = value["messages"], value.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise CLIError(f'{where}: "tools" must be a list of tool definitions.')
    if not isinstance(value, list) or not value:
        raise CLIError(f"{where}: a conversation is a non-empty list of messages.")
    for index, message in enumerate(value, start=1):
        _check_message(message, f"{where}: message {index}")
    return value, tools


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise CLIError(f"{where} is not an object.")
    role = message.get("role")
    if role not in ROLES:
        raise CLIError(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}.")
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        raise CLIError(f"{where}: content must be a string or a list of content parts.")
