"""Replies: what a Mistral model generates, read back into an OpenAI-style assistant message.

One class per tokenizer version whose replies differ from the version before, chained as the validators are
(`ReplyV1` -> `ReplyV2` -> `ReplyV3` -> `ReplyV11` -> `ReplyV13`, and `ReplyChatML`); `reply_format_for(version)`
picks the newest class whose version is not after the tokenizer's. Each class states its format twice, from the
same class attributes:

- `response_template()`: transformers' declarative `response_template` (`tokenizer.parse_response`, `transformers
  serve`), which kit tokenizers carry and every folder the kit saves writes;
- `parse(pieces)`: the kit's own reader of the same format (`hf_mistral_kit.parse_response`), on any transformers
  release. It follows mistral-common's reference decoder (`mistral_common.experimental.tools` and `.think`: the
  content is what comes before the first [TOOL_CALLS], each [TOOL_CALLS] starts a call, [THINK]...[/THINK] is
  thinking), except that it never raises: a reply is untrusted model output, and what is not a well-formed call
  stays text.

The replies, by version:

- v1: content only, up to "</s>";
- v2: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` after the content;
- v3 (and v7, which only lets content and calls share a turn): the same list, each call with its "id";
- v11: `[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}` per call ([CALL_ID] only for a call with an id);
- v13 (and v15, whose replies are v13's): `[TOOL_CALLS]name[ARGS]{...}` per call (no ids), and
  `[THINK]thinking[/THINK]`;
- ChatML: content only, up to "<|im_end|>".

Pieces are the reply as the tokenizer produced it: `(text, True)` for a control token generated as its id (or, for
text input, its spelling), `(text, False)` for decoded text. A control token's spelling in decoded text is text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..versions import (
    ARGS,
    CALL_ID,
    CHATML,
    CHATML_TOKENS,
    EOS,
    INST_END,
    THINK_TOKENS,
    TOOL_CALLS,
    TOOL_RESULTS_END,
    TokenizerVersion,
    template_version,
)

Piece = tuple[str, bool]  # (text, is a control token)

_TEXT = {"content": "text", "content_args": {"strip": False}}  # transformers' text parser, whitespace kept


@dataclass
class _Call:
    """A call being read: its pieces after [TOOL_CALLS]."""

    pieces: list[Piece]

    def text(self) -> str:
        return TOOL_CALLS + "".join(text for text, _ in self.pieces)


class ReplyV1:
    """Tokenizer v1: the reply is its content, up to the end of sequence."""

    version: ClassVar[TokenizerVersion | None] = TokenizerVersion.v1
    anchors: ClassVar[tuple[str, ...]] = (INST_END,)  # where the assistant's turn starts in the prompt
    anchor_pattern: ClassVar[str | None] = None  # the anchors as transformers' regex, where literals do not do
    anchor_controls: ClassVar[tuple[str, ...]] = ()  # the control tokens the anchors start with (v1's are text)
    ends: ClassVar[tuple[str, ...]] = (EOS,)  # what ends the reply
    tool_calls: ClassVar[bool] = False
    call_ids: ClassVar[bool] = False

    def __init__(self, thinking: bool = False):
        self.thinking = thinking and self.version is not None and self.version >= TokenizerVersion.v13

    # -- transformers' response_template --------------------------------------------------------------------

    def response_template(self) -> dict[str, Any]:
        """The declarative `response_template` of this format (transformers >= 5.24's `tokenizer.parse_response`)."""
        fields: dict[str, Any] = {}
        if self.thinking:
            # Thinking not closed ends where the calls or the end of sequence start (theirs to open or close).
            ahead = (*((TOOL_CALLS,) if self.tool_calls else ()), *self.ends)
            close = re.escape(THINK_TOKENS[1]) + "".join(f"|(?={re.escape(token)})" for token in ahead)
            fields["reasoning_content"] = {"open": THINK_TOKENS[0], "close_pattern": close, **_TEXT}
            fields["reasoning_content"].update(repeats=True, join="")
        if self.tool_calls:
            fields["tool_calls"] = self.tool_calls_field()
        fields["content"] = {"close": list(self.ends), **_TEXT, "repeats": True, "join": ""}
        return {
            "version": 1,
            "defaults": {"role": "assistant", "content": None},
            **(
                {"start_anchor_pattern": self.anchor_pattern}
                if self.anchor_pattern
                else {"start_anchor": list(self.anchors)}
            ),
            "fields": fields,
        }

    def tool_calls_field(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- the kit's reader ----------------------------------------------------------------------------------------

    def controls(self) -> tuple[str, ...]:
        """The control tokens a reply of this format is read by (text input is split at their spellings; any other
        spelling stays text): the ends, and where the format has them [TOOL_CALLS], v11's [CALL_ID] and [ARGS], and
        [THINK]/[/THINK]. The anchors are not among them: they are looked for in the prompt (`anchor_regex`)."""
        v11 = self.version is not None and self.version >= TokenizerVersion.v11
        return (*self.ends, *((TOOL_CALLS,) if self.tool_calls else ()), *((CALL_ID, ARGS) if v11 else ()),
                *(THINK_TOKENS if self.thinking else ()))  # fmt: skip

    @property
    def anchor_regex(self) -> str:
        """Where the assistant's turn starts, as a regular expression (the kit's reader and transformers' use it)."""
        return self.anchor_pattern or "|".join(re.escape(anchor) for anchor in self.anchors)

    def parse(self, pieces: Sequence[Piece], tools: Sequence[str] | None = None) -> dict[str, Any]:
        """The assistant message of a reply's pieces (from the start of the assistant's turn). Never raises.

        As mistral-common's decoder reads it: the content is what comes before the first [TOOL_CALLS], each
        [TOOL_CALLS] starts a call (inside thinking too), and the content's [THINK]...[/THINK] is thinking (a [THINK]
        never closed thinks up to the first call). `tools`: the names of the tools offered; a call of any other tool
        stays text. None: any name is a call.
        """
        reply: list[Piece] = []
        for text, control in pieces:
            if control and text in self.ends:
                break  # what follows the end of sequence (padding, a next turn) is not this reply
            reply.append((text, control))
        content, calls = self.split_calls(reply)
        rest, thoughts = self.split_thinking(content)
        texts = [text for text, _ in rest]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        parsed = []
        for call in calls:
            read = self.read_call(call)
            read = [read] if isinstance(read, dict) else read
            if not read or (tools is not None and any(c["function"]["name"] not in tools for c in read)):
                texts.append(call.text())  # not a well-formed call of an offered tool: text
            else:
                parsed.extend(read)
        if "".join(texts):
            message["content"] = "".join(texts)
        if thoughts is not None:  # kept when empty: a [THINK][/THINK] the model wrote renders back
            message["reasoning_content"] = thoughts
        if parsed:
            message["tool_calls"] = parsed
        return message

    def split_calls(self, pieces: list[Piece]) -> tuple[list[Piece], list[_Call]]:
        """The content (the pieces before the first [TOOL_CALLS]) and one `_Call` per [TOOL_CALLS]."""
        content: list[Piece] = []
        calls: list[_Call] = []
        for text, control in pieces:
            if self.tool_calls and control and text == TOOL_CALLS:
                calls.append(_Call([]))
            elif calls:
                calls[-1].pieces.append((text, control))
            else:
                content.append((text, control))
        return content, calls

    def split_thinking(self, pieces: list[Piece]) -> tuple[list[Piece], str | None]:
        """(the other pieces, the thinking): thinking is what [THINK]...[/THINK] encloses (an unclosed [THINK] thinks
        to the end; None when there is no [THINK]), control tokens in it spelled out."""
        rest: list[Piece] = []
        thoughts: list[str] | None = None
        thinking = False
        for text, control in pieces:
            if self.thinking and control and text == THINK_TOKENS[0] and not thinking:
                thinking, thoughts = True, thoughts or []
            elif self.thinking and control and text == THINK_TOKENS[1] and thinking:
                thinking = False
            elif thinking:
                thoughts.append(text)
            else:
                rest.append((text, control))
        return rest, None if thoughts is None else "".join(thoughts)

    def read_call(self, call: _Call) -> dict[str, Any] | list[dict[str, Any]] | None:
        """The tool call(s) of one [TOOL_CALLS] (None when it is not well formed)."""
        return None


# JSON as a regular expression of the `regex` module (recursive named groups, defined and never captured), and the
# start of a v2-v7 list of tool calls.
_JSON = (
    r"(?(DEFINE)"
    r'(?P<string>"(?:[^"\\]|\\.)*")'
    r"(?P<value>(?&string)|(?&object)|(?&array)|[^\s,\[\]{}\"]+)"
    r"(?P<object>\{\s*(?:(?&string)\s*:\s*(?&value)\s*(?:,\s*(?&string)\s*:\s*(?&value)\s*)*)?\})"
    r"(?P<array>\[\s*(?:(?&value)\s*(?:,\s*(?&value)\s*)*)?\])"
    r")"
)
_LIST = re.escape(TOOL_CALLS) + r"\s*\[\s*"


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _openai_call(name: Any, arguments: Any, call_id: Any = None) -> dict[str, Any] | None:
    """An OpenAI-style tool call (`arguments` the parsed JSON object, as transformers' parser returns it), None
    unless the name is a non-empty string and the arguments an object (mistral-common's v11 decoder also takes other
    JSON values, such as the number a reply cut short ends with: the kit leaves those as text)."""
    if not isinstance(name, str) or not name or not isinstance(arguments, dict):
        return None
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call_id, str) and call_id:
        call = {"id": call_id, **call}
    return call


class ReplyV2(ReplyV1):
    """Tokenizer v2: tool calls, `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` after the content."""

    version = TokenizerVersion.v2
    anchors = anchor_controls = (INST_END, TOOL_RESULTS_END)
    tool_calls = True

    def tool_calls_field(self) -> dict[str, Any]:
        # One region per call of the list, so that transformers' stream (`transformers serve`) gets one call at a
        # time: a call opens at the "{" that starts an item of the list after [TOOL_CALLS] and closes after the
        # matching "}" with the "," or "]" that follows it. Where the items are is only said by matching the JSON
        # before them (`_JSON`: the `regex` module's recursive groups), from the [TOOL_CALLS] on.
        call = {"name": "{content.name}", "arguments": "{content.arguments}"}
        return {
            "open_pattern": rf"{_LIST}(?=\{{)|(?=\s*\{{)(?<={_LIST}(?:(?&object)\s*,\s*)+)\s*{_JSON}",
            "close_pattern": rf"(?<={_LIST}(?:(?&object)\s*,\s*)*(?&object))\s*(?:,|\]\s*){_JSON}",
            "repeats": True,
            "content": "json",
            "transform": {**({"id": "{content.id}"} if self.call_ids else {}), "type": "function", "function": call},
        }

    def read_call(self, call: _Call) -> list[dict[str, Any]] | None:
        # another control token generated inside the list is left out, as mistral-common's decoder does
        calls = _json("".join(text for text, control in call.pieces if not control))
        if not isinstance(calls, list) or not calls:
            return None
        read = []
        for item in calls:
            if not isinstance(item, dict):
                return None
            tool_call = _openai_call(item.get("name"), item.get("arguments"), item.get("id") if self.call_ids else None)
            if tool_call is None:
                return None
            read.append(tool_call)
        return read


class ReplyV3(ReplyV2):
    """Tokenizer v3 (and v7): each call of the list carries its "id"."""

    version = TokenizerVersion.v3
    call_ids = True


class ReplyV11(ReplyV3):
    """Tokenizer v11: each call is `[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}` ([CALL_ID] only with an id)."""

    version = TokenizerVersion.v11

    def tool_calls_field(self) -> dict[str, Any]:
        function = {"name": "{name}", "arguments": "{content}"}
        # A call without [CALL_ID] gets the empty id of the second `id` group (`regex` allows a name twice).
        call_id = rf"(?:{re.escape(CALL_ID)}(?P<id>.*?)|(?P<id>))" if self.call_ids else ""
        return {
            "open_pattern": re.escape(TOOL_CALLS) + "(?P<name>.*?)" + call_id + re.escape(ARGS),
            "close_pattern": f"(?={re.escape(TOOL_CALLS)})|" + "|".join(re.escape(end) for end in self.ends),
            "repeats": True,
            "content": "json",
            "transform": {**({"id": "{id}"} if self.call_ids else {}), "type": "function", "function": function},
        }

    def read_call(self, call: _Call) -> dict[str, Any] | None:
        parts: list[list[str]] = [[]]
        markers: list[str] = []
        for text, control in call.pieces:
            if control and text in (CALL_ID, ARGS):
                markers.append(text)
                parts.append([])
            elif not control:  # another control token is left out, as mistral-common's decoder does
                parts[-1].append(text)
        texts = ["".join(part) for part in parts]
        if self.call_ids and markers == [CALL_ID, ARGS]:
            name, call_id, arguments = texts
        elif markers == [ARGS]:
            (name, arguments), call_id = texts, None
        else:
            return None
        arguments = _json(arguments) if arguments.strip() != "null" else {}  # mistral-common reads null as {}
        return _openai_call(name, arguments, call_id)


class ReplyV13(ReplyV11):
    """Tokenizer v13 (and v15, which writes replies the same way): calls without ids, `[TOOL_CALLS]name[ARGS]{...}`;
    thinking, `[THINK]...[/THINK]`, when the vocabulary has those tokens."""

    version = TokenizerVersion.v13
    call_ids = False


class ReplyChatML(ReplyV1):
    """ChatML (Mistral-7B-OpenOrca): content only, up to <|im_end|>."""

    version = None
    anchors = (f"{CHATML_TOKENS[0]}assistant\n",)
    # transformers decodes a legacy SentencePiece's "▁assistant" after <|im_start|> with its space
    anchor_pattern = re.escape(CHATML_TOKENS[0]) + r" ?assistant\n"
    anchor_controls = (CHATML_TOKENS[0],)
    ends = (CHATML_TOKENS[1], EOS)

    def controls(self) -> tuple[str, ...]:
        return (*CHATML_TOKENS, EOS)


REPLY_FORMATS: tuple[type[ReplyV1], ...] = (ReplyV1, ReplyV2, ReplyV3, ReplyV11, ReplyV13)


def reply_format_for(version: TokenizerVersion | str | None, thinking: bool = True) -> ReplyV1:
    """The reply format of a tokenizer version, or of a kit template name ("mistral_v3", "chatml"); None: ChatML.

    `thinking`: whether the vocabulary has [THINK] and [/THINK] (v13 reads thinking only then).
    """
    if version is None or version == CHATML:
        return ReplyChatML()
    if version not in {v.value for v in TokenizerVersion}:
        template = template_version(str(version))
        if template is None:
            raise ValueError(
                f"Unknown tokenizer version or template {version!r}: use one of "
                f"{', '.join(v.value for v in TokenizerVersion)} or a kit template name."
            )
        version = template
    version = TokenizerVersion(version)
    cls = max((cls for cls in REPLY_FORMATS if cls.version <= version), key=lambda cls: cls.version)
    return cls(thinking=thinking)


def has_thinking_tokens(tokenizer: Any) -> bool:
    """Whether a tokenizer has v13's [THINK] and [/THINK] as added tokens (a tekken v13 file may come without them)."""
    return set(THINK_TOKENS) <= {token.content for token in tokenizer.added_tokens_decoder.values()}


def tool_names(tools: Sequence[Any] | None) -> list[str] | None:
    """The names of `tools` as `apply_chat_template` takes them (schemas or functions); None for None."""
    if tools is None:
        return None
    names = []
    for tool in tools:
        if callable(tool) and not isinstance(tool, dict):
            names.append(getattr(tool, "__name__", ""))
            continue
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names
