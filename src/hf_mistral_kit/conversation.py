"""The conversation contract: what the kit's templates accept, checked before anything is rendered.

Two steps, in this order, shared by `render`, the kit tokenizer's `apply_chat_template` and the CLI's `render`:

1. **Prepare** (`to_plain`): every input form transformers' `apply_chat_template` accepts becomes plain JSON-like
   data (dict, list, str, int, float, bool, None): message objects (dataclasses, pydantic models such as the OpenAI
   SDK's), content parts given as objects, `Conversation`-like objects with `.messages`, tuples, str/int/float
   subclasses (enums, numpy scalars), tools given as Python functions (turned into JSON schemas by transformers' own
   `get_json_schema`, exactly as transformers does) and documents. Nesting depth is unlimited (no recursion) and
   cycles are an error.
2. **Validate** (`prepare_chat` with a kit template): the conversation is accepted exactly when mistral-common's
   `ChatCompletionRequest.from_openai(...)` + `MistralTokenizer.encode_chat_completion(...)` accept it for the
   template's tokenizer version (v1, v2, v3, v7, v11 or v13; SentencePiece and tekken files of one version follow
   the same rules), with mistral-common's `ValidationMode`. Everything else raises
   `ConversationError` (a `ValueError`) naming the message, the rule and the fix. Tool results and tool-call
   arguments are JSON-normalized as mistral-common does (Jinja cannot parse JSON; from v7 on tool results are written
   as they are), thinking (v13) becomes thinking parts of the content. The messages handed on are
   rebuilt from the fields mistral-common reads; every other key of the caller's messages is dropped, so the keys
   the templates read internally (`prefix` for `continue_final_message`, `content_json` for a tool result) are only
   ever set here.

Contract with the tokenizer: `prepare_chat` returns plain data only (dict, list, str, int, float, bool, None), after
all of transformers' own input normalization (objects to dicts, callables to JSON schemas, `.messages` of
conversation objects), and transformers' `render_jinja_template` does nothing to plain data but copy it (and copy
reasoning strings under their other names, for templates that are not the kit's). So a tokenizer that escapes
control-token spellings in every string (keys included) of what `prepare_chat` returns, and passes exactly that to
`render_jinja_template`, escapes every string the template can print. The template's own text (its control tokens)
is the only unescaped text in the output.

Modes (`ValidationMode`, the same values as mistral-common's): `None`, the default, validates a conversation that
ends with a complete assistant message as a fine-tuning sample (`finetuning`) and anything else as a prompt (`test`,
mistral-common's default), which is what `apply_chat_template` is used for in training and in inference. `serving`
is mistral-common's serving mode without its model-name requirement; `agnostic` applies no last-message rule.
ChatML has no mistral-common reference: its messages get the same shape checks as v1, without the rules on message
order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, NamedTuple

__all__ = ["ConversationError", "PreparedChat", "ValidationMode", "prepare_chat", "to_plain"]


class ValidationMode(str, Enum):
    """mistral-common's validation modes (`mistral_common.protocol.instruct.validator.ValidationMode`); its members
    are accepted wherever the kit takes one."""

    serving = "serving"
    finetuning = "finetuning"
    test = "test"
    agnostic = "agnostic"


class ConversationError(ValueError):
    """A conversation the template's tokenizer version does not accept (mistral-common rejects it too).

    `index` is the position of the offending message in the caller's list (None when the problem is not one
    message's), `rule` says what is wrong and `fix` what to do about it.
    """

    def __init__(self, where: str, rule: str, fix: str, index: int | None = None):
        self.where, self.rule, self.fix, self.index = where, rule, fix, index
        super().__init__(f"{where}: {rule} Fix: {fix}" if where else f"{rule} Fix: {fix}")


class PreparedChat(NamedTuple):
    """Plain data for `render_jinja_template`: one conversation, the tools and the documents."""

    messages: list[Any]
    tools: list[Any] | None
    documents: list[Any] | None


# --- 1. prepare: plain JSON-like data --------------------------------------------------------------------------


class _Opaque:
    """A value with no JSON form (an image, an array, a datetime ...): rejected wherever a template would read it."""

    __slots__ = ("type_name",)

    def __init__(self, value: Any):
        self.type_name = type(value).__name__

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


_SCALARS = (str, int, float, bool, type(None))
_EXIT = object()


def _scalar(value: Any) -> tuple[bool, Any]:
    """(True, plain value) for JSON scalars and their subclasses (enums, numpy scalars), else (False, None)."""
    kind = type(value)
    if kind in _SCALARS:
        return True, value
    if isinstance(value, bool):
        return True, bool(value)
    if isinstance(value, str):
        return True, str.__str__(value)
    if isinstance(value, int):
        return True, int.__int__(value)
    if isinstance(value, float):
        return True, float.__float__(value)
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):  # numpy / torch scalars
        item = value.item()
        if type(item) in _SCALARS:
            return True, item
    return False, None


def to_plain(value: Any, placeholders: bool = False) -> Any:
    """`value` rebuilt from dicts, lists, str, int, float, bool and None, without recursion.

    Mappings, lists and tuples are copied; dataclass instances become dicts of their fields and pydantic models
    their `model_dump()` (as transformers does). Anything else becomes an opaque marker that validation rejects, or,
    with `placeholders=True` (templates that are not the kit's), the string "<TypeName>" transformers uses.
    """
    root: list[Any] = [None]
    stack: list[Any] = [(value, root, 0)]
    on_path: set[int] = set()
    scalars = _SCALARS
    while stack:
        item = stack.pop()
        if item is _EXIT:
            on_path.discard(stack.pop())
            continue
        source, parent, key = item
        kind = type(source)
        if kind in scalars:
            parent[key] = source
            continue
        identity = id(source)
        if identity in on_path:
            raise ConversationError("", "The data contains itself (a cycle), which has no JSON form.", "Pass a copy.")
        if kind is not dict and kind is not list:
            is_scalar, plain = _scalar(source)
            if is_scalar:
                parent[key] = plain
                continue
            if dataclasses.is_dataclass(source) and not isinstance(source, type):
                source = {field.name: getattr(source, field.name) for field in dataclasses.fields(source)}
            elif not isinstance(source, (Mapping, list, tuple)) and callable(getattr(source, "model_dump", None)):
                source = _model_dump(source)
            if not isinstance(source, (Mapping, list, tuple)):
                parent[key] = f"<{type(source).__name__}>" if placeholders else _Opaque(source)
                continue
        children = []
        if isinstance(source, Mapping):
            container: Any = {}
            for k, v in source.items():
                if type(k) not in scalars:
                    k = _key(k, placeholders)
                if type(v) in scalars:
                    container[k] = v
                else:
                    container[k] = None
                    children.append((v, container, k))
        else:
            container = list(source)
            for i, v in enumerate(container):
                if type(v) not in scalars:
                    children.append((v, container, i))
        parent[key] = container
        if children:
            on_path.add(identity)
            stack += [identity, _EXIT]
            stack += reversed(children)
    return root[0]


def _model_dump(model: Any) -> Any:
    try:
        return model.model_dump()
    except Exception as error:  # pydantic refuses cycles and values it cannot serialize
        raise ConversationError(
            "", f"{type(model).__name__}.model_dump() failed: {error}", "Pass plain JSON data (dicts and lists)."
        ) from None


def _key(key: Any, placeholders: bool) -> Any:
    is_scalar, plain = _scalar(key)
    if is_scalar:
        return plain
    return f"<{type(key).__name__}>" if placeholders else _Opaque(key)


def _plain_tools(tools: Any, placeholders: bool) -> list[Any] | None:
    """Tools as JSON schemas: Python functions (and methods) go through transformers' `get_json_schema`."""
    if tools is None:
        return None
    import inspect

    if isinstance(tools, Mapping) or not isinstance(tools, (list, tuple)):
        raise ConversationError(
            "tools", f"tools is a {type(tools).__name__}, not a list.", "Pass a list of tool schemas or functions."
        )
    schemas = []
    for number, tool in enumerate(tools):
        if inspect.isfunction(tool) or inspect.ismethod(tool):
            from transformers.utils import get_json_schema

            try:
                tool = get_json_schema(tool)
            except Exception as error:  # transformers' own parsing errors (docstring, type hints)
                raise ConversationError(
                    f"tools[{number}] ({getattr(tool, '__name__', type(tool).__name__)})",
                    f"transformers cannot turn this function into a JSON schema: {error}",
                    "Give it type hints and a Google-style docstring with an Args section, or pass its JSON schema.",
                ) from None
        elif callable(tool) and not isinstance(tool, (Mapping, type)) and not hasattr(tool, "model_dump"):
            raise ConversationError(
                f"tools[{number}]",
                f"a {type(tool).__name__} is not a tool transformers accepts.",
                "Pass a plain function (def ...) with type hints and a docstring, or its JSON schema.",
            )
        schemas.append(tool)
    return to_plain(schemas, placeholders)


# --- 2. validate: exactly what mistral-common accepts -------------------------------------------------------------

# mistral-common's patterns, applied with re.match as it does (so "$" also matches before a final newline).
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CALL_ID_RE = re.compile(r"^[a-zA-Z0-9]{9}$")
_NULL_ID = "null"
_ROLES = ("system", "user", "assistant", "tool")
# Which role may follow which (mistral-common's `_validate_message_order`).
_NEXT_ROLES = {
    "system": ("user", "assistant", "system"),
    "user": ("assistant", "system", "user"),
    "assistant": ("assistant", "user", "tool"),
    "tool": ("assistant", "tool", "user"),
}
_ORDER_FIXES = {
    "tool": "Put each tool message right after the assistant message whose tool call it answers.",
    "system": "Move the system message before that turn: all system messages become one system prompt anyway.",
}
# Pydantic's lax booleans (Function.strict is a pydantic bool).
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}
_JOIN = "\n\n"  # mistral-common joins text chunks and merged messages with a blank line

