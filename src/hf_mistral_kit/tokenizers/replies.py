"""`parse_response`: a generated reply (token ids or text) read back into an OpenAI-style assistant message.

The format of each tokenizer version is `hf_mistral_kit.chat.replies`, and which one a tokenizer's replies are in is
`hf_mistral_kit.chat.templates.reply_format_of`; this module turns ids or text into the pieces those formats read.
With token ids, a control token counts only when it was generated as its id (a control token's spelling in text
stays text, as in the kit's prompts), and control tokens the format does not read are left out, as mistral-common
decodes; with text, the spellings of the format's own control tokens count.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

from ..chat.replies import Piece, ReplyV1, reply_format_for, tool_names
from ..chat.templates import reply_format_of, template_name
from ..versions import REFERENCE_FORMATS, TokenizerKind, find_format, template_kind

__all__ = ["control_tokens", "parse_response", "pieces_of_text", "tokenizer_reply_format"]


def control_tokens(tokenizer: Any) -> dict[int, str]:
    """id -> spelling of a tokenizer's control tokens (its special added tokens)."""
    return {i: token.content for i, token in tokenizer.added_tokens_decoder.items() if token.special}


def tokenizer_reply_format(tokenizer: Any) -> ReplyV1:
    """The reply format of a tokenizer (`reply_format_of`), or a ValueError that names the fix."""
    fmt = reply_format_of(tokenizer)
    if fmt is None:
        raise ValueError(
            "This tokenizer does not say which Mistral format its model replies in (it is not a kit tokenizer and "
            "carries no kit template): pass the tokenizer version instead, e.g. parse_response('v3', text), or load "
            "the tokenizer with hf_mistral_kit.load_tokenizer."
        )
    return fmt


def _as_ids_or_text(value: Any, what: str) -> Any:
    """Token ids as Python lists (a list, or a tensor/array from `generate`, 1-D or 2-D), text as it is, a list of
    texts as a list; a TypeError for anything else."""
    if isinstance(value, str) or value is None:
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, str) for item in value) and value:
            return list(value)
        if all(isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value):
            return list(value)
        if all(isinstance(item, (list, tuple)) for item in value):
            return [_as_ids_or_text(item, what) for item in value]
    raise TypeError(
        f"{what} must be text, token ids (a list of non-negative ints, or generate's 1-D or 2-D tensor) or a list "
        f"of either; got {type(value).__name__} {str(value)[:80]}."
    )


def _pieces_of_ids(tokenizer: Any, ids: list[int], boundary: int, structure: Sequence[str]) -> tuple[list[Piece], int]:
    """The pieces of `ids`, and the character offset (in their joined text) where the first `boundary` ids end.

    The control tokens of `structure` (the format's) are pieces of their own; any other control token is left out,
    as mistral-common's decoder does (`SpecialTokenPolicy.IGNORE`). Each run of text ids between control tokens is
    decoded on its own, as the kit's tokenizers decode."""
    controls = control_tokens(tokenizer)
    pieces: list[Piece] = []
    run: list[int] = []
    run_start = chars = 0
    cut = None

    def decode(token_ids: list[int]) -> str:
        return tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def flush(end: int) -> None:
        nonlocal chars, cut
        if run:
            text = decode(run)
            if cut is None and run_start < boundary < end:
                cut = chars + len(decode(run[: boundary - run_start]))
            pieces.append((text, False))
            chars += len(text)
            run.clear()

    for index, token_id in enumerate(ids):
        if token_id in controls:
            flush(index)
            if cut is None and index >= boundary:
                cut = chars
            if controls[token_id] in structure:
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


