"""`hf-mistral-kit render`: a conversation file to text or to ids and pieces, checked against mistral-common."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError

from ..chat.templates import get_chat_template, render
from ..versions import CHATML, template_format
from .common import DEFAULT_TEMPLATE, CLIError, ExitCode, existing_path, read_conversations

# ChatML is checked and tokenized like Mistral-7B-OpenOrca: tokenizer v1 with the two ChatML tokens added.
CHATML_TOKENIZER = "v1"


def template_tokenizer(template: str) -> str | None:
    """Which shipped tokenizer file (`reference_tokenizer_file`) a template is tokenized with when no --tokenizer
    is given: the newest version the template renders that mistral-common ships a file of (the tekken v7, v11 and
    v13 templates have none)."""
    if template == CHATML:
        return CHATML_TOKENIZER
    row = template_format(template)
    return row.key if row is not None and row.reference_file else None


# Mistral-7B-OpenOrca's ids for the ChatML tokens it added on top of the v1 vocabulary.
OPENORCA_ADDED_TOKENS = {"<|im_end|>": 32000, "<|im_start|>": 32001}


def run(args: argparse.Namespace) -> int:
    tokenizer, tokenizer_file = None, None
    if args.tokenizer:
        tokenizer, tokenizer_file = _user_tokenizer(args.tokenizer)
    elif args.tokens or args.check or args.json:
        tokenizer, tokenizer_file = _template_tokenizer(args.template or DEFAULT_TEMPLATE)
    options = {
        "add_generation_prompt": args.add_generation_prompt,
        "continue_final_message": args.continue_final_message,
    }
    if args.reasoning_effort is not None:
        options["reasoning_effort"] = args.reasoning_effort
    if args.continue_final_message and args.add_generation_prompt:
        raise CLIError("--continue-final-message and --add-generation-prompt exclude each other.")
    reference = _reference(tokenizer, tokenizer_file) if args.check else None
    conversations = read_conversations(args.file)

    for number, (messages, tools) in enumerate(conversations, start=1):
        where = f"conversation {number}" if len(conversations) > 1 else "the conversation"
        try:
            if tokenizer is None:
                text = render(messages, args.template or DEFAULT_TEMPLATE, tools=tools, **options)
                ids = None
            else:
                text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **options)
                encoded = tokenizer.apply_chat_template(messages, tools=tools, return_dict=True, **options)
                ids = list(encoded["input_ids"])
        except (TemplateError, ValueError) as error:
            raise CLIError(f"cannot render {where}: {error}") from None
        except RecursionError:
            raise CLIError(f"cannot render {where}: it is nested too deeply (Python's recursion limit).") from None
        if reference is not None:
            _check(ids, reference, tokenizer, messages, tools, args, where)
        if number > 1 and not args.json:
            print()  # a blank line between conversations
        if args.json:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            print(json.dumps({"text": text, "ids": ids, "pieces": pieces}, ensure_ascii=False))
        elif args.tokens:
            _print_tokens(ids, tokenizer.convert_ids_to_tokens(ids))
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if reference is not None:
        count = "1 conversation matches" if len(conversations) == 1 else f"{len(conversations)} conversations match"
        print(f"check: {count} mistral-common token for token ({tokenizer_file.name}).", file=sys.stderr)
    return ExitCode.OK


def _user_tokenizer(value: str) -> tuple[Any, Path | None]:
    from ..tokenizers.loading import find_mistral_tokenizer_file, load_tokenizer

    path = existing_path(value, "Tokenizer")
    if not path.is_dir() and not _is_tokenizer_file(path.name):
        raise CLIError(
            f"{value} is not a tokenizer file: --tokenizer takes a Mistral tokenizer file (tokenizer.model, "
            "tokenizer.model.v3, tekken.json, ...) or a checkpoint directory holding one. The conversation is FILE."
        )
    if not path.is_dir() and not path.is_file():
        raise CLIError(f"{value} is not a regular file; --tokenizer takes a tokenizer file or a checkpoint directory.")
    try:
        tokenizer = load_tokenizer(path)
    except FileNotFoundError as error:
        raise CLIError(str(error), ExitCode.MISSING) from None
    except (ValueError, OSError, RuntimeError) as error:  # sentencepiece raises RuntimeError for unreadable models
        raise CLIError(f"cannot load the tokenizer {value}: {_first_line(error)}") from None
    except Exception as error:
        if type(error) is not Exception:  # the tokenizers library raises bare Exceptions for files it cannot parse
            raise
        raise CLIError(f"cannot load the tokenizer {value}: {_first_line(error)}") from None
    return tokenizer, find_mistral_tokenizer_file(path) if path.is_dir() else path


def _is_tokenizer_file(name: str) -> bool:
    """A file name --tokenizer accepts: a Mistral tokenizer file, any SentencePiece `.model`, or tokenizer.json
    (directories are given to load_tokenizer as they are)."""
    from ..tokenizers.loading import TOKENIZER_FILE_PATTERN

    return bool(TOKENIZER_FILE_PATTERN.match(name)) or name.endswith(".model") or name == "tokenizer.json"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _template_tokenizer(template: str) -> tuple[Any, Path]:
    """The real tokenizer for `template`: v1 or v3, and for chatml v1 with OpenOrca's two added tokens."""
    from ..tokenizers.loading import load_tokenizer, reference_tokenizer_file

    if template_tokenizer(template) is None:
        raise CLIError(
            f"--tokens, --json and --check with {template} need --tokenizer (the model's tekken.json, or its "
            "checkpoint directory): mistral-common ships no tekken file of that version."
        )
    model_file = reference_tokenizer_file(template_tokenizer(template))
    if template != CHATML:
        tokenizer = load_tokenizer(model_file)
        tokenizer.chat_template = get_chat_template(template)
        return tokenizer, model_file
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "tokenizer.model").symlink_to(model_file)
        Path(directory, "added_tokens.json").write_text(json.dumps(OPENORCA_ADDED_TOKENS))
        return load_tokenizer(directory), model_file


