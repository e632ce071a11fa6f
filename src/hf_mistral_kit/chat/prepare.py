"""The conversation contract: what the kit's templates accept, checked before anything is rendered.

Two steps, in this order, shared by `render`, the kit tokenizer's `apply_chat_template` and the CLI's `render`:

1. **Prepare** (`plain.to_plain`): every input form transformers' `apply_chat_template` accepts becomes plain JSON-like
   data (dict, list, str, int, float, bool, None).
2. **Validate** (`prepare_chat` with a kit template): the conversation is accepted exactly when mistral-common's
   `ChatCompletionRequest.from_openai(...)` + `MistralTokenizer.encode_chat_completion(...)` accept it for the
   template's tokenizer version (v1, v2, v3, v7, v11, v13 or v15; SentencePiece and tekken files of one version follow
   the same rules), with mistral-common's `ValidationMode`. Everything else raises `ConversationError` (a
   `ValueError`) naming the message, the rule and the fix. Reading (`reading`), validating (`validation`) and
   normalizing (`normalization`) are mistral-common's steps, each a chain of per-version classes picked by the
   tokenizer version. The messages handed on are rebuilt from the fields mistral-common reads; every other key of the
   caller's messages is dropped, so the keys the templates read internally (`prefix` for `continue_final_message`,
   `content_json` for a tool result) are only ever set here.

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

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..versions import CHATML, TEMPLATES, TokenizerKind, find_format, template_kind, template_version
from .errors import ConversationError, ValidationMode
from .limits import fit_text, recursion_room
from .normalization import normalizer_for
from .plain import describe, plain_tools, to_plain
from .reading import Reader
from .settings import model_settings
from .validation import validator_for


class PreparedChat(NamedTuple):
    """Plain data for `render_jinja_template`: one conversation, the tools, the documents, and the template variables
    of the model settings (tokenizer v15: `reasoning_effort` resolved, and the builder it was resolved with)."""

    messages: list[Any]
    tools: list[Any] | None
    documents: list[Any] | None
    settings: Mapping[str, Any] = {}


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
    reasoning_effort: Any = None,
    model_settings_builder: Mapping[str, Any] | None = None,
) -> PreparedChat:
    """Plain, validated data for rendering one conversation with a kit template (see the module docstring).

    `template` is the kit template's name ("mistral_v1", "mistral_v3", "mistral_v7", "mistral_tekken_v3" ...
    "chatml": `hf_mistral_kit.versions.TEMPLATES`) or None for any other template, whose data is only made plain (with
    transformers' "<TypeName>" placeholders; keys whose value is None dropped from messages, as transformers does).
    `version` is the tokenizer's ("v2" selects v2's rules for mistral_v3). `thinking_tokens` says whether the
    tokenizer has [THINK] and [/THINK] (tokenizer v13 renders thinking only then, as mistral-common).
    `reasoning_effort` is the request's (tokenizer v15; other versions refuse it), resolved with
    `model_settings_builder`, the tokenizer file's (None: Mistral Small 4's), into `settings`
    (`hf_mistral_kit.chat.settings`); any other template gets it as it is. Raises `ConversationError` for a
    conversation mistral-common rejects.
    """
    placeholders = template is None
    messages = getattr(conversation, "messages", conversation)
    if isinstance(messages, tuple):
        messages = list(messages)
    if not isinstance(messages, list):
        raise ConversationError(
            "", f"The conversation is {describe(messages)}.", "Pass a list of messages (dicts with role and content)."
        )
    messages = to_plain(messages, placeholders)
    plain_tool_list = plain_tools(tools, placeholders)
    plain_documents = to_plain(documents, placeholders)
    if template is None:
        messages = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]
        settings = {} if reasoning_effort is None else {"reasoning_effort": reasoning_effort}
        return PreparedChat(messages, plain_tool_list, plain_documents, settings)

    if template not in TEMPLATES:
        raise ValueError(f"Unknown kit template {template!r}; expected one of {sorted(TEMPLATES)}.")
    rules_version = _rules_version(template, version)
    validation_mode = _mode(mode, messages, continue_final_message, add_generation_prompt)
    validator = validator_for(rules_version)(validation_mode, template, mode_given=mode is not None)
    normalizer = normalizer_for(rules_version)()
    settings = model_settings(template, rules_version, reasoning_effort, model_settings_builder)
    reader = Reader(
        template,
        tool_calling=validator.tool_calling,
        thinking=validator.thinking,
        system_thinking=validator.system_thinking,
        thinking_tokens=thinking_tokens,
        join=normalizer.chunk_join,
    )
    if plain_documents:
        raise ConversationError(
            "documents",
            f"{template} has no format for documents (mistral-common neither), so they would be left out.",
            "Put the documents' text into a system or user message.",
        )
    # Arguments and tool results are parsed and written again as JSON (recursive code, given the stack for data as
    # deep as `limits.MAX_NESTING`); tool schemas are checked at the caller's recursion limit, as mistral-common does.
    with recursion_room():
        read = [reader.read(index, message) for index, message in enumerate(messages)]
    if continue_final_message:
        if not read or read[-1].role != "assistant":
            raise ConversationError(
                "",
                "continue_final_message=True continues the last message, which must be the assistant's.",
                "End the conversation with the assistant message to continue, or drop continue_final_message.",
            )
        read[-1].prefix = True
    checked_tools = reader.read_tools(plain_tool_list or [])
    with recursion_room():
        validator.validate(read, checked_tools)
        normalizer.check_runs(read)
        output = [normalizer.output(m) for m in read]
    output, checked_tools = fit_text(
        output, checked_tools or None, replace_surrogates=template_kind(template) is TokenizerKind.tekken
    )
    return PreparedChat(output, checked_tools, None, settings)


def _rules_version(template: str, version: str | None) -> Any:
    """The tokenizer version whose rules apply: the tokenizer's own where the template renders it (mistral_v3
    renders v2 too), else the template's. None for ChatML."""
    if template == CHATML:
        return None
    row = find_format(version, template_kind(template)) if version is not None else None
    return row.version if row is not None and row.template == template else template_version(template)


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