def _reply_pieces(fmt: ReplyV1, pieces: list[Piece], boundary: int, dummy_prefix: bool = False) -> list[Piece]:
    """The pieces after the last start of an assistant turn (`fmt.anchor_regex`) that ends within the prompt (the first
    `boundary` characters): the reply, with what the prompt pre-wrote of it. An anchor that starts with a control
    token counts only where that token is one (not where text spells it). `dummy_prefix`: the text is SentencePiece's
    decoded in one piece, whose reply starts with the space of its dummy prefix."""
    text = "".join(piece for piece, _ in pieces)
    control_starts: set[int] = set()
    offset = 0
    for piece, control in pieces:
        if control:
            control_starts.add(offset)
        offset += len(piece)
    best = None
    for match in re.finditer(fmt.anchor_regex, text[:boundary], re.DOTALL):
        lead = any(match.group().startswith(control) for control in fmt.anchor_controls)
        if not lead or match.start() in control_starts:
            best = match
    if best is None:
        return pieces
    start = best.end()
    text_anchor = not any(best.group().startswith(control) for control in fmt.anchor_controls)
    if (text_anchor or dummy_prefix) and text.startswith(" ", start):
        start += 1  # the space SentencePiece writes before the reply (after v1's "[/INST]", which is text)
    out: list[Piece] = []
    offset = 0
    for piece, control in pieces:
        end = offset + len(piece)
        if offset >= start:
            out.append((piece, control))
        elif end > start and not control:
            out.append((piece[start - offset :], False))
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

    `tokenizer_or_version`: the tokenizer the prompt was made with (a kit tokenizer, one loaded from a kit-saved
    folder, or any transformers tokenizer with a kit template), or a tokenizer version ("v1" ... "v13") or kit
    template name ("mistral_v3", "chatml", ...) for text. `generated`: the generated token ids (a list, or a 1-D or
    2-D tensor from `generate`: a 2-D one, or a list of texts, gives one message per row) or text; a leading copy of
    the prompt (`generate` returns it) is left out. `prompt`: the prompt's ids or text, which matters when it
    pre-writes part of the reply (`continue_final_message=True`); None: the reply starts a new assistant turn.
    `tools`: the tools offered (schemas or functions); a call of any other name stays text.

    Returns `{"role": "assistant", "content": str | None}`, with `"tool_calls": [{"id"?, "type": "function",
    "function": {"name", "arguments": dict}}]` and `"reasoning_content": str` when the model wrote them. Model output
    is untrusted and this never raises on it: what is not a well-formed call is text (see the README).
    """
    generated, prompt = _as_ids_or_text(generated, "generated"), _as_ids_or_text(prompt, "prompt")
    if generated is None:
        raise TypeError("generated must be the generated token ids or text, not None.")
    if isinstance(generated, list) and generated and isinstance(generated[0], (list, str)):
        prompts = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)) else None
        if prompts is not None and len(prompts) != len(generated):
            raise ValueError(f"{len(generated)} generated rows but {len(prompts)} prompts: give one prompt per row.")
        return [
            parse_response(tokenizer_or_version, row, prompts[i] if prompts else prompt, tools=tools)
            for i, row in enumerate(generated)
        ]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)):
        raise ValueError("A batch of prompts needs a batch of generated rows (one row per prompt).")
    tokenizer = None
    if isinstance(tokenizer_or_version, str):
        fmt = reply_format_for(tokenizer_or_version)
        if not isinstance(generated, str) or (prompt is not None and not isinstance(prompt, str)):
            tokenizer = _reference_tokenizer(tokenizer_or_version)
    else:
        tokenizer = tokenizer_or_version
        fmt = tokenizer_reply_format(tokenizer)
    if isinstance(generated, str):
        if prompt is not None and not isinstance(prompt, str):
            prompt = tokenizer.decode(prompt, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        prompt = prompt or ""
        generated = generated.removeprefix(prompt) if prompt else generated  # `decode` of generate's whole output
        pieces = pieces_of_text(prompt + generated, (*fmt.controls(), *fmt.anchor_controls))
        boundary, dummy_prefix = len(prompt), _sentencepiece(tokenizer_or_version)
    else:
        if isinstance(prompt, str):
            prompt = tokenizer.encode(prompt, add_special_tokens=False)
        prompt = prompt or []
        if prompt and generated[: len(prompt)] == prompt:
            generated = generated[len(prompt) :]  # `generate` returns the prompt and the reply
        elif not prompt and generated and generated[0] == getattr(tokenizer, "bos_token_id", None):
            warnings.warn(
                "parse_response: the generated ids start with <s>, as generate's whole output does: pass the "
                "prompt's ids as prompt= so that the prompt is not read as the reply.",
                stacklevel=2,
            )
        structure = (*fmt.controls(), *fmt.anchor_controls)
        pieces, boundary = _pieces_of_ids(tokenizer, [*prompt, *generated], len(prompt), structure)
        dummy_prefix = False  # each run of text ids is decoded on its own, without it
    return fmt.parse(_reply_pieces(fmt, pieces, boundary, dummy_prefix), tool_names(tools))


def _sentencepiece(tokenizer_or_version: Any) -> bool:
    """Whether text of this tokenizer, template or version is SentencePiece's (a bare version v1 to v7 is: the
    files mistral-common ships of those are; name the template, "mistral_tekken_v3", for tekken text)."""
    if not isinstance(tokenizer_or_version, str):
        kind = getattr(tokenizer_or_version, "kind", None)
        if kind is None:
            source = tokenizer_or_version.chat_template
            kind = template_kind(template_name(source if isinstance(source, str) else None) or "")
        return kind is TokenizerKind.sentencepiece
    kind = template_kind(tokenizer_or_version)
    if kind is None:
        return find_format(tokenizer_or_version, TokenizerKind.sentencepiece) is not None
    return kind is TokenizerKind.sentencepiece


def _reference_tokenizer(version: str) -> Any:
    """The tokenizer of mistral-common's shipped file of `version`, to read ids given with a version only."""
    from .loading import load_tokenizer, reference_tokenizer_file

    row = REFERENCE_FORMATS.get(version) or find_format(version, TokenizerKind.tekken)
    if row is None or not row.reference_file:
        raise ValueError(
            f"Token ids of {version} need the tokenizer that made them (mistral-common ships no {version} file to "
            "decode them with): parse_response(tokenizer, ids, prompt)."
        )
    return load_tokenizer(reference_tokenizer_file(row.key))
