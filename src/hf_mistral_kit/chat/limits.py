"""What a conversation's data can hold and still be encoded: JSON nesting, total size, and lone surrogates.

- **Nesting.** mistral-common reads tool schemas, call arguments and (before v7) tool results with Python's recursive
  `json` and pydantic code, so it encodes JSON nested up to 987 containers deep (call arguments; 988 for schemas and
  tool results) at Python's default recursion limit of 1000, called from a script's top level, and fails with
  `RecursionError` beyond (a few levels earlier from a deeper stack: a thread, a notebook). The kit accepts that
  depth, `MAX_NESTING`, in each of those places from wherever it is called: it measures the depth without recursion
  (on the data, or on the JSON text before parsing), raises `ConversationError` beyond it, and gives its own
  recursive steps (`json`, transformers' `render_jinja_template`) the stack they need within it (`recursion_room`).
  mistral-common's draft-7 check of a tool schema runs as mistral-common runs it, at the caller's recursion limit: a
  schema that overflows it (`properties` nested ~160 levels) is refused by both.
- **Size.** One conversation's text may hold at most `MAX_CHAT_BYTES` of UTF-8. The longest context of the family is
  256k tokens, about 1 MiB of text; the tokenizers library needs about 150 bytes of memory per token, and text
  without vocabulary pieces (private-use characters, byte fallback) is up to 4 tokens per character, so 10 million
  such characters would need ~4.5 GB, and the Rust allocation failure that follows aborts the process. The check
  runs before any tokenizer sees the text.
- **Lone surrogates** (`"\\udfff"`: a str Python holds but UTF-8 cannot). tekken tokenizers encode them as
  mistral-common's tiktoken does, each one as U+FFFD (and a surrogate pair written as two code points as the one
  character it spells); SentencePiece cannot take them (mistral-common fails), so the kit raises `ConversationError`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .errors import ConversationError
from .plain import KeyClash, map_strings

MAX_NESTING = 987  # containers (dicts and lists) one inside the other: mistral-common 1.13's, measured as above
MAX_CHAT_BYTES = 8 * 2**20  # UTF-8 bytes of text in one conversation (strings of the messages and tools)

_CONTAINERS = (dict, list, tuple)


def nesting(value: Any) -> int:
    """How many containers deep `value` is (a scalar: 0, `{}`: 1, `{"a": []}`: 2), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _CONTAINERS):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def text_nesting(text: str) -> int:
    """How many containers deep the JSON `text` is (brackets outside strings), without parsing it; 0 for text that
    opens none. Text that is not JSON gets a number too, which only bounds what `json.loads` would recurse into."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def too_deep(depth: int, what: str) -> str | None:
    """The rule a value `depth` containers deep breaks (None when it is within `MAX_NESTING`)."""
    if depth <= MAX_NESTING:
        return None
    return (
        f"{what} is nested {depth} levels deep; mistral-common encodes at most {MAX_NESTING} "
        "(Python's recursion limit)."
    )


_room = threading.RLock()  # held while the limit is raised: one thread at a time runs the kit's recursive steps
_room_depth = 0
_room_limits = (0, 0)  # (the limit before the room, the limit the room set)
_FRAMES_PER_LEVEL = 4  # transformers' _plain_template_data: 2 per level; json and Jinja's tojson: 1


@contextlib.contextmanager
def recursion_room() -> Iterator[None]:
    """Python's recursion limit raised so that recursive code copying, parsing or serializing data nested up to
    `MAX_NESTING` deep does not fail wherever it is called from.

    The limit is process-wide: the room is held by one thread at a time (others wait: the code inside is pure Python
    under the GIL anyway), and the old limit comes back when its outermost use ends, unless something else set
    another limit meanwhile."""
    global _room_depth, _room_limits
    with _room:
        if _room_depth == 0:
            before = sys.getrecursionlimit()
            _room_limits = (before, before + _FRAMES_PER_LEVEL * MAX_NESTING)
            sys.setrecursionlimit(_room_limits[1])
        _room_depth += 1
        try:
            yield
        finally:
            _room_depth -= 1
            if _room_depth == 0 and sys.getrecursionlimit() == _room_limits[1]:
                with contextlib.suppress(RecursionError):  # cannot happen at the room's own (shallow) depth
                    sys.setrecursionlimit(_room_limits[0])


@contextlib.contextmanager
def callers_recursion_limit() -> Iterator[None]:
    """The recursion limit the caller had, held so no other thread raises it meanwhile: for mistral-common's own
    checks, which the kit runs as mistral-common runs them (a schema too deep for them is refused by both)."""
    with _room:
        if _room_depth == 0:
            yield
            return
        sys.setrecursionlimit(_room_limits[0])
        try:
            yield
        finally:
            sys.setrecursionlimit(_room_limits[1])


def _has_surrogate(text: str) -> bool:
    return _size_and_surrogates(text)[1]


def _size_and_surrogates(text: str) -> tuple[int, bool]:
    """(UTF-8 size, whether `text` holds a surrogate) with one encoding."""
    if text.isascii():
        return len(text), False
    try:
        return len(text.encode("utf-8")), False
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass")), True


def as_tiktoken_reads(text: str) -> str:
    """`text` as tiktoken encodes it when UTF-8 cannot hold it: surrogate pairs joined, lone surrogates U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _first_surrogate(text: str) -> str:
    return next(f"\\u{ord(c):04x}" for c in text if 0xD800 <= ord(c) <= 0xDFFF)


