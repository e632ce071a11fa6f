"""`hf-mistral-kit chat`: multi-turn chat with streamed replies, interactive in a terminal, line by line otherwise.

Every reply is read back with `parse_response` into an assistant message: the history keeps that message (so the
next prompt renders the reply as the model wrote it), --jsonl prints its fields, and the text modes show its tool
calls as `[tool call] name(key=value, ...)` lines and its thinking between `[thinking]` and `[/thinking]`, never the
raw control tokens.
"""

from __future__ import annotations

import argparse
import json
import re
import stat
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .common import PROG, CLIError, ExitCode, check_tools, checked_text, decode, existing_path, json_values, read_text
from .models import check_weights, checkpoint_dir, loading_errors, model_config, model_shape, resolve

if TYPE_CHECKING:
    from .streaming import Reply

_SURROGATE = re.compile("[\ud800-\udfff]")  # what input() makes of bytes that are not UTF-8
NOT_UTF8 = "(that line is not valid UTF-8 text; type it again)"
COMMANDS = "/reset clears the history, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply"
THINKING = ("[thinking] ", " [/thinking]\n")  # what shows in place of [THINK] and [/THINK]


class Session:
    """The conversation so far (without the system prompt) and how to extend it by one streamed reply."""

    def __init__(self, model: Any, tokenizer: Any, args: argparse.Namespace, tools: list[Any] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.system = args.system
        self.max_new_tokens = args.max_new_tokens
        self.temperature = args.temperature
        self.tools = tools
        # More variables for the template: the model settings of tokenizer v15.
        effort = getattr(args, "reasoning_effort", None)
        self.template_kwargs: dict[str, Any] = {"reasoning_effort": effort} if effort is not None else {}
        self.history: list[dict[str, Any]] = []
        self.reads_replies = _reply_format(tokenizer) is not None
        self.marks = reply_marks(tokenizer)
        self.made_up_ids = 0

    def messages(self) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def reset(self) -> None:
        self.history.clear()

    def reply(self, text: str, write: Callable[[str], Any]) -> tuple[Reply, dict[str, Any]]:
        """Stream the reply to `text` and read it back: (the reply, its assistant message). The text is streamed up
        to a tool call; the calls (and a call that is not well formed, as text) are written once the reply is read.
        The exchange joins the history (unless it failed or came back empty)."""
        from .streaming import stream_reply

        self.history.append({"role": "user", "content": text})
        try:
            reply = stream_reply(
                self.model,
                self.tokenizer,
                self.messages(),
                write,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                tools=self.tools,
                marks=self.marks,
                template_kwargs=self.template_kwargs,
            )
        except BaseException:
            self.history.pop()
            raise
        # An interrupted reply is what the user saw of it.
        message = self.read(reply, reply.shown if reply.interrupted else len(reply.ids))
        write(self.unshown(reply, message))
        kept = self.kept(message)
        if kept is not None:
            self.history.append(kept)
        else:  # the templates need a non-empty assistant turn: forget an empty exchange rather than break the next one
            self.history.pop()
        return reply, message

    def read(self, reply: Reply, end: int) -> dict[str, Any]:
        """The assistant message of the reply's first `end` ids."""
        if not self.reads_replies:  # a template of no known Mistral format: the reply is its text
            return {"role": "assistant", "content": reply.text or None}
        from ..tokenizers.replies import parse_response

        return parse_response(self.tokenizer, list(reply.ids[:end]), list(reply.prompt_ids), tools=self.tools)

    def unshown(self, reply: Reply, message: dict[str, Any]) -> str:
        """What the stream left out of `message`: the text of a [TOOL_CALLS] that is not a well-formed call (content
        as the parser reads it), then one line per tool call."""
        if reply.held is None:
            return ""
        before = self.read(reply, reply.held).get("content") or ""
        content = message.get("content") or ""
        out = content[len(before) :] if content.startswith(before) else ""
        for call in message.get("tool_calls") or []:
            if (reply.text + out) and not (reply.text + out).endswith("\n"):
                out += "\n"
            out += tool_call_line(call)
        return out

    def kept(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The assistant message the history keeps: `message` as parsed, which the next prompt renders as the model
        wrote it. When the template refuses it (a call without the id the version needs, text next to calls where
        the version allows either), the nearest message it takes; None for an empty reply."""
        calls = message.get("tool_calls") or []
        content = message.get("content") or ""
        if not content.strip() and not calls and not message.get("reasoning_content"):
            return None
        candidates = [message]
        if calls:
            with_ids = {**message, "tool_calls": [call if call.get("id") else self._with_id(call) for call in calls]}
            candidates += [with_ids, {**with_ids, "content": None}] if content else [with_ids]
        if content.strip():
            candidates.append({"role": "assistant", "content": content})
        return next((candidate for candidate in candidates if self._renders(candidate)), None)

    def _with_id(self, call: dict[str, Any]) -> dict[str, Any]:
        """`call` with an id the templates take (nine letters and digits), made up: the model wrote none."""
        self.made_up_ids += 1
        return {"id": f"call{self.made_up_ids:05d}", **call}

    def _renders(self, message: dict[str, Any]) -> bool:
        """Whether the template renders `message` as an assistant turn of the history, a user turn after it."""
        from jinja2.exceptions import TemplateError

        try:
            conversation = [*self.messages(), message, {"role": "user", "content": "."}]
            self.tokenizer.apply_chat_template(conversation, tools=self.tools, tokenize=False, **self.template_kwargs)
        except (TemplateError, ValueError, NotImplementedError):
            return False
        return True


def _reply_format(tokenizer: Any) -> Any:
    """The reply format of the tokenizer (`hf_mistral_kit.chat.templates.reply_format_of`), None when it has none."""
    from ..chat.templates import reply_format_of

    return reply_format_of(tokenizer)


def reply_marks(tokenizer: Any) -> dict[int, str | None]:
    """The streamer's marks (`stream_reply`) for a reply's control tokens, so that the streamed text is the content
    `parse_response` reads: the format's own control tokens spelled out, except the end of the reply (nothing),
    [THINK] and [/THINK] (THINKING) and [TOOL_CALLS] (the end of the streamed text); any other control token left
    out. {} for a template of no known format (control tokens are left out of the text)."""
    from ..versions import THINK_TOKENS, TOOL_CALLS

    fmt = _reply_format(tokenizer)
    if fmt is None:
        return {}
    from ..tokenizers.replies import control_tokens

    spelled = {token: i for i, token in control_tokens(tokenizer).items()}
    # the format's own control tokens spelled out, the others left out (as parse_response reads them)
    structure = {*fmt.controls(), *fmt.anchor_controls}
    marks: dict[str, str | None] = {token: token if token in structure else "" for token in spelled}
    marks.update(dict.fromkeys(fmt.ends, ""))
    if fmt.thinking:
        marks.update(zip(THINK_TOKENS, THINKING, strict=True))
    if fmt.tool_calls:
        marks[TOOL_CALLS] = None
    return {spelled[token]: mark for token, mark in marks.items() if token in spelled}


def tool_call_line(call: dict[str, Any]) -> str:
    """One tool call as one line: `[tool call] name(key=JSON value, ...)` (a name or key that is not a Python
    identifier is shown as a JSON string; JSON keeps line breaks in values escaped)."""
    function = call.get("function") or {}

    def name(value: Any) -> str:
        return value if isinstance(value, str) and value.isidentifier() else json.dumps(value, ensure_ascii=False)

    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        shown = ", ".join(f"{name(key)}={json.dumps(value, ensure_ascii=False)}" for key, value in arguments.items())
    else:
        shown = json.dumps(arguments, ensure_ascii=False)
    return f"[tool call] {name(function.get('name'))}({shown})"


def reply_line(reply: Reply, message: dict[str, Any]) -> dict[str, Any]:
    """The --jsonl output of a reply: the message's role and content, its reasoning_content and tool_calls when the
    model wrote them, and the token counts."""
    line: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    for key in ("reasoning_content", "tool_calls"):
        if key in message:
            line[key] = message[key]
    line["usage"] = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.new_tokens}
    return line


def read_tools(value: str) -> list[Any]:
    """The tools of --tools FILE: a JSON list of tool schemas ({"type": "function", "function": {...}}, or the bare
    function objects), or a Python file whose public top-level functions are the tools (transformers makes their
    schemas from their type hints and Google-style docstrings)."""
    if value.endswith(".py"):
        return _python_tools(value)
    name = f"--tools {value}"
    text = read_text(str(existing_path(value, "--tools file")))
    values = json_values(text, name) if text.strip() else []
    if len(values) != 1 or not isinstance(values[0][1], list):
        raise CLIError(f'{name}: expected one JSON list of tool schemas ([{{"type": "function", "function": ...}}]).')
    tools = values[0][1]
    check_tools(tools, name)
    if not tools:
        raise CLIError(f"{name} lists no tools.")
    return [tool if "function" in tool else {"type": "function", "function": tool} for tool in tools]


def _python_tools(value: str) -> list[Any]:
    """The public functions defined in a Python file (its `__all__`, else every name not starting with "_")."""
    import importlib.util
    import inspect

    path = existing_path(value, "--tools file")
    if not stat.S_ISREG(path.stat().st_mode):
        raise CLIError(f"--tools {value} is not a regular file; expected a JSON or Python (.py) file.")
    module_name = "_hf_mistral_kit_tools_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and typing look the module up
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # its own imports, as when it runs as a script
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        sys.modules.pop(module_name, None)
        where = f" at line {error.lineno}" if isinstance(error, SyntaxError) and error.lineno else ""
        message = error.msg if isinstance(error, SyntaxError) else (str(error).splitlines() or [""])[0]
        raise CLIError(
            f"--tools {value}: running it raised {type(error).__name__}{where}" + (f": {message}" if message else "")
        ) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    tools = [
        function
        for function in (getattr(module, name, None) for name in names)
        if inspect.isfunction(function) and function.__module__ == module_name
    ]
    if not tools:
        raise CLIError(
            f"--tools {value} defines no public function (def name(...) at the top level) to offer as a tool."
        )
    from transformers.utils import get_json_schema

    for function in tools:
        try:
            get_json_schema(function)
        except Exception as error:  # transformers' DocstringParsingException, TypeHintParsingException
            raise CLIError(
                f"--tools {value}: function {function.__name__} cannot be a tool: {str(error).splitlines()[0]} "
                f"Fix: give {function.__name__} type hints and a Google-style docstring (a description, then Args: "
                f"with a line per argument), or name it _{function.__name__} to keep it out of the tools."
            ) from None
    return tools


def _check_tools_template(session: Session, value: str) -> None:
    """The template takes the tools (a template without tool calling refuses them before the first message)."""
    from jinja2.exceptions import TemplateError

    from ..chat.errors import ConversationError

    try:
        conversation = [*session.messages(), {"role": "user", "content": "."}]
        session.tokenizer.apply_chat_template(
            conversation, tools=session.tools, add_generation_prompt=True, tokenize=False, **session.template_kwargs
        )
    except (TemplateError, ValueError, NotImplementedError) as error:
        if isinstance(error, ConversationError) and error.where == "tools":
            error = f"{error.rule} Fix: {error.fix}"  # not "--tools FILE: tools: ..."
        raise CLIError(f"--tools {value}: {str(error).splitlines()[0]}") from None


def _check_template_kwargs(session: Session) -> None:
    """The template takes `--reasoning-effort` (tokenizer v15, one of the file's values), before the first message."""
    from jinja2.exceptions import TemplateError

    try:
        session.tokenizer.apply_chat_template(
            [{"role": "user", "content": "."}], add_generation_prompt=True, tokenize=False, **session.template_kwargs
        )
    except (TemplateError, ValueError, NotImplementedError) as error:
        effort = session.template_kwargs["reasoning_effort"]
        raise CLIError(f"--reasoning-effort {effort}: {str(error).splitlines()[0]}") from None


def run(args: argparse.Namespace) -> int:
    if args.system is not None:
        checked_text(args.system, "--system")
    tools = read_tools(args.tools) if args.tools is not None else None
    model, tokenizer = _load(args)
    session = Session(model, tokenizer, args, tools)
    if session.template_kwargs:
        _check_template_kwargs(session)
    if tools is not None:
        _check_tools_template(session, args.tools)
    if args.seed is not None:
        import torch

        # Sampling draws from torch's generators only; `manual_seed` seeds them on every device. (transformers.set_seed
        # also seeds `random` and numpy, and its module imports peft and so bitsandbytes: seconds, and their warnings.)
        torch.manual_seed(args.seed)
    if args.jsonl or not sys.stdin.isatty():
        return _lines(session, sys.stdin, sys.stdout, jsonl=args.jsonl)
    return _interactive(session, args)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    source = checkpoint_dir(args.model)
    shape = model_shape(model_config(source), args.model)
    from ..chat.templates import apply_chat_template
    from ..loading import load_model
    from ..planning.hardware import Hardware
    from ..planning.memory import default_context_length

    resolve(args.preset, shape, Hardware.detect(), context_length=default_context_length(shape))
    check_weights(source)
    with loading_errors(source):
        model, tokenizer = load_model(source, preset=args.preset)
    if args.template:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the resize it asks for is done right below
            apply_chat_template(tokenizer, args.template)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            print(
                f"note: {args.template} added tokens the model has never seen; their embeddings are random.",
                file=sys.stderr,
            )
            model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def _lines(session: Session, stdin: Any, stdout: TextIO, *, jsonl: bool) -> int:
    """One reply per input line; /reset and /exit work here too. With --jsonl every input line gets exactly one
    output line: the reply, {"event": "reset" | "exit" | "empty"} for commands and blank lines, or
    {"event": "error", "line": N, "message": ...} for a line that cannot be answered (not JSON, not a user message,
    not UTF-8, a conversation the template refuses); without it such a line's error goes to stderr. Either way the
    lines after it are answered, and the exit code is 2 when a line failed."""

    def write(text: str) -> None:
        if not jsonl:
            stdout.write(text)
            stdout.flush()

    def answer(data: dict[str, Any]) -> None:
        if jsonl:
            stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
            stdout.flush()

    refused, failed = _refused(), []
    for number, line in _input_lines(stdin):
        try:
            text = _user_text(line, number) if jsonl else line_text(line, number).rstrip("\n")
            if text is None or not text.strip():
                answer({"event": "empty"})
                continue
            if text.strip() == "/exit":
                answer({"event": "exit"})
                break
            if text.strip() == "/reset":
                session.reset()
                answer({"event": "reset"})
                continue
            checked_text(text, f"stdin line {number}")
            reply, message = session.reply(text, write)
        except (CLIError, *refused) as error:
            failed.append(number)
            why = str(error) if isinstance(error, CLIError) else f"stdin line {number}: {error}"
            if jsonl:
                answer({"event": "error", "line": number, "message": why})
            else:
                print(f"{PROG} chat: error: {why}", file=sys.stderr, flush=True)
            continue
        if jsonl:
            answer(reply_line(reply, message))
        else:
            stdout.write("\n")
            stdout.flush()
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        if len(failed) == 1:
            summary, why = f"1 input line got no reply (line {shown})", "its error line says why"
        else:
            summary, why = f"{len(failed)} input lines got no reply (lines {shown})", "their error lines say why"
        raise CLIError(f"{summary}: {why if jsonl else 'see the errors above'}.")
    return ExitCode.OK


def _refused() -> tuple[type[Exception], ...]:
    """What a conversation the kit refuses raises (too long, unrenderable, a pattern the tokenizer cannot run)."""
    from ..chat.errors import ConversationError
    from ..tokenizers.errors import TokenizerFileError

    return ConversationError, TokenizerFileError


def _input_lines(stdin: Any) -> Iterator[tuple[int, str | bytes]]:
    """(number, line) of stdin: bytes where stdin has them, decoded one line at a time (`line_text`), so that a line
    that is not UTF-8 is an error naming it and the lines after it are still read."""
    stream = getattr(stdin, "buffer", None)
    yield from enumerate(stdin if stream is None else stream, start=1)  # a text stream: tests, embedding applications


def line_text(line: str | bytes, number: int) -> str:
    """An input line as text; a CLIError naming the line when it is not UTF-8."""
    return line if isinstance(line, str) else decode(line, f"stdin line {number}")


def _user_text(line: str | bytes, number: int) -> str | None:
    """The user message of one JSONL line: {"role": "user", "content": "..."} (role optional) or a JSON string."""
    line = line_text(line, number)
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise CLIError(f"stdin line {number}: invalid JSON at column {error.colno}: {error.msg}.") from None
    except (RecursionError, ValueError) as error:
        raise CLIError(f"stdin line {number}: unreadable JSON ({type(error).__name__}).") from None
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("content"), str):
        raise CLIError(f'stdin line {number}: expected {{"role": "user", "content": "..."}} or a JSON string.')
    if value.get("role", "user") != "user":
        raise CLIError(f"stdin line {number}: role {value['role']!r}; chat input lines are user messages.")
    return value["content"]


def _interactive(session: Session, args: argparse.Namespace) -> int:
    import contextlib

    from ..chat.replies import tool_names
    from .streaming import template_name

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())

    name = getattr(session.model, "name_or_path", args.model)
    tools = f", tools {', '.join(tool_names(session.tools))}" if session.tools else ""
    print(f"Chatting with {name} (template {template_name(session.tokenizer)}{tools}). {COMMANDS}.", flush=True)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print()
            return ExitCode.OK
        except KeyboardInterrupt:
            print("\n(type /exit or press Ctrl-D to leave)", flush=True)
            continue
        except UnicodeDecodeError:
            print(NOT_UTF8, flush=True)
            continue
        command = line.strip()
        if not command:
            continue
        if _SURROGATE.search(line):
            print(NOT_UTF8, flush=True)
            continue
        if command == "/exit":
            return ExitCode.OK
        if command == "/reset":
            session.reset()
            print("(history cleared)", flush=True)
            continue
        if command.startswith("/") and " " not in command:
            print(f"(unknown command {command}: {COMMANDS})", flush=True)
            continue
        try:
            reply, _ = session.reply(line, write)
        except KeyboardInterrupt:  # before the first token (or a second Ctrl-C): nothing is kept of this turn
            print("\n[interrupted]", flush=True)
            continue
        except _refused() as error:  # e.g. a paste longer than a conversation may be: say why, keep chatting
            print(f"(not sent: {error})", flush=True)
            continue
        print(flush=True)
        if reply.interrupted:
            print("[interrupted]", flush=True)
