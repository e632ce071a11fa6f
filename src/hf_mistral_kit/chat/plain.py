"""Input forms to plain data: everything transformers' `apply_chat_template` accepts, as dicts, lists and scalars.

Message objects (dataclasses, pydantic models such as the OpenAI SDK's), content parts given as objects,
`Conversation`-like objects with `.messages`, tuples, str/int/float subclasses (enums, numpy scalars), tools given
as Python functions (turned into JSON schemas by transformers' own `get_json_schema`, exactly as transformers does)
and documents become plain JSON-like data (dict, list, str, int, float, bool, None). Nesting depth is unlimited (no
recursion) and cycles are an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConversationError


class Opaque:
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
                parent[key] = f"<{type(source).__name__}>" if placeholders else Opaque(source)
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
    return f"<{type(key).__name__}>" if placeholders else Opaque(key)


def plain_tools(tools: Any, placeholders: bool) -> list[Any] | None:
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


class KeyClash(ValueError):
    """Two keys of one mapping that `map_strings`' function makes one (a value would be lost)."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"two keys become {key!r}")


def map_strings(value: Any, function: Callable[[str], str]) -> Any:
    """`value` with `function` applied to every string in it (dict keys included), without recursion: mappings come
    back as dicts, lists and tuples as lists, anything else as it is. Raises `KeyClash` when two keys of a mapping
    become one."""
    if isinstance(value, str):
        return function(value)
    if not isinstance(value, (Mapping, list, tuple)):
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (source, parent container, key in the parent)
    while stack:
        source, parent, key = stack.pop()
        if isinstance(source, str):
            parent[key] = function(source)
        elif isinstance(source, Mapping):
            mapped = parent[key] = {}
            for item_key, item in source.items():
                if isinstance(item_key, str):
                    item_key = function(item_key)
                if item_key in mapped:
                    raise KeyClash(item_key)
                mapped[item_key] = None
                stack.append((item, mapped, item_key))
        elif isinstance(source, (list, tuple)):
            mapped = parent[key] = [None] * len(source)
            stack.extend((item, mapped, index) for index, item in enumerate(source))
        else:
            parent[key] = source
    return root[0]


def describe(value: Any) -> str:
    """How error messages show a value: a short repr of a string, else its type."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, Opaque):
        return f"a {value.type_name}"
    return "None" if value is None else f"a {type(value).__name__}"
