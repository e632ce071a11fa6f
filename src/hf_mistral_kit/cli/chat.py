"""`hf-mistral-kit chat`: multi-turn chat with streamed replies, interactive in a terminal, line by line otherwise."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .common import CLIError, ExitCode, checked_text, decode
from .models import check_weights, checkpoint_dir, loading_errors, model_config, model_shape, resolve

if TYPE_CHECKING:
    from .streaming import Reply

_SURROGATE = re.compile("[\ud800-\udfff]")  # what input() makes of bytes that are not UTF-8
NOT_UTF8 = "(that line is not valid UTF-8 text; type it again)"
COMMANDS = "/reset clears the history, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply"


class Session:
    """The conversation so far (without the system prompt) and how to extend it by one streamed reply."""

    def __init__(self, model: Any, tokenizer: Any, args: argparse.Namespace):
        self.model, self.tokenizer = model, tokenizer
        self.system = args.system
        self.max_new_tokens = args.max_new_tokens
        self.temperature = args.temperature
        self.history: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def reset(self) -> None:
        self.history.clear()

    def reply(self, text: str, write: Callable[[str], Any]) -> Reply:
        """Stream the reply to `text`; the exchange joins the history (unless it failed or came back empty)."""
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
            )
        except BaseException:
            self.history.pop()
            raise
        if reply.text.strip():
            self.history.append({"role": "assistant", "content": reply.text})
        else:  # the templates need a non-empty assistant turn: forget an empty exchange rather than break the next one
            self.history.pop()
        return reply


def run(args: argparse.Namespace) -> int:
    if args.system is not None:
        checked_text(args.system, "--system")
    model, tokenizer = _load(args)
    session = Session(model, tokenizer, args)
    if args.seed is not None:
        from transformers import set_seed

        set_seed(args.seed)
    if args.jsonl or not sys.stdin.isatty():
        return _lines(session, sys.stdin, sys.stdout, jsonl=args.jsonl)
    return _interactive(session, args)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    source = checkpoint_dir(args.model)
    shape = model_shape(model_config(source), args.model)
    from ..chat.templates import apply_chat_template
    from ..loading import load_model
    from ..planning.hardware import Hardware

    resolve(args.preset, shape, Hardware.detect(), context_length=4096)
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
    output line: the reply, or {"event": "reset" | "exit" | "empty"} for commands and blank lines."""

    def write(text: str) -> None:
        if not jsonl:
            stdout.write(text)
            stdout.flush()

    def answer(data: dict[str, Any]) -> None:
        if jsonl:
            stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
            stdout.flush()

    for number, line in _input_lines(stdin):
        text = _user_text(line, number) if jsonl else line.rstrip("\n")
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
        reply = session.reply(text, write)
        if jsonl:
            usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.new_tokens}
            answer({"role": "assistant", "content": reply.text, "usage": usage})
        else:
            stdout.write("\n")
            stdout.flush()
    return ExitCode.OK


def _input_lines(stdin: Any) -> Iterator[tuple[int, str]]:
    """(number, line) of stdin, decoded line by line so that a line that is not UTF-8 is an error naming it."""
    stream = getattr(stdin, "buffer", None)
    if stream is None:  # a text stream (tests, embedding applications)
        yield from enumerate(stdin, start=1)
        return
    for number, raw in enumerate(stream, start=1):
        yield number, decode(raw, f"stdin line {number}")


def _user_text(line: str, number: int) -> str | None:
    """The user message of one JSONL line: {"role": "user", "content": "..."} (role optional) or a JSON string."""
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

    from .streaming import template_name

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())

    name = getattr(session.model, "name_or_path", args.model)
    print(f"Chatting with {name} (template {template_name(session.tokenizer)}). {COMMANDS}.", flush=True)

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
            reply = session.reply(line, write)
        except KeyboardInterrupt:  # before the first token (or a second Ctrl-C): nothing is kept of this turn
            print("\n[interrupted]", flush=True)
            continue
        print(flush=True)
        if reply.interrupted:
            print("[interrupted]", flush=True)
