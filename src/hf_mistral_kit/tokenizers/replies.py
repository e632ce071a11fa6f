"""`parse_response`: a generated reply (token ids or text) read back into an OpenAI-style assistant message.

The format of each tokenizer version is `hf_mistral_kit.chat.replies`; this module turns a tokenizer's ids into the
pieces those formats read. With token ids, a control token counts only when it was generated as its id (a control
token's spelling in text stays text, as in the kit's prompts); with text, every spelling of a control token counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..chat.replies import Piece, ReplyV1, reply_format_for, tool_names
from ..chat.templates import template_name
from ..versions import CHATML, REFERENCE_FORMATS, THINK_TOKENS, find_format, template_version
from .base import VERSION_KEY

__all__ = ["parse_response", "pieces_of_text", "reply_format_of", "response_template_of"]


def _ids(value: Any) -> Any:
    """Token ids as Python lists (a tensor or array from `generate`), text as it is."""
    if isinstance(value, str) or value is None:
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [_ids(item) if isinstance(item, (list, tuple)) or hasattr(item, "tolist") else int(item) for item in value]


def _has_thinking(tokenizer: Any) -> bool:
    """Whether the tokenizer has [THINK] and [/THINK] (added tokens: never the whole vocabulary, slow for tekken)."""
    return set(THINK_TOKENS) <= set(_controls_of(tokenizer).values())


def reply_format_of(tokenizer: Any) -> ReplyV1:
    """The reply format of a tokenizer: a kit tokenizer's version, the version a kit-saved folder records
    (`mistral_version` in tokenizer_config.json), or the kit template it carries."""
    version = getattr(tokenizer, VERSION_KEY, None) or getattr(tokenizer, "init_kwargs", {}).get(VERSION_KEY)
    template = template_name(tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None)
    if template == CHATML:
        return reply_format_for(None)
    if version is None and template is not None:
        version = template_version(template)
    if version is None:
        raise ValueError(
            "This tokenizer does not say which Mistral format its model replies in (it is not a kit tokenizer and "
            "carries no kit template): pass the tokenizer version instead, e.g. parse_response('v3', text), or load "
            "the tokenizer with hf_mistral_kit.load_tokenizer."
        )
    return reply_format_for(version, thinking=_has_thinking(tokenizer))


def response_template_of(tokenizer: Any) -> dict[str, Any] | None:
    """The `response_template` a tokenizer carries: its format's, None when it has no known format."""
    try:
        return reply_format_of(tokenizer).response_template()
    except ValueError:
        return None


def _controls_of(tokenizer: Any) -> dict[int, str]:
    """id -> spelling of the tokenizer's special added tokens (the control tokens)."""
    return {i: token.content for i, token in tokenizer.added_tokens_decoder.items() if token.special}


def _pieces_of_ids(tokenizer: Any, ids: list[int], boundary: int) -> tuple[list[Piece], int]:
    """The pieces of `ids`, and the character offset (in their joined text) where the first `boundary` ids end."""
    controls = _controls_of(tokenizer)
    pieces: list[Piece] = []
    run: list[int] = []
    run_start = 0
    chars = 0
    cut = None

    def flush(end: int) -> None:
        nonlocal chars, cut
        if run:
            text = tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if cut is None and run_start < boundary < end:
                cut = chars + len(tokenizer.decode(run[: boundary - run_start], skip_special_tokens=False))
            pieces.append((text, False))
            chars += len(text)
            run.clear()

    for index, token_id in enumerate(ids):
        if token_id in controls:
            flush(index)
            if cut is None and index >= boundary:
                cut = chars
            pieces.append((controls[token_id], True))
            chars += len(controls[token_id])
        else:
            if not run:
                run_start = index
                if cut is None and index >= boundary:
                    cut = chars
            run.append(token_id)
    flush(len(ids))
    return pieces, chars if cut is None else cut


def pieces_of_text(text: str, controls: Sequence[str]) -> list[Piece]:
    """The pieces of text: every spelling of one of `controls` is a control token."""
    if not controls:
        return [(text, False)] if text else []
    pattern = re.compile("|".join(re.escape(c) for c in sorted(set(controls), key=len, reverse=True)))
    pieces: list[Piece] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            pieces.append((text[position : match.start()], False))
        pieces.append((match.group(), True))
        position = match.end()
    if position < len(text):
        pieces.append((text[position:], False))
    return pieces


