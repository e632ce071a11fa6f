"""The kit's chat templates: plain Jinja files in `chat_templates/`, rendered with transformers' own Jinja setup.

Which tokenizer version each template is for is `hf_mistral_kit.versions`' table; the files are read from the
package (`hf_mistral_kit.chat_templates`, shipped from the repository's top-level `chat_templates/`).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from ..versions import CHATML, CHATML_TOKENS, FORMATS, REASONING_EFFORT, VERSION_KEY, TokenizerVersion
from .errors import ValidationMode
from .limits import recursion_room
from .prepare import prepare_chat
from .replies import ReplyV1, has_thinking_tokens, reply_format_for


def list_templates() -> list[str]:
    """Names of the templates shipped in `chat_templates/`."""
    files = resources.files("hf_mistral_kit.chat_templates").iterdir()
    return sorted(f.name.removesuffix(".jinja") for f in files if f.name.endswith(".jinja"))


def get_chat_template(name: str) -> str:
    """The Jinja source of template `name` (see `list_templates()`)."""
    names = list_templates()
    if name not in names:
        raise ValueError(f"Unknown chat template {name!r}; available: {', '.join(names)}.")
    return resources.files("hf_mistral_kit.chat_templates").joinpath(f"{name}.jinja").read_text(encoding="utf-8")


def template_name(source: str | None) -> str | None:
    """The name of the kit template whose Jinja source is `source`, or None for any other template."""
    return _templates_by_source().get(source) if source else None


@lru_cache(maxsize=1)
def _templates_by_source() -> dict[str, str]:
    return {get_chat_template(name): name for name in list_templates()}


def render(
    messages: list[dict[str, Any]],
    template: str,
    *,
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    validation_mode: ValidationMode | str | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` with a named template (or Jinja source), no tokenizer needed.

    Uses transformers' sandboxed Jinja environment, so the text is what `tokenizer.apply_chat_template(...,
    tokenize=False)` gives with the same template. Pass `continue_final_message=True` to leave the last assistant
    message open. The kit's templates first validate the conversation as mistral-common does for their tokenizer
    version (`validation_mode`: see `hf_mistral_kit.chat.prepare`) and raise `ConversationError` when it rejects it.
    `reasoning_effort` (mistral_tekken_v15) is checked against Mistral Small 4's model settings ("none", its
    default, or "high"); a tokenizer's `apply_chat_template` checks it against its own file's.
    """
    source = get_chat_template(template) if template in list_templates() else template
    if "{%" not in source and "{{" not in source:
        raise ValueError(f"Unknown chat template {template!r}; available: {', '.join(list_templates())}.")
    name = template_name(source)
    continue_final_message = kwargs.pop("continue_final_message", False)
    reasoning_effort = kwargs.pop(REASONING_EFFORT, None)
    chat = prepare_chat(
        messages,
        tools,
        kwargs.pop("documents", None),
        template=name,
        mode=validation_mode,
        continue_final_message=continue_final_message,
        add_generation_prompt=add_generation_prompt,
        reasoning_effort=reasoning_effort,
    )
    with recursion_room():  # transformers copies the data recursively, and tool schemas may be deep
        rendered, _ = render_jinja_template(
            conversations=[chat.messages],
            tools=chat.tools,
            documents=chat.documents,
            chat_template=source,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message and name is None,
            bos_token=bos_token,
            eos_token=eos_token,
            **{**kwargs, **chat.settings},
        )
    return rendered[0]


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """Set the named template on any tokenizer (in place; also returned), and the `response_template` its replies are
    read back with (`tokenizer.parse_response`, `transformers serve`, `hf_mistral_kit.parse_response`).

    For "chatml", <|im_start|> and <|im_end|> are added as special tokens when missing — the model's embeddings must
    then be resized (`model.resize_token_embeddings(len(tokenizer))`), which is said in a warning.
    """
    source = get_chat_template(name)
    if name == CHATML:
        missing = [token for token in CHATML_TOKENS if token not in tokenizer.get_vocab()]
        if missing:
            import warnings

            tokenizer.add_special_tokens({"extra_special_tokens": missing})
            warnings.warn(
                f"Added {', '.join(missing)} to the tokenizer as special tokens for ChatML; resize the model's "
                f"embeddings to match: model.resize_token_embeddings({len(tokenizer)}).",
                stacklevel=2,
            )
    tokenizer.chat_template = source
    # How the model's replies read back: tokenizer.parse_response, transformers serve, hf_mistral_kit.parse_response.
    tokenizer.response_template = reply_format_of(tokenizer, name).response_template()
    return tokenizer


def reply_format_of(tokenizer: Any, template: str | None = None) -> ReplyV1 | None:
    """The reply format of a tokenizer (None when it has no Mistral format), the one rule everything uses: its kit
    template (`template`, else the one it carries) read with its tokenizer version (a kit tokenizer's, or a kit-saved
    folder's `mistral_version`) where the template renders that version (mistral_v3 on a v2 tokenizer reads v2's
    replies), else the template's format (ChatML, or another kit template set on it), else the version's."""
    if template is None:
        source = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
        template = template_name(source)
    version = getattr(tokenizer, VERSION_KEY, None) or getattr(tokenizer, "init_kwargs", {}).get(VERSION_KEY)
    version = version if version in {v.value for v in TokenizerVersion} else None
    thinking = has_thinking_tokens(tokenizer)
    if template is not None and not any(row.template == template and row.version == version for row in FORMATS):
        return reply_format_for(template, thinking)
    return reply_format_for(version, thinking) if version is not None else None