def fit_text(
    messages: list[Any], tools: list[Any] | None, *, replace_surrogates: bool
) -> tuple[list[Any], list[Any] | None]:
    """The prepared messages and tools with their strings (keys included) checked: at most `MAX_CHAT_BYTES` in all,
    and lone surrogates replaced as tiktoken does (`replace_surrogates=True`, tekken) or refused (False:
    SentencePiece, and ChatML, whose fast tokenizers cannot take them either; in tools only when a user message will
    encode them). Rebuilt without recursion, only where a string changes."""
    total = 0
    parts = [(f"messages[{i}] ({m['role']})", m, i) for i, m in enumerate(messages)]
    if tools:
        parts.append(("tools", tools, None))
    # Mistral's formats write the tools before the last user message: without one they are never encoded, and
    # mistral-common then takes tools it could not have encoded.
    tools_encoded = any(m["role"] == "user" for m in messages)
    fixed: list[Any] = []
    for where, value, index in parts:
        changed = False
        strings: list[str] = []
        _strings(value, strings)
        for text in strings:
            size, surrogates = _size_and_surrogates(text)
            total += size
            if total > MAX_CHAT_BYTES:
                raise ConversationError(
                    where,
                    f"the conversation's text is more than {MAX_CHAT_BYTES:,} bytes of UTF-8 (at most "
                    f"{MAX_CHAT_BYTES // 2**20} MiB; the longest Mistral context is 256k tokens, about 1 MiB); "
                    "the tokenizer would need gigabytes to encode it.",
                    "Shorten or split the text.",
                    index,
                )
            if surrogates:
                if not replace_surrogates and (index is not None or tools_encoded):
                    raise ConversationError(
                        where,
                        f"the text holds {_first_surrogate(text)}, a lone surrogate: not a character, so not valid "
                        "Unicode, and a SentencePiece tokenizer cannot encode it (mistral-common fails too).",
                        "Remove it, or decode the source with errors='replace'.",
                        index,
                    )
                changed = replace_surrogates
        fixed.append(_replaced(value, index is None) if changed else value)
    if tools:
        return fixed[:-1], fixed[-1]
    return fixed, tools


def _strings(value: Any, out: list[str]) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    out.append(key)
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _replaced(value: Any, tools: bool) -> Any:
    """`value` rebuilt with every string (keys included) as tiktoken reads it, without recursion."""
    try:
        return map_strings(value, lambda text: as_tiktoken_reads(text) if _has_surrogate(text) else text)
    except KeyClash as clash:
        raise ConversationError(
            "tools" if tools else "",
            f"two keys become {clash.key!r} once lone surrogates are U+FFFD (as the tokenizer reads them).",
            "Remove the lone surrogates from the keys.",
        ) from None
