"""Model settings (tokenizer v15): the `reasoning_effort` of a request, resolved as mistral-common resolves it.

A tekken v15 file carries a `model_settings_builder`: which reasoning efforts its model takes and which one is the
default (`hf_mistral_kit.tokenizers.tekken.read_tekken` reads and checks it). mistral-common's
`ModelSettingsBuilder.build_settings` takes the request's `reasoning_effort`, puts the default in for None, and refuses
a value the file does not list; the instruct tokenizer then writes `[MODEL_SETTINGS]{"reasoning_effort": ...}` before
the first user turn. Before v15, mistral-common's validator refuses any `reasoning_effort` but None.

`model_settings` does the same and returns the chat-template variables that carry the result to the v15 template:
the resolved `reasoning_effort` and the file's builder, so that the template is exact for any file (alone, the
template falls back on Mistral Small 4's builder, `versions.SMALL_4_MODEL_SETTINGS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..versions import CHATML, REASONING_EFFORT, SMALL_4_MODEL_SETTINGS, TokenizerVersion
from .errors import ConversationError
from .plain import describe

BUILDER = "model_settings_builder"  # the chat-template variable (and the tekken file's section) of the builder


def model_settings(
    template: str,
    version: TokenizerVersion | None,
    reasoning_effort: Any = None,
    builder: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template variables of the model settings for a kit template of tokenizer `version` (None: ChatML), given
    the caller's `reasoning_effort` and the tokenizer file's `builder` (None: Mistral Small 4's). Raises
    `ConversationError` where mistral-common refuses the request."""
    if version is None or version < TokenizerVersion.v15:
        if reasoning_effort is not None:
            what = "ChatML" if template == CHATML else f"tokenizer {version}"
            raise ConversationError(
                "",
                f"reasoning_effort={describe(reasoning_effort)} is not supported for this model ({template}: "
                f"{what} has no model settings; mistral-common refuses it too).",
                "Drop reasoning_effort: only tokenizer v15 and later (Mistral Small 4) take it.",
            )
        return {}
    builder = SMALL_4_MODEL_SETTINGS if builder is None else builder
    effort = builder[REASONING_EFFORT]
    values = list(effort["values"])
    value = getattr(reasoning_effort, "value", reasoning_effort)  # mistral-common's ReasoningEffort members too
    if value is None:
        value = effort["default"]
    if not isinstance(value, str) or value not in values:
        raise ConversationError(
            "",
            f"reasoning_effort should be one of {values}, got {describe(value)}.",
            f"Pass one of {', '.join(values)}, or leave it out for the model's default, {effort['default']!r}.",
        )
    return {REASONING_EFFORT: value, BUILDER: dict(builder)}
