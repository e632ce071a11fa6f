"""Reading a conversation as mistral-common's request models read it: each message into a `Message` record.

What `ChatCompletionRequest.from_openai(...)` and the pydantic models behind it accept and how they normalize it:
roles (`developer` is `system`), content as a string or text parts (and thinking parts where the format has
thinking), tool calls whose arguments become the JSON mistral-common writes, tool messages, reasoning fields, and the
tool schemas. The same for every version except for what the format has (tool calling, thinking), which the caller
passes in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from typing import Any

from .errors import ConversationError
from .limits import MAX_NESTING, callers_recursion_limit, nesting, recursion_room, text_nesting, too_deep
from .plain import describe

# mistral-common's pattern for function names, applied with re.match as it does (so "$" also matches before a final
# newline).
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NULL_ID = "null"  # the id pydantic gives a tool call without one
ROLES = ("system", "user", "assistant", "tool")
JOIN = "\n\n"  # mistral-common joins merged messages (and, before v15, text chunks) with a blank line
# Pydantic's lax booleans (Function.strict is a pydantic bool).
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


@dataclasses.dataclass
class Message:
    index: int
    role: str
    text: str = ""  # the content's text chunks joined as mistral-common joins them (the Reader's `join`)
    truthy: bool = False  # bool() of mistral-common's content (a list of empty chunks is truthy)
    content: Any = ""  # what the template gets as content
    calls: list[dict[str, Any]] | None = None  # None: no tool_calls key (or None); [] counts as none but is a list
    call_id: Any = None
    prefix: bool = False
    thinks: bool = False  # the content has thinking parts (tokenizer v13)


def where(message: Message | int) -> str:
    """How errors name a message: `messages[2] (assistant)`."""
    index = message if isinstance(message, int) else message.index
    role = "" if isinstance(message, int) else f" ({message.role})"
    return f"messages[{index}]{role}"


def fail(message: Message | int, rule: str, fix: str) -> ConversationError:
    """The error for one message (or the message at an index)."""
    index = message if isinstance(message, int) else message.index
    return ConversationError(where(message), rule, fix, index)


def dumps(message: Message | int, where: str, value: Any, ensure_ascii: bool = False) -> str:
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii)
    except (TypeError, ValueError, RecursionError) as error:
        raise fail(message, f"{where} has no JSON form ({error}).", "Pass JSON data only.") from None


def normalized_json(message: Message | int, where: str, text: str) -> str:
    """The JSON mistral-common writes for a tool result or arguments given as `text`: parsed and re-serialized
    when it is JSON ({} when empty), else the text as a JSON string. JSON nested deeper than mistral-common parses
    (`limits.MAX_NESTING`) is refused: also text that is not JSON where the parser would recurse that deep before
    failing (mistral-common's fails with RecursionError there; text that fails earlier stays text, as there)."""
    deep = None
    with recursion_room():
        try:
            value = json.loads(text or "{}")
        except json.JSONDecodeError as error:
            value = text
            if text.count("[", 0, error.pos) + text.count("{", 0, error.pos) > MAX_NESTING:
                deep = too_deep(text_nesting(text[: error.pos]), where)
        except RecursionError:
            deep = too_deep(text_nesting(text), where) or f"{where} is nested too deeply to parse."
        else:
            if text.count("[") + text.count("{") > MAX_NESTING:  # else it cannot be nested that deep
                deep = too_deep(nesting(value), where)
        if deep:
            raise fail(message, deep, "Flatten it.")
        return dumps(message, where, value)


class Reader:
    """Reads messages and tools for one template: `tool_calling` (the format has tool calls, which only changes the
    roles an error lists), `thinking` (thinking parts and reasoning fields are read; tokenizer v13 and later, and
    only with `thinking_tokens`: a tekken file may come without [THINK] and [/THINK]), `system_thinking` (system
    messages may hold thinking parts too: v13 only) and `join` (what the text chunks of one message are joined
    with: a blank line before v15, nothing from v15 on)."""

    def __init__(
        self,
        template: str,
        *,
        tool_calling: bool,
        thinking: bool,
        system_thinking: bool = True,
        thinking_tokens: bool = True,
        join: str = JOIN,
    ):
        self.template, self.tool_calling, self.join = template, tool_calling, join
        self.format_thinks, self.thinking = thinking, thinking and thinking_tokens
        self.system_thinking = self.thinking and system_thinking

    def parts_text(
        self, message: Message, content: Any, field: str = "content", thinking: bool = False
    ) -> tuple[str, Any]:
        """(joined text, content for the template) of a str or a list of text chunks (and, with `thinking`,
        thinking chunks: `{"type": "thinking", "thinking": ..., "closed": true}`, kept in the template's content)."""
        if isinstance(content, str):
            return content, content
        if not isinstance(content, list):
            fix = "Use a string or a list of {'type': 'text', 'text': ...} parts."
            raise fail(message, f"'{field}' is {describe(content)}.", fix)
        texts, parts = [], []
        for number, part in enumerate(content):
            if not isinstance(part, dict):
                raise fail(message, f"{field} part {number} is {describe(part)}.", "Use {'type': 'text', 'text': ...}.")
            kind = part.get("type")
            if kind == "thinking" and thinking:
                parts.append(self.thinking_part(message, f"{field} part {number}", part))
                continue
            if kind != "text":
                renders = "text and thinking parts" if thinking else "text parts only"
                raise fail(
                    message,
                    f"{field} part {number} has type {describe(kind)}; {self.template} renders {renders} "
                    "(mistral-common too, for this tokenizer).",
                    "Send images, audio and thinking to a model and tokenizer that support them.",
                )
            if "text" not in part or not isinstance(part["text"], str):
                raise fail(
                    message, f"{field} part {number} has 'text' {describe(part.get('text'))}.", "Make it a string."
                )
            texts.append(part["text"])
            parts.append({"type": "text", "text": part["text"]})
        return self.join.join(t for t in texts if t), parts

    def thinking_part(self, message: Message, where: str, part: dict[str, Any]) -> dict[str, Any]:
        """A thinking chunk as mistral-common's `ThinkChunk` reads it (`closed` is a pydantic bool, true by default)."""
        thought = part.get("thinking")
        if not isinstance(thought, str):
            raise fail(message, f"{where} has 'thinking' {describe(thought)}.", "Make it a string.")
        closed = part.get("closed", True)
        if not _lax_bool(closed):
            raise fail(message, f"{where} has 'closed' {describe(closed)}.", "Make it true or false.")
        return {"type": "thinking", "thinking": thought, "closed": _bool_value(closed)}

    def read(self, index: int, raw: Any) -> Message:
        if not isinstance(raw, dict):
            raise fail(
                index,
                f"the message is {describe(raw)}.",
                "Each message is a dict like {'role': 'user', 'content': '...'}.",
            )
        role = raw.get("role")
        if role == "developer":
            role = "system"  # as mistral-common (and OpenAI) read it
        if role not in ROLES:
            roles = "system (or developer), user, assistant" + (" and tool" if self.tool_calling else "")
            raise fail(index, f"role {describe(role)} is not a role of this format.", f"Use one of {roles}.")
        message = Message(index, role)
        if role == "assistant":
            self.read_assistant(message, raw)
            return message
        if "content" not in raw or raw["content"] is None:
            missing = "has no 'content'" if "content" not in raw else "has 'content' None"
            fix = 'Give it a string (\'"content": ""\' for none).' if role != "tool" else "Give it the tool's result."
            raise fail(message, f"the message {missing}.", fix)
        content = raw["content"]
        if role == "tool" and isinstance(content, dict):
            raise fail(
                message,
                "tool content is a dict; mistral-common takes a string (or text parts).",
                "Pass json.dumps(result) as the content: JSON results are embedded as JSON.",
            )
        message.text, message.content = self.parts_text(
            message, content, thinking=self.system_thinking and role == "system"
        )
        message.truthy = bool(content)
        message.thinks = thinks(message.content)
        if role == "tool":
            self.read_tool(message, raw)
        return message

    def read_assistant(self, message: Message, raw: dict) -> None:
        content = raw.get("content")
        if content is not None:
            message.text, message.content = self.parts_text(message, content, thinking=self.thinking)
            message.truthy = bool(content)
            message.thinks = thinks(message.content)
        self.read_reasoning(message, raw)
        calls = raw.get("tool_calls")
        if calls is None:
            return
        if not isinstance(calls, list):
            raise fail(message, f"'tool_calls' is {describe(calls)}.", "Make it a list of tool calls.")
        message.calls = [self.read_call(message, number, call) for number, call in enumerate(calls)]

    def read_reasoning(self, message: Message, raw: dict) -> None:
        """`reasoning_content` / `reasoning` (vLLM's and SGLang's fields): a thinking chunk before the content in
        mistral-common's `AssistantMessage.from_openai`, which only tokenizer v13 renders."""
        fields = {field: raw[field] for field in ("reasoning_content", "reasoning") if raw.get(field) is not None}
        if not fields:
            return
        field = next(iter(fields))
        if self.format_thinks and not self.thinking:
            raise fail(
                message,
                "thinking is set, but this tokenizer has no [THINK] and [/THINK] tokens (mistral-common rejects it).",
                "Use the model's own tekken.json, or put the text into the content.",
            )
        if not self.thinking:
            raise fail(
                message,
                f"'{field}' is set; this Mistral format has no thinking (mistral-common rejects it).",
                f"Drop '{field}', or put the text into the content.",
            )
        if len(set(map(repr, fields.values()))) > 1:
            raise fail(
                message, "'reasoning_content' and 'reasoning' differ.", "Give the thinking once, in one of them."
            )
        if message.thinks:
            raise fail(
                message,
                f"the content has thinking parts and '{field}' is set too.",
                "Give the thinking once: as a thinking part or in the field.",
            )
        thought = fields[field]
        if not isinstance(thought, str):
            raise fail(message, f"'{field}' is {describe(thought)}.", "Make it a string.")
        if raw.get("content") is None:
            parts = []
        elif isinstance(message.content, str):
            parts = [{"type": "text", "text": message.content}]
        else:
            parts = message.content
        message.content = [{"type": "thinking", "thinking": thought, "closed": True}, *parts]
        message.truthy, message.thinks = True, True

    def read_call(self, message: Message, number: int, call: Any) -> dict[str, Any]:
        where = f"tool_calls[{number}]"
        fix = "Write it as {'id': 'abcDEF123', 'type': 'function', 'function': {'name': ..., 'arguments': {...}}}."
        if not isinstance(call, dict):
            raise fail(message, f"{where} is {describe(call)}.", fix)
        call_id = call.get("id", NULL_ID)
        if not isinstance(call_id, str):
            raise fail(message, f"{where} has id {describe(call_id)}.", "Make the id a string (or leave it out).")
        if call.get("type", "function") != "function":
            raise fail(message, f"{where} has type {describe(call.get('type'))}.", "Use 'type': 'function'.")
        function = call.get("function")
        if not isinstance(function, dict):
            raise fail(message, f"{where} has 'function' {describe(function)}.", fix)
        name = function.get("name")
        if not isinstance(name, str):
            raise fail(message, f"{where} has name {describe(name)}.", "Give the function's name as a string.")
        if "arguments" not in function:
            raise fail(message, f"{where} has no 'arguments'.", "Add 'arguments' ({} for none).")
        arguments = function["arguments"]
        if isinstance(arguments, dict):
            deep = too_deep(nesting(arguments), f"{where} arguments")
            if deep:
                raise fail(message, deep, "Flatten them.")
            arguments = dumps(message, where, arguments, ensure_ascii=True)  # pydantic's FunctionCall does this
        elif arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            raise fail(message, f"{where} has arguments {describe(arguments)}.", "Use a dict or a JSON object string.")
        return {"id": call_id, "name": name, "arguments": normalized_json(message, where, arguments)}

    def read_tool(self, message: Message, raw: dict) -> None:
        if "tool_call_id" not in raw:
            raise fail(message, "the tool message has no 'tool_call_id'.", "Add the id of the call it answers.")
        call_id = raw["tool_call_id"]
        if call_id is not None and not isinstance(call_id, str):
            raise fail(message, f"tool_call_id is {describe(call_id)}.", "Make it the call's id, a string.")
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or not NAME_RE.match(name)):
            raise fail(
                message,
                f"the tool name {describe(name)} is not 1-64 letters, digits, '_' or '-'.",
                "Use the function's name, or leave 'name' out.",
            )
        message.call_id = call_id

    def read_tools(self, tools: list[Any]) -> list[dict[str, Any]]:
        out = []
        for number, tool in enumerate(tools):
            where = f"tools[{number}]"
            if not isinstance(tool, dict):
                raise ConversationError(where, f"the tool is {describe(tool)}.", "Pass its JSON schema as a dict.")
            if tool.get("type", "function") != "function":
                raise ConversationError(where, f"type {describe(tool.get('type'))}.", "Use 'type': 'function'.")
            function = tool.get("function")
            if isinstance(function, list) and function:
                with contextlib.suppress(TypeError, ValueError):
                    function = dict(function)  # what mistral-common's Function.from_openai does with it
            fix = (
                "Write it as {'type': 'function', 'function': {'name': ..., 'description': ..., 'parameters': {...}}}."
            )
            if not isinstance(function, dict) or not function:
                raise ConversationError(where, f"'function' is {describe(function)}.", fix)
            name = function.get("name")
            if not isinstance(name, str):
                raise ConversationError(where, f"the function name is {describe(name)}.", fix)
            description = "" if function.get("description") is None else function["description"]
            if not isinstance(description, str):
                raise ConversationError(where, f"description is {describe(description)}.", "Make it a string.")
            parameters = {} if function.get("parameters") is None else function["parameters"]
            if not isinstance(parameters, dict) or any(not isinstance(k, str) for k in parameters):
                raise ConversationError(
                    where, f"parameters is {describe(parameters)}.", "Make it a JSON schema object (a dict)."
                )
            strict = function.get("strict")
            if strict is not None and not _lax_bool(strict):
                raise ConversationError(where, f"strict is {describe(strict)}.", "Make it true or false.")
            deep = too_deep(nesting(parameters), "parameters")
            if deep:
                raise ConversationError(where, deep, "Flatten the schema.")
            self.check_schema(where, parameters)
            if not NAME_RE.match(name):
                raise ConversationError(
                    where,
                    f"the function name {describe(name)} is not 1-64 letters, digits, '_' or '-'.",
                    "Rename the function.",
                )
            out.append(
                {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}
            )
        return out

    def check_schema(self, where: str, parameters: dict[str, Any]) -> None:
        from mistral_common.utils.json_utils import validate_json_schema_by_draft7

        try:
            with callers_recursion_limit():  # as mistral-common runs it
                validate_json_schema_by_draft7(value=parameters)
        except RecursionError:
            raise ConversationError(
                where,
                "parameters is nested too deeply for the draft-7 schema check, which recurses into each subschema "
                "(mistral-common's check fails on it too).",
                "Flatten the schema.",
            ) from None
        except Exception as error:  # jsonschema's SchemaError (as ValueError), or what it raises on odd data
            raise ConversationError(
                where, f"parameters is not a valid JSON schema (draft 7): {error}", "Fix the schema."
            ) from None


def thinks(content: Any) -> bool:
    """Whether template content holds a thinking part."""
    return isinstance(content, list) and any(part.get("type") == "thinking" for part in content)


def _bool_value(value: Any) -> bool:
    """The value pydantic's lax bool gives `value` (which `_lax_bool` accepts)."""
    if isinstance(value, str):
        return value.lower() in _TRUE
    return bool(value)


def _lax_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value in (0, 1)
    if isinstance(value, float):
        return value in (0.0, 1.0)
    return isinstance(value, str) and value.lower() in _TRUE | _FALSE