# The kit's templates and the tokenizer version whose rules they follow: `mistral_vN` for Mistral's SentencePiece
# files, `mistral_tekken_vN` for tekken.json (the same rules; tekken writes no space after control tokens).
TEMPLATE_VERSIONS = {
    "mistral_v1": "v1",
    "mistral_v3": "v3",
    "mistral_v7": "v7",
    "mistral_tekken_v3": "v3",
    "mistral_tekken_v7": "v7",
    "mistral_tekken_v11": "v11",
    "mistral_tekken_v13": "v13",
    "chatml": "chatml",
}


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, _Opaque):
        return f"a {value.type_name}"
    return "None" if value is None else f"a {type(value).__name__}"


@dataclasses.dataclass
class _Message:
    index: int
    role: str
    text: str = ""  # the content's text chunks joined as mistral-common joins them
    truthy: bool = False  # bool() of mistral-common's content (a list of empty chunks is truthy)
    content: Any = ""  # what the template gets as content
    calls: list[dict[str, Any]] | None = None  # None: no tool_calls key (or None); [] counts as none but is a list
    call_id: Any = None
    prefix: bool = False
    thinks: bool = False  # the content has thinking parts (tokenizer v13)


class _Rules:
    """mistral-common for tokenizer v1: `MistralRequestValidator`, `InstructRequestNormalizer`, `InstructTokenizerV1`.

    Subclasses override only what their version changes, as mistral-common's classes do.
    """

    template = "mistral_v1"
    version = "v1"
    models = "Mistral-7B-Instruct v0.1/v0.2, Mixtral-8x7B-Instruct: tokenizer v1"
    tool_calling = False
    check_order = True
    content_and_calls = False  # an assistant message may have both (tokenizer v7 and later)
    thinking = False  # thinking parts in assistant and system messages (tokenizer v13 with [THINK] tokens)

    def __init__(self, mode: ValidationMode, template: str | None = None):
        self.mode = mode
        if template is not None:
            self.template = template

    def where(self, message: _Message | int) -> str:
        index = message if isinstance(message, int) else message.index
        role = "" if isinstance(message, int) else f" ({message.role})"
        return f"messages[{index}]{role}"

    def fail(self, message: _Message | int, rule: str, fix: str) -> ConversationError:
        index = message if isinstance(message, int) else message.index
        return ConversationError(self.where(message), rule, fix, index)

    # -- reading one message (ChatCompletionRequest.from_openai and the pydantic models behind it) --

    def parts_text(
        self, index: _Message, content: Any, field: str = "content", thinking: bool = False
    ) -> tuple[str, Any]:
        """(joined text, content for the template) of a str or a list of text chunks (and, with `thinking`,
        thinking chunks: `{"type": "thinking", "thinking": ..., "closed": true}`, kept in the template's content)."""
        if isinstance(content, str):
            return content, content
        if not isinstance(content, list):
            fix = "Use a string or a list of {'type': 'text', 'text': ...} parts."
            raise self.fail(index, f"'{field}' is {_describe(content)}.", fix)
        texts, parts = [], []
        for number, part in enumerate(content):
            if not isinstance(part, dict):
                raise self.fail(
                    index, f"{field} part {number} is {_describe(part)}.", "Use {'type': 'text', 'text': ...}."
                )
            kind = part.get("type")
            if kind == "thinking" and thinking:
                parts.append(self.thinking_part(index, f"{field} part {number}", part))
                continue
            if kind != "text":
                renders = "text and thinking parts" if thinking else "text parts only"
                raise self.fail(
                    index,
                    f"{field} part {number} has type {_describe(kind)}; {self.template} renders {renders} "
                    "(mistral-common too, for this tokenizer).",
                    "Send images, audio and thinking to a model and tokenizer that support them.",
                )
            if "text" not in part or not isinstance(part["text"], str):
                raise self.fail(
                    index, f"{field} part {number} has 'text' {_describe(part.get('text'))}.", "Make it a string."
                )
            texts.append(part["text"])
            parts.append({"type": "text", "text": part["text"]})
        return _JOIN.join(t for t in texts if t), parts

    def thinking_part(self, index: _Message, where: str, part: dict[str, Any]) -> dict[str, Any]:
        """A thinking chunk as mistral-common's `ThinkChunk` reads it (`closed` is a pydantic bool, true by default)."""
        thought = part.get("thinking")
        if not isinstance(thought, str):
            raise self.fail(index, f"{where} has 'thinking' {_describe(thought)}.", "Make it a string.")
        closed = part.get("closed", True)
        if not _lax_bool(closed):
            raise self.fail(index, f"{where} has 'closed' {_describe(closed)}.", "Make it true or false.")
        return {"type": "thinking", "thinking": thought, "closed": _bool_value(closed)}

    def read(self, index: int, raw: Any) -> _Message:
        if not isinstance(raw, dict):
            raise self.fail(
                index,
                f"the message is {_describe(raw)}.",
                "Each message is a dict like {'role': 'user', 'content': '...'}.",
            )
        role = raw.get("role")
        if role == "developer":
            role = "system"  # as mistral-common (and OpenAI) read it
        if role not in _ROLES:
            roles = "system (or developer), user, assistant" + (" and tool" if self.tool_calling else "")
            raise self.fail(index, f"role {_describe(role)} is not a role of this format.", f"Use one of {roles}.")
        message = _Message(index, role)
        if role == "assistant":
            self.read_assistant(message, raw)
            return message
        if "content" not in raw or raw["content"] is None:
            missing = "has no 'content'" if "content" not in raw else "has 'content' None"
            fix = 'Give it a string (\'"content": ""\' for none).' if role != "tool" else "Give it the tool's result."
            raise self.fail(message, f"the message {missing}.", fix)
        content = raw["content"]
        if role == "tool" and isinstance(content, dict):
            raise self.fail(
                message,
                "tool content is a dict; mistral-common takes a string (or text parts).",
                "Pass json.dumps(result) as the content: JSON results are embedded as JSON.",
            )
        message.text, message.content = self.parts_text(message, content, thinking=self.thinking and role == "system")
        message.truthy = bool(content)
        message.thinks = _thinks(message.content)
        if role == "tool":
            self.read_tool(message, raw)
        return message

    def read_assistant(self, message: _Message, raw: dict) -> None:
        content = raw.get("content")
        if content is not None:
            message.text, message.content = self.parts_text(message, content, thinking=self.thinking)
            message.truthy = bool(content)
            message.thinks = _thinks(message.content)
        self.read_reasoning(message, raw)
        calls = raw.get("tool_calls")
        if calls is None:
            return
        if not isinstance(calls, list):
            raise self.fail(message, f"'tool_calls' is {_describe(calls)}.", "Make it a list of tool calls.")
        message.calls = [self.read_call(message, number, call) for number, call in enumerate(calls)]

    def read_reasoning(self, message: _Message, raw: dict) -> None:
        """`reasoning_content` / `reasoning` (vLLM's and SGLang's fields): a thinking chunk before the content in
        mistral-common's `AssistantMessage.from_openai`, which only tokenizer v13 renders."""
        fields = {field: raw[field] for field in ("reasoning_content", "reasoning") if raw.get(field) is not None}
        if not fields:
            return
        field = next(iter(fields))
        if not self.thinking:
            raise self.fail(
                message,
                f"'{field}' is set; this Mistral format has no thinking (mistral-common rejects it).",
                f"Drop '{field}', or put the text into the content.",
            )
        if len(set(map(repr, fields.values()))) > 1:
            raise self.fail(
                message, "'reasoning_content' and 'reasoning' differ.", "Give the thinking once, in one of them."
            )
        if message.thinks:
            raise self.fail(
                message,
                f"the content has thinking parts and '{field}' is set too.",
                "Give the thinking once: as a thinking part or in the field.",
            )
        thought = fields[field]
        if not isinstance(thought, str):
            raise self.fail(message, f"'{field}' is {_describe(thought)}.", "Make it a string.")
        if raw.get("content") is None:
            parts = []
        elif isinstance(message.content, str):
            parts = [{"type": "text", "text": message.content}]
        else:
            parts = message.content
        message.content = [{"type": "thinking", "thinking": thought, "closed": True}, *parts]
        message.truthy, message.thinks = True, True

    def read_call(self, message: _Message, number: int, call: Any) -> dict[str, Any]:
        where = f"tool_calls[{number}]"
        fix = "Write it as {'id': 'abcDEF123', 'type': 'function', 'function': {'name': ..., 'arguments': {...}}}."
        if not isinstance(call, dict):
            raise self.fail(message, f"{where} is {_describe(call)}.", fix)
        call_id = call.get("id", _NULL_ID)
        if not isinstance(call_id, str):
            raise self.fail(message, f"{where} has id {_describe(call_id)}.", "Make the id a string (or leave it out).")
        if call.get("type", "function") != "function":
            raise self.fail(message, f"{where} has type {_describe(call.get('type'))}.", "Use 'type': 'function'.")
        function = call.get("function")
        if not isinstance(function, dict):
            raise self.fail(message, f"{where} has 'function' {_describe(function)}.", fix)
        name = function.get("name")
        if not isinstance(name, str):
            raise self.fail(message, f"{where} has name {_describe(name)}.", "Give the function's name as a string.")
        if "arguments" not in function:
            raise self.fail(message, f"{where} has no 'arguments'.", "Add 'arguments' ({} for none).")
        arguments = function["arguments"]
        if isinstance(arguments, dict):
            arguments = self.dumps(message, where, arguments, ensure_ascii=True)  # pydantic's FunctionCall does this
        elif arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            raise self.fail(
                message, f"{where} has arguments {_describe(arguments)}.", "Use a dict or a JSON object string."
            )
        return {"id": call_id, "name": name, "arguments": self.normalized_json(message, where, arguments)}

    def read_tool(self, message: _Message, raw: dict) -> None:
        if "tool_call_id" not in raw:
            raise self.fail(message, "the tool message has no 'tool_call_id'.", "Add the id of the call it answers.")
        call_id = raw["tool_call_id"]
        if call_id is not None and not isinstance(call_id, str):
            raise self.fail(message, f"tool_call_id is {_describe(call_id)}.", "Make it the call's id, a string.")
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
            raise self.fail(
                message,
                f"the tool name {_describe(name)} is not 1-64 letters, digits, '_' or '-'.",
                "Use the function's name, or leave 'name' out.",
            )
        message.call_id = call_id

    def check_tool_message_id(self, message: _Message) -> None:
        return

    # -- JSON as mistral-common normalizes it --

    def dumps(self, message: _Message | int, where: str, value: Any, ensure_ascii: bool = False) -> str:
        try:
            return json.dumps(value, ensure_ascii=ensure_ascii)
        except (TypeError, ValueError, RecursionError) as error:
            raise self.fail(message, f"{where} has no JSON form ({error}).", "Pass JSON data only.") from None

    def normalized_json(self, message: _Message | int, where: str, text: str) -> str:
        """The JSON mistral-common writes for a tool result or arguments given as `text`: parsed and re-serialized
        when it is JSON ({} when empty), else the text as a JSON string."""
        try:
            value = json.loads(text or "{}")
        except json.JSONDecodeError:
            value = text
        except RecursionError:
            raise self.fail(message, f"{where} is nested too deeply to parse.", "Flatten it.") from None
        return self.dumps(message, where, value)

    # -- tools --

    def read_tools(self, tools: list[Any]) -> list[dict[str, Any]]:
        out = []
        for number, tool in enumerate(tools):
            where = f"tools[{number}]"
            if not isinstance(tool, dict):
                raise ConversationError(where, f"the tool is {_describe(tool)}.", "Pass its JSON schema as a dict.")
            if tool.get("type", "function") != "function":
                raise ConversationError(where, f"type {_describe(tool.get('type'))}.", "Use 'type': 'function'.")
            function = tool.get("function")
            if isinstance(function, list) and function:
                with contextlib.suppress(TypeError, ValueError):
                    function = dict(function)  # what mistral-common's Function.from_openai does with it
            fix = (
                "Write it as {'type': 'function', 'function': {'name': ..., 'description': ..., 'parameters': {...}}}."
            )
            if not isinstance(function, dict) or not function:
                raise ConversationError(where, f"'function' is {_describe(function)}.", fix)
            name = function.get("name")
            if not isinstance(name, str):
                raise ConversationError(where, f"the function name is {_describe(name)}.", fix)
            description = "" if function.get("description") is None else function["description"]
            if not isinstance(description, str):
                raise ConversationError(where, f"description is {_describe(description)}.", "Make it a string.")
            parameters = {} if function.get("parameters") is None else function["parameters"]
            if not isinstance(parameters, dict) or any(not isinstance(k, str) for k in parameters):
                raise ConversationError(
                    where, f"parameters is {_describe(parameters)}.", "Make it a JSON schema object (a dict)."
                )
            strict = function.get("strict")
            if strict is not None and not _lax_bool(strict):
                raise ConversationError(where, f"strict is {_describe(strict)}.", "Make it true or false.")
            self.check_schema(where, parameters)
            if not _NAME_RE.match(name):
                raise ConversationError(
                    where,
                    f"the function name {_describe(name)} is not 1-64 letters, digits, '_' or '-'.",
                    "Rename the function.",
                )
            out.append(
                {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}
            )
        return out

    def check_schema(self, where: str, parameters: dict[str, Any]) -> None:
        from mistral_common.utils.json_utils import validate_json_schema_by_draft7

        try:
            validate_json_schema_by_draft7(value=parameters)
        except Exception as error:  # jsonschema's SchemaError (as ValueError), or what it raises on odd data
            raise ConversationError(
                where, f"parameters is not a valid JSON schema (draft 7): {error}", "Fix the schema."
            ) from None

    # -- the conversation (MistralRequestValidator.validate_messages) --

    def check_structure(self, messages: list[_Message]) -> None:
        if not messages:
            raise ConversationError(
                "", "The conversation has no messages.", "Start it with a user (or system) message."
            )
        if len(messages) == 1 and messages[0].role not in ("user", "system"):
            raise self.fail(
                messages[0],
                "a conversation of one message must be a user or system message.",
                "Start with a user message.",
            )
        if self.mode == ValidationMode.finetuning or len(messages) > 1:
            self.check_last(messages[-1])
        for previous, message in zip(messages, messages[1:], strict=False):
            if message.role not in _NEXT_ROLES[previous.role]:
                article = "an" if previous.role == "assistant" else "a"
                raise self.fail(
                    message,
                    f"a {message.role} message cannot follow {article} {previous.role} message (what may follow "
                    f"it: {', '.join(_NEXT_ROLES[previous.role])}).",
                    self.order_fix(message.role),
                )
        self.check_tool_results(messages)

    def order_fix(self, role: str) -> str:
        return _ORDER_FIXES[role]

    def check_last(self, last: _Message) -> None:
        if self.mode == ValidationMode.agnostic:
            return
        if self.mode == ValidationMode.finetuning:
            if last.role != "assistant":
                raise self.fail(
                    last,
                    "a fine-tuning sample (validation mode 'finetuning') ends with an assistant message.",
                    "End it with the assistant's answer, or validate it as a prompt (mode 'test').",
                )
            if last.prefix:
                raise self.fail(
                    last, "a fine-tuning sample cannot continue its last message.", "Drop continue_final_message."
                )
        elif last.role == "assistant" and not last.prefix:
            raise self.fail(
                last,
                f"a prompt (validation mode '{self.mode.value}') ends with a user or tool message, or with an "
                "assistant message to continue.",
                "Drop add_generation_prompt to render a fine-tuning sample, or pass continue_final_message=True to "
                "continue the assistant's message.",
            )

    def check_tool_results(self, messages: list[_Message]) -> None:
        expected = 0
        for message in messages[1:]:  # mistral-common does not count the first message
            if message.role == "tool":
                expected -= 1
            elif message.role == "assistant":
                if expected != 0:
                    raise self.fail(
                        message,
                        "the tool calls before it and the tool results that follow them differ in number.",
                        "Give each tool call exactly one tool message, before the next assistant message.",
                    )
                if message.calls is not None:
                    expected = len(message.calls)
        if expected != 0 and self.mode == ValidationMode.serving:
            raise ConversationError(
                "",
                "The tool calls and tool results differ in number (validation mode 'serving').",
                "Answer every call.",
            )
        if expected < 0 and self.mode == ValidationMode.finetuning:
            raise ConversationError(
                "", "There are more tool results than tool calls.", "Remove the tool messages that answer no call."
            )

    def check_message(self, message: _Message, is_last: bool) -> None:
        if message.role == "tool":
            self.check_tool_message_id(message)
        if message.role != "assistant":
            return
        if not self.content_and_calls and message.truthy == bool(message.calls):
            has = "both content and tool_calls" if message.truthy else "neither content nor tool_calls"
            raise self.fail(
                message,
                f"an assistant message has {has}.",
                "Give it either its text or its tool calls (an empty answer cannot be trained on or continued).",
            )
        for number, call in enumerate(message.calls or []):
            self.check_call(message, number, call, is_last)

    def check_call(self, message: _Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        if not _NAME_RE.match(call["name"]):
            raise self.fail(
                message,
                f"tool_calls[{number}] names the function {_describe(call['name'])}, which is not 1-64 letters, "
                "digits, '_' or '-'.",
                "Use the name of a function in tools.",
            )

    # -- what normalization and encoding reject (InstructRequestNormalizer, InstructTokenizerV1) --

    def refuse_tools(self, where: str, index: int | None = None) -> Exception:
        """The error for tools, tool calls or tool messages in a format without tool calling."""
        return ConversationError(
            where,
            f"{self.template} ({self.models}) has no tool calling: the model was not trained with tools.",
            "Use a v3 model and tokenizer (the mistral_v3 template) for tools, tool calls and tool results.",
            index,
        )

    def check_runs(self, messages: list[_Message]) -> None:
        for run in _runs(messages):
            if run[0].role == "assistant" and not any(m.text for m in run):
                raise self.fail(run[0], "the assistant's text is empty.", "Give the assistant message its answer.")

    def validate(self, messages: list[_Message], tools: list[dict[str, Any]]) -> None:
        if self.check_order:
            self.check_structure(messages)
        for message in messages:
            self.check_message(message, message is messages[-1])
        if not self.tool_calling:
            if tools:
                raise self.refuse_tools("tools")
            for message in messages:
                if message.role == "tool" or message.calls:
                    raise self.refuse_tools(self.where(message), message.index)
        self.check_runs(messages)

    # -- what the template gets --

    def output(self, message: _Message) -> dict[str, Any]:
        if message.role == "tool":
            text = message.text
            return {
                "role": "tool",
                "tool_call_id": message.call_id,
                "content": text,
                "content_json": self.normalized_json(message, "the tool result", text),
            }
        out: dict[str, Any] = {"role": message.role}
        if message.role == "system" and message.truthy and not message.text:
            out["content"] = [{"type": "text", "text": ""}]  # counts in the system prompt, as in mistral-common
        elif message.role != "system" or message.truthy:
            out["content"] = message.text
        else:
            out["content"] = ""
        if message.calls:
            out["tool_calls"] = [
                {
                    **({"id": call["id"]} if call["id"] and call["id"] != _NULL_ID else {}),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in message.calls
            ]
        if message.prefix:
            out["prefix"] = True
        return out


class _RulesV2(_Rules):
    """Tokenizer v2: same validation as v1 (mistral-common's base validator); the kit renders it with the v3 template
    and has no v2 tool format."""

    template = "mistral_v3"
    version = "v2"

    def refuse_tools(self, where: str, index: int | None = None) -> Exception:
        return NotImplementedError(
            "Tokenizer v2 writes tool calls and results differently from v3 and the kit has no v2 tool template; "
            "encode this conversation with mistral_common's MistralTokenizer.encode_chat_completion."
        )


class _RulesV3(_RulesV2):
    """Tokenizer v3 (`MistralRequestValidatorV3`, `InstructTokenizerV3`): tool calling with 9-character ids."""

    version = "v3"
    tool_calling = True

    def check_tool_message_id(self, message: _Message) -> None:
        if message.call_id is None:
            raise self.fail(message, "tool_call_id is None.", "Give it the id of the tool call it answers.")
        if not _CALL_ID_RE.match(message.call_id):
            raise self.fail(
                message,
                f"tool_call_id {_describe(message.call_id)} is not 9 letters or digits, as Mistral's "
                f"{self.version} format requires.",
                "Use 9-character alphanumeric ids (e.g. uuid4().hex[:9]), the same in the call and its result.",
            )

    def check_call(self, message: _Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        call_id = call["id"]
        if call_id == _NULL_ID:
            allowed = self.mode in (ValidationMode.finetuning, ValidationMode.agnostic) and is_last
            if not allowed:
                raise self.fail(
                    message,
                    f"tool_calls[{number}] has no id; only the final message of a fine-tuning sample may omit it.",
                    "Give the call a 9-character alphanumeric id (e.g. uuid4().hex[:9]).",
                )
        elif not _CALL_ID_RE.match(call_id):
            raise self.fail(
                message,
                f"tool_calls[{number}] has id {_describe(call_id)}, not 9 letters or digits as Mistral's "
                f"{self.version} format requires.",
                "Use 9-character alphanumeric ids (e.g. uuid4().hex[:9]), the same in the call and its result.",
            )
        super().check_call(message, number, call, is_last)

    def check_runs(self, messages: list[_Message]) -> None:
        for run in _runs(messages):
            if run[0].role != "assistant":
                continue
            text, calls = any(m.text for m in run), any(m.calls for m in run)
            if text and calls:
                raise self.fail(
                    run[0],
                    "consecutive assistant messages are merged, and this run has both text and tool calls.",
                    "Put the text and the tool calls into separate turns.",
                )
            if not text and not calls:
                raise self.fail(run[0], "the assistant's text is empty.", "Give the assistant message its answer.")


class _RulesV7(_RulesV3):
    """Tokenizer v7 (`MistralRequestValidatorV5`, `InstructRequestNormalizerV7`, `InstructTokenizerV7`): every system
    message is its own [SYSTEM_PROMPT] block where it stands, an assistant message may have both text and tool calls,
    tool results are written as they are (no JSON normalization) after their call id, and no empty user turn is
    inserted."""

    template = "mistral_v7"
    version = "v7"
    models = "Mistral-Large-2411, Mistral-Small-24B-2501/2503: tokenizer v7"
    content_and_calls = True

    def order_fix(self, role: str) -> str:
        if role == "system":
            return "Move the system message after a user message or before the turn it belongs to."
        return super().order_fix(role)

    def check_runs(self, messages: list[_Message]) -> None:
        for run in _runs(messages):
            if run[0].role != "assistant":
                continue
            if not any(m.text or m.thinks for m in run) and not any(m.calls for m in run):
                raise self.fail(
                    run[0], "the assistant's turn has neither text nor tool calls.", "Give the assistant its answer."
                )

    def output(self, message: _Message) -> dict[str, Any]:
        if message.role == "tool":
            return {"role": "tool", "tool_call_id": message.call_id, "content": message.text}
        out = super().output(message)
        if message.role in ("system", "assistant") and message.thinks:
            out["content"] = message.content
        elif message.role == "system":
            out["content"] = message.text  # every system message is written, empty or not
        return out


class _RulesV11(_RulesV7):
    """Tokenizer v11 (`MistralRequestValidatorV11`, `InstructRequestNormalizerV13`, `InstructTokenizerV11`): tool
    results are matched to the calls by id (each call answered at most once, no unknown ids) and written in the order
    of the calls; calls are written one by one, `[TOOL_CALLS]name[CALL_ID]id[ARGS]arguments`."""

    template = "mistral_tekken_v11"
    version = "v11"
    models = "Mistral-Small-3.2-24B-Instruct-2506: tokenizer v11"

    def check_tool_results(self, messages: list[_Message]) -> None:
        expected: set[str] = set()
        observed: set[str] = set()
        for message in messages[1:]:  # mistral-common does not look at the first message
            if message.role == "tool":
                if message.call_id in observed:
                    raise self.fail(
                        message,
                        f"a second tool result for the call id {_describe(message.call_id)}.",
                        "Answer each tool call once.",
                    )
                if message.call_id not in expected:
                    raise self.fail(
                        message,
                        f"tool_call_id {_describe(message.call_id)} is not the id of a call of the assistant message "
                        "before it.",
                        "Use the id of the tool call this result answers.",
                    )
                observed.add(message.call_id)
            elif message.role == "assistant":
                if len(expected) != len(observed):
                    raise self.fail(
                        message,
                        "the tool calls before it are not all answered by tool messages.",
                        "Give each tool call exactly one tool message, before the next assistant message.",
                    )
                expected, observed = set(), set()
                for call in message.calls or []:
                    if call["id"] in expected:
                        raise self.fail(
                            message,
                            f"two tool calls have the id {_describe(call['id'])}.",
                            "Give each call its own id.",
                        )
                    expected.add(call["id"])
        if len(expected) != len(observed) and self.mode == ValidationMode.serving:
            raise ConversationError(
                "",
                "The tool calls and tool results differ in number (validation mode 'serving').",
                "Answer every call.",
            )


class _RulesV13(_RulesV11):
    """Tokenizer v13 (`MistralRequestValidatorV13`, `InstructTokenizerV13`): call ids are any non-empty strings and are
    not written (`[TOOL_CALLS]name[ARGS]arguments`, `[TOOL_RESULTS]content[/TOOL_RESULTS]`), tools are listed before
    the FIRST user turn, and assistant and system messages may hold thinking chunks ([THINK] ... [/THINK])."""

    template = "mistral_tekken_v13"
    version = "v13"
    models = "Magistral-Small-2507/2509, Devstral-Small-2507: tokenizer v13"
    thinking = True

    def __init__(self, mode: ValidationMode, template: str | None = None, thinking_tokens: bool = True):
        super().__init__(mode, template)
        self.thinking = thinking_tokens

    def read_reasoning(self, message: _Message, raw: dict) -> None:
        if not self.thinking and any(raw.get(field) is not None for field in ("reasoning_content", "reasoning")):
            raise self.fail(
                message,
                "thinking is set, but this tokenizer has no [THINK] and [/THINK] tokens (mistral-common rejects it).",
                "Use the model's own tekken.json, or put the text into the content.",
            )
        super().read_reasoning(message, raw)

    def check_tool_message_id(self, message: _Message) -> None:
        if not message.call_id or message.call_id == _NULL_ID:
            raise self.fail(
                message,
                f"tool_call_id is {_describe(message.call_id)}; tokenizer v13 needs the id of the call it answers.",
                "Give it the id of the tool call it answers.",
            )

    def check_call(self, message: _Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        if not call["id"] or call["id"] == _NULL_ID:
            raise self.fail(
                message,
                f"tool_calls[{number}] has no id; tokenizer v13 needs one (any non-empty string but 'null').",
                "Give the call an id, the same in the call and its result.",
            )
        _Rules.check_call(self, message, number, call, is_last)


class _RulesChatML(_Rules):
    """ChatML (Mistral-7B-OpenOrca): v1's message shapes, no rules on message order (mistral-common has no ChatML)."""

    template = "chatml"
    version = "chatml"
    models = "Mistral-7B-OpenOrca and other ChatML fine-tunes"
    check_order = False

    def check_runs(self, messages: list[_Message]) -> None:
        return

    def check_message(self, message: _Message, is_last: bool) -> None:
        return

    def output(self, message: _Message) -> dict[str, Any]:
        out = {"role": message.role, "content": message.content}
        if message.prefix:
            out["prefix"] = True
        return out


_RULES = {
    "v1": _Rules,
    "v2": _RulesV2,
    "v3": _RulesV3,
    "v7": _RulesV7,
    "v11": _RulesV11,
    "v13": _RulesV13,
    "chatml": _RulesChatML,
}


def _runs(messages: list[_Message]) -> list[list[_Message]]:
    """Consecutive messages of one role, as mistral-common merges them (a system message splits a run; tool
    messages are never merged)."""
    runs: list[list[_Message]] = []
    for message in messages:
        if runs and runs[-1][0].role == message.role and message.role != "tool":
            runs[-1].append(message)
        else:
            runs.append([message])
    return runs


def _thinks(content: Any) -> bool:
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


def _mode(mode: Any, messages: list[Any], continue_final_message: bool, add_generation_prompt: bool):
    if mode is not None:
        try:
            return ValidationMode(getattr(mode, "value", mode))
        except ValueError:
            names = ", ".join(m.value for m in ValidationMode)
            raise ConversationError("", f"Unknown validation mode {mode!r}.", f"Use one of {names}.") from None
    last = messages[-1] if messages else None
    ends_with_answer = isinstance(last, dict) and last.get("role") == "assistant"
    if ends_with_answer and not continue_final_message and not add_generation_prompt:
        return ValidationMode.finetuning
    return ValidationMode.test


def prepare_chat(
    conversation: Any,
    tools: Any = None,
    documents: Any = None,
    *,
    template: str | None,
    version: str | None = None,
    mode: ValidationMode | str | None = None,
    continue_final_message: bool = False,
    add_generation_prompt: bool = False,
    thinking_tokens: bool = True,
) -> PreparedChat:
    """Plain, validated data for rendering one conversation with a kit template (see the module docstring).

    `template` is the kit template's name (`TEMPLATE_VERSIONS`: "mistral_v1", "mistral_v3", "mistral_v7",
    "mistral_tekken_v3" ... "chatml") or None for any other template, whose data is only made plain (with transformers'
    "<TypeName>" placeholders; keys whose value is None dropped from messages, as transformers does). `version` is the
    tokenizer's ("v2" selects v2's rules for mistral_v3). `thinking_tokens` says whether the tokenizer has [THINK] and
    [/THINK] (tokenizer v13 renders thinking only then, as mistral-common). Raises `ConversationError` for a
    conversation mistral-common rejects.
    """
    placeholders = template is None
    messages = getattr(conversation, "messages", conversation)
    if isinstance(messages, tuple):
        messages = list(messages)
    if not isinstance(messages, list):
        raise ConversationError(
            "", f"The conversation is {_describe(messages)}.", "Pass a list of messages (dicts with role and content)."
        )
    messages = to_plain(messages, placeholders)
    plain_tools = _plain_tools(tools, placeholders)
    plain_documents = to_plain(documents, placeholders)
    if template is None:
        messages = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]
        return PreparedChat(messages, plain_tools, plain_documents)

    rule_set = TEMPLATE_VERSIONS.get(template)
    if rule_set is None:
        raise ValueError(f"Unknown kit template {template!r}; expected one of {sorted(TEMPLATE_VERSIONS)}.")
    if rule_set == "v3" and version == "v2":
        rule_set = "v2"
    validation_mode = _mode(mode, messages, continue_final_message, add_generation_prompt)
    if rule_set == "v13":
        rules = _RulesV13(validation_mode, template, thinking_tokens=thinking_tokens)
    else:
        rules = _RULES[rule_set](validation_mode, template)
    if plain_documents:
        raise ConversationError(
            "documents",
            f"{template} has no format for documents (mistral-common neither), so they would be left out.",
            "Put the documents' text into a system or user message.",
        )
    read = [rules.read(index, message) for index, message in enumerate(messages)]
    if continue_final_message:
        if not read or read[-1].role != "assistant":
            raise ConversationError(
                "",
                "continue_final_message=True continues the last message, which must be the assistant's.",
                "End the conversation with the assistant message to continue, or drop continue_final_message.",
            )
        read[-1].prefix = True
    checked_tools = rules.read_tools(plain_tools or [])
    rules.validate(read, checked_tools)
    return PreparedChat([rules.output(m) for m in read], checked_tools or None, None)
