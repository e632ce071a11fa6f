"""What every subcommand shares: exit codes, the one-line user error, the cache directory, reading conversations."""

from __future__ import annotations

import json
import math
import re
import stat
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

from ..chat.limits import MAX_NESTING, recursion_room
from ..hub import CACHE_ENV, cache_dir

__all__ = ["CACHE_ENV", "CLIError", "ExitCode", "cache_dir", "existing_path", "read_conversations", "read_text"]

ROLES = ("system", "user", "assistant", "tool")


PROG = "hf-mistral-kit"
# `render`'s template when neither --template nor --tokenizer names one: the first Mistral format (7B v0.1/v0.2,
# Mixtral 8x7B).
DEFAULT_TEMPLATE = "mistral_v1"


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
    ExitCode.USAGE: "bad arguments or input (unknown template/preset, invalid conversation JSON, impossible preset, "
    "a malformed config or checkpoint)",
    ExitCode.MISSING: "a file, directory or model that does not exist (locally, or on the Hub while offline or "
    "unreachable)",
    ExitCode.OUT_OF_MEMORY: "out of memory predicted by the memory plan (or raised by the device)",
    ExitCode.MISMATCH: "render --check: the ids differ from mistral-common's",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C outside a streamed reply)",
}


class CLIError(Exception):
    """A user error: printed as one line on stderr, no traceback, and the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE):
        super().__init__(message)
        self.code = code


def existing_path(value: str, what: str) -> Path:
    """`value` as a Path, or a MISSING error naming `what`."""
    path = Path(value).expanduser()
    if not path.exists():
        raise CLIError(f"{what} {value} does not exist.", ExitCode.MISSING)
    return path


def checked_text(value: str, what: str) -> str:
    """`value` (from the command line or a file) if it is valid Unicode; lone surrogates (undecodable bytes on the
    command line, or "\\ud800" escapes in JSON) cannot be encoded, tokenized or printed."""
    match = _SURROGATE.search(value)
    if match is not None:
        raise CLIError(
            f"{what} holds {match.group()!a} at character {match.start() + 1}, which is not valid Unicode (a lone "
            "surrogate: an undecodable byte, or half of a broken \\u escape); fix the text or its encoding."
        )
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


# The most a conversation input (a render FILE, stdin, a --tools file) may hold, read in chunks and refused beyond,
# so that an endless stream (`render - < /dev/zero`, a runaway pipe) ends in an error instead of exhausting memory.
# One conversation holds at most the chat package's MAX_CHAT_BYTES (8 MiB) of text (hf_mistral_kit.chat.limits), which
# JSON may spell with up to six bytes per character (\uXXXX escapes): 48 MiB. Parsed, JSON of short messages takes up
# to ~15 times its size in Python objects, so 64 MiB of input stays near 1 GB; a JSONL file of more conversations
# than that is split into several files.
MAX_INPUT_BYTES = 64 * 2**20
_CHUNK = 2**20  # read at a time; a NUL byte in the first chunk (without a UTF-16/32 byte-order mark) means binary


def read_text(source: str) -> str:
    """The contents of a file, or of stdin for '-', decoded: UTF-8 (with or without a byte-order mark), or UTF-16/32
    with a byte-order mark. Anything else (another encoding, binary data, more than MAX_INPUT_BYTES) is a one-line
    error naming the fix; binary data is recognized in the first chunk read, without reading on."""
    name = "<stdin>" if source == "-" else source
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream without bytes underneath (tests, embedding applications)
            return checked_text(_read_bounded_text(sys.stdin, name), name)
        return decode(_read_bounded(stream, name), name)
    path = existing_path(source, "Input file")
    kind = path.stat()
    if stat.S_ISDIR(kind.st_mode):
        raise CLIError(f"{source} is a directory; expected a JSON or JSONL file.")
    if not (stat.S_ISREG(kind.st_mode) or stat.S_ISFIFO(kind.st_mode)):
        raise CLIError(f"{source} is not a regular file (a device or socket); expected a JSON or JSONL file.")
    if kind.st_size > MAX_INPUT_BYTES:
        raise CLIError(_too_large(name))
    try:
        with path.open("rb") as stream:
            data = _read_bounded(stream, name)
    except OSError as error:
        raise CLIError(f"cannot read {source}: {error.strerror or error}.", ExitCode.MISSING) from None
    return decode(data, name)


def _too_large(name: str) -> str:
    return (
        f"{name} is larger than {MAX_INPUT_BYTES // 2**20} MiB, the most the kit reads as one input: split it into "
        "smaller files (JSONL: fewer conversations per file)."
    )


def _read_bounded(stream: Any, name: str) -> bytearray:
    """All of a binary stream, in chunks: binary data is refused at its first chunk, and more than MAX_INPUT_BYTES
    as soon as it is read."""
    data = bytearray()
    while chunk := stream.read(min(_CHUNK, MAX_INPUT_BYTES + 1 - len(data))):
        if not data:
            _refuse_binary(chunk, name)
        data += chunk
        if len(data) > MAX_INPUT_BYTES:
            raise CLIError(_too_large(name))
    return data


def _read_bounded_text(stream: Any, name: str) -> str:
    """`_read_bounded` for a text stream, its size counted in UTF-8 bytes."""
    chunks, size = [], 0
    while chunk := stream.read(_CHUNK):
        if not chunks and "\x00" in chunk:
            raise CLIError(_NUL_CHARACTERS.format(name=name))
        chunks.append(chunk)
        size += len(chunk.encode("utf-8", "surrogatepass"))
        if size > MAX_INPUT_BYTES:
            raise CLIError(_too_large(name))
    return "".join(chunks)


def _refuse_binary(head: bytes | bytearray, name: str) -> None:
    """A first chunk holding a NUL byte, without a UTF-16/32 byte-order mark (whose text holds NULs), is binary."""
    offset = head.find(b"\x00")
    if offset >= 0 and not any(head.startswith(bom) for bom, _ in _BOMS):
        raise CLIError(_BINARY.format(name=name, byte=0, offset=offset))


_BINARY = (
    "{name} is binary data, not text (byte 0x{byte:02x} at offset {offset}): pass a JSON or JSONL conversation file."
)
_NUL_CHARACTERS = "{name} holds NUL characters: binary data, not a JSON or JSONL conversation file."


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def decode(data: bytes | bytearray, name: str) -> str:
    """`data` as text (see `read_text`)."""
    encoding, skip = "utf-8", 0
    for bom, bom_encoding in _BOMS:
        if data.startswith(bom):
            encoding, skip = bom_encoding, len(bom)
            break
    try:
        text = str(memoryview(data)[skip:], encoding)
    except UnicodeDecodeError as error:
        offset = skip + error.start
        if b"\x00" in data[:4096] and skip == 0:
            raise CLIError(_BINARY.format(name=name, byte=data[offset], offset=offset)) from None
        raise CLIError(
            f"{name} is not {encoding.upper()} text: byte 0x{data[offset]:02x} at offset {offset} cannot be decoded. "
            "Save it as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 in.json > out.json)."
        ) from None
    if "\x00" in text:
        raise CLIError(_NUL_CHARACTERS.format(name=name))
    return checked_text(text, name)


# JSON's own whitespace (RFC 8259), which may separate the values of a JSON Lines file.
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


def json_values(text: str, name: str) -> list[tuple[int, Any]]:
    """(line, value) for every JSON value in `text`: one for a JSON file, one per line (or more) for JSON Lines.

    Errors name the exact line and column of the problem. Linear in the text: each value's line is counted on from
    the previous value's, never from the start.
    """
    decoder = json.JSONDecoder()
    values, position = [], _JSON_WHITESPACE.match(text, 0).end()
    line, counted = 1, 0  # the line number at offset `counted`
    with recursion_room():  # JSON as deep as the conversation contract takes (chat.limits.MAX_NESTING)
        while position < len(text):
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise CLIError(f"{name}: invalid JSON at {_where(text, error.pos)}: {error.msg}.") from None
            except RecursionError:
                raise CLIError(
                    f"{name}: the JSON value at {_where(text, position)} is nested too deeply for Python's JSON parser "
                    f"(the kit renders JSON nested at most {MAX_NESTING} levels deep): flatten it."
                ) from None
            except ValueError as error:  # e.g. an integer with more digits than Python converts
                raise CLIError(f"{name}: invalid JSON value at {_where(text, position)}: {error}.") from None
            line, counted = line + text.count("\n", counted, position), position
            values.append((line, value))
            position = _JSON_WHITESPACE.match(text, end).end()
    return values


def _where(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"line {line}, column {column}"


def read_conversations(source: str) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]]:
    """(messages, tools) pairs from a JSON or JSONL file (or '-').

    JSON: a list of messages, or an object with "messages" (and optionally "tools"). JSONL: either one message per
    line (one conversation) or one conversation per line (many). Errors name the line.
    """
    text = read_text(source)
    name = "<stdin>" if source == "-" else source
    if not text.strip():
        raise CLIError(f"{name} is empty; expected a conversation in JSON or JSONL.")
    values = json_values(text, name)
    if len(values) == 1 and not (isinstance(values[0][1], dict) and "role" in values[0][1]):
        return [_conversation(values[0][1], name)]
    if all(isinstance(value, dict) and "role" in value for _, value in values):
        messages = [message for _, message in values]
        for number, message in values:
            check_message(message, f"{name}: line {number}")
        return [(messages, None)]
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
        if tools is not None:
            check_tools(tools, where)
    if not isinstance(value, list) or not value:
        raise CLIError(f"{where}: a conversation is a non-empty list of messages.")
    for index, message in enumerate(value, start=1):
        check_message(message, f"{where}: message {index}")
    return value, tools


def check_message(message: Any, where: str) -> None:
    """The shape the templates read: an object with a known role, string or text-part content, and tool calls and
    results whose fields have their JSON types. Which conversations make sense is the template's call."""
    if not isinstance(message, dict):
        raise CLIError(f"{where} is not an object.")
    role = message.get("role")
    if role not in ROLES:
        raise CLIError(f"{where} has role {_shown(role)}; expected one of {', '.join(ROLES)}.")
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        raise CLIError(f"{where}: content must be a string or a list of content parts, got {_json_type(content)}.")
    if isinstance(content, list):
        for number, part in enumerate(content, start=1):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise CLIError(f'{where}: content part {number} must be an object with a "type" (e.g. "text").')
            if part["type"] == "text" and not isinstance(part.get("text"), (str, type(None))):
                raise CLIError(f'{where}: content part {number} of type "text" needs a string "text".')
    for key in ("tool_call_id", "name"):
        if message.get(key) is not None and not isinstance(message[key], str):
            raise CLIError(f"{where}: {key} must be a string, got {_json_type(message[key])}.")
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise CLIError(f"{where}: tool_calls must be a list of tool calls, got {_json_type(calls)}.")
        for number, call in enumerate(calls, start=1):
            _check_function(call, f"{where}: tool call {number}", "a tool call")
            if call.get("id") is not None and not isinstance(call["id"], str):
                raise CLIError(f"{where}: tool call {number} has an id that is {_json_type(call['id'])}, not a string.")
    _check_strings(message, where)


def check_tools(tools: Any, where: str) -> None:
    """`tools`: a list of tool definitions, each {"type": "function", "function": {"name": ...}} or the function."""
    if not isinstance(tools, list):
        raise CLIError(f'{where}: "tools" must be a list of tool definitions, got {_json_type(tools)}.')
    for number, tool in enumerate(tools, start=1):
        _check_function(tool, f"{where}: tool {number}", "a tool definition")
    _check_strings(tools, f"{where}: tools")


def _check_function(value: Any, where: str, what: str) -> None:
    if not isinstance(value, dict):
        raise CLIError(f'{where} must be an object ({what} with "function": {{"name": ...}}), got {_json_type(value)}.')
    function = value.get("function", value)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise CLIError(f'{where} needs a "function" object with a string "name".')


def _check_strings(value: Any, where: str) -> None:
    """No lone surrogate in any string (keys included) and no non-finite number, however deep: iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            checked_text(item, where)
        elif isinstance(item, float) and not math.isfinite(item):
            raise CLIError(f"{where} holds {item}, which is not a JSON number (NaN/Infinity): use null or a number.")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