def _reference(tokenizer: Any, tokenizer_file: Path | None):
    """mistral-common's tokenizer for the same file (ChatML and tokenizer-less directories have none)."""
    if tokenizer.chat_template == get_chat_template(CHATML):
        raise CLIError("--check compares with mistral-common, which has no ChatML: use a Mistral template.")
    if tokenizer_file is None or not tokenizer_file.is_file():
        raise CLIError("--check needs a Mistral tokenizer file (tokenizer.model, tokenizer.model.v3, tekken.json ...).")
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.from_file(str(tokenizer_file))


def _check(ids, reference, tokenizer, messages, tools, args: argparse.Namespace, where: str) -> None:
    from mistral_common.exceptions import MistralCommonException
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode

    # A conversation that ends with a complete assistant message is a fine-tuning sample for mistral-common.
    continue_final_message = args.continue_final_message
    finetuning = messages[-1]["role"] == "assistant" and not continue_final_message
    reference._chat_completion_request_validator._mode = (
        ValidationMode.finetuning if finetuning else ValidationMode.test
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            request = ChatCompletionRequest.from_openai(
                messages,
                tools,
                continue_final_message=continue_final_message,
                reasoning_effort=args.reasoning_effort,
            )
            expected = reference.encode_chat_completion(request).tokens
    except (MistralCommonException, ValueError, AssertionError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CLIError(f"check: mistral-common rejects {where}: {message}", ExitCode.MISMATCH) from None
    if ids == expected:
        return
    differing = (i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b)
    first = next(differing, min(len(ids), len(expected)))
    ours = tokenizer.convert_ids_to_tokens(ids[first : first + 3])
    theirs = tokenizer.convert_ids_to_tokens(expected[first : first + 3])
    raise CLIError(
        f"check: {where} differs from mistral-common at token {first}: kit {ours} vs mistral-common {theirs} "
        f"({len(ids)} vs {len(expected)} tokens).",
        ExitCode.MISMATCH,
    )


def _print_tokens(ids: list[int], pieces: list[str]) -> None:
    width = max(len(str(len(ids))), 5)
    print(f"{'index':>{width}} {'id':>6}  piece")
    for index, (token_id, piece) in enumerate(zip(ids, pieces, strict=True)):
        shown = piece if piece.isprintable() else json.dumps(piece, ensure_ascii=False)
        print(f"{index:>{width}} {token_id:>6}  {shown}")