def _reply_pieces(fmt: ReplyV1, pieces: list[Piece], boundary: int) -> list[Piece]:
    """The pieces after the last anchor that ends within the prompt (the first `boundary` characters): the
    assistant's turn, with what the prompt pre-wrote of it. An anchor starting with a control token counts only
    where that token is one."""
    text = "".join(piece for piece, _ in pieces)
    starts: dict[int, int] = {}  # character offset -> index of the piece starting there
    control_starts: set[int] = set()
    control_spellings = {piece for piece, control in pieces if control}
    offset = 0
    for index, (piece, control) in enumerate(pieces):
        starts[offset] = index
        if control:
            control_starts.add(offset)
        offset += len(piece)
    best = -1
    lead_of: dict[int, str | None] = {}
    for anchor in fmt.anchors:
        lead = next((c for c in control_spellings if anchor.startswith(c)), None)
        position = text.rfind(anchor, 0, boundary)
        while position >= 0 and lead is not None and position not in control_starts:
            position = text.rfind(anchor, 0, position + len(anchor) - 1)
        if position >= 0 and position + len(anchor) <= boundary:
            best = max(best, position + len(anchor))
            lead_of[position + len(anchor)] = lead
    if best < 0:
        return pieces
    if lead_of[best] is None and text.startswith(" ", best):
        best += 1  # the space SentencePiece writes before the reply after a text anchor (v1's "[/INST]")
    out: list[Piece] = []
    offset = 0
    for piece, control in pieces:
        end = offset + len(piece)
        if offset >= best:
            out.append((piece, control))
        elif end > best and not control:
            out.append((piece[best - offset :], False))
        offset = end
    return out


def parse_response(
    tokenizer_or_version: Any,
    generated: Any,
    prompt: Any = None,
    *,
    tools: Sequence[Any] | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Read a generated reply back into an OpenAI-style assistant message, on any transformers release.

    `tokenizer_or_version`: the tokenizer the prompt was made with (any transformers tokenizer with a kit template,
    a kit tokenizer, or one loaded from a kit-saved folder), or a tokenizer version ("v1" ... "v13") or kit template
    name ("mistral_v3", "chatml", ...) for text. `generated`: the generated token ids (a list, or a 1-D/2-D tensor
    from `generate`: a 2-D one gives one message per row) or text. The ids may include the prompt, as `generate`
    returns them: with `prompt` given, a leading copy of it is left out. `prompt`: the prompt's ids or text, which
    matters when it pre-writes part of the reply (`continue_final_message=True`); None: the reply starts a new
    assistant turn. `tools`: the tools offered (schemas or functions); a call to any other name stays text.

    Returns `{"role": "assistant", "content": str | None}`, with `"tool_calls": [{"id"?, "type": "function",
    "function": {"name", "arguments": dict}}]` and `"reasoning_content": str` when the model wrote them. Model output
    is untrusted and this never raises on it: what is not a well-formed call is text (see the README).
    """
    generated, prompt = _ids(generated), _ids(prompt)
    if isinstance(generated, list) and generated and isinstance(generated[0], list):
        prompts = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], list) else None
        if prompts is not None and len(prompts) != len(generated):
            raise ValueError(f"{len(generated)} generated rows but {len(prompts)} prompts: give one prompt per row.")
        return [
            parse_response(tokenizer_or_version, row, prompts[i] if prompts else prompt, tools=tools)
            for i, row in enumerate(generated)
        ]
    if isinstance(tokenizer_or_version, str):
        fmt = reply_format_for(tokenizer_or_version)
        tokenizer = None
        if not isinstance(generated, str) or not isinstance(prompt, (str, type(None))):
            tokenizer = _reference_tokenizer(tokenizer_or_version)
    else:
        tokenizer = tokenizer_or_version
        fmt = reply_format_of(tokenizer)
    names = tool_names(tools)
    if not isinstance(generated, str):
        if tokenizer is None:
            raise TypeError("Token ids need the tokenizer that made them: parse_response(tokenizer, ids, prompt).")
        if isinstance(prompt, str):
            prompt = tokenizer.encode(prompt, add_special_tokens=False)
        prompt = prompt or []
        if prompt and generated[: len(prompt)] == prompt:
            generated = generated[len(prompt) :]  # `generate` returns the prompt and the reply
        pieces, boundary = _pieces_of_ids(tokenizer, [*prompt, *generated], len(prompt))
    else:
        if prompt is not None and not isinstance(prompt, str):
            prompt = tokenizer.decode(prompt, skip_special_tokens=False) if tokenizer is not None else ""
        prompt = prompt or ""
        controls = list(_controls_of(tokenizer).values()) if tokenizer is not None else list(fmt.controls())
        pieces, boundary = pieces_of_text(prompt + generated, controls), len(prompt)
    return fmt.parse(_reply_pieces(fmt, pieces, boundary), names)


def _reference_tokenizer(version: str) -> Any:
    """The tokenizer of mistral-common's shipped file of `version`, to read ids given with a version only."""
    from .loading import load_tokenizer, reference_tokenizer_file

    row = REFERENCE_FORMATS.get(version) or find_format(version, "tekken")
    if row is None or not row.reference_file:
        raise ValueError(
            f"Token ids of tokenizer {version} need the tokenizer that made them (mistral-common ships no {version} "
            "file to decode them with): parse_response(tokenizer, ids, prompt)."
        )
    return load_tokenizer(reference_tokenizer_file(row.key))
