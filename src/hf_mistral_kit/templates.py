"""The kit's chat templates: plain Jinja files in `chat_templates/`, rendered with transformers' own Jinja setup."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from .conversation import ValidationMode, prepare_chat

# Which models each template is for (README's table is generated from the same words).
TEMPLATE_MODELS = {
    "mistral_v1": "Mistral-7B-Instruct-v0.1, Mistral-7B-Instruct-v0.2, Mixtral-8x7B-Instruct-v0.1 and their "
    "fine-tunes or pruned variants (tokenizer v1)",
    "mistral_v3": "Mistral-7B-Instruct-v0.3, Mixtral-8x22B-Instruct-v0.1 (tokenizer v3: control tokens, function "
    "calling)",
    "mistral_v7": "Mistral-Large-Instruct-2411, Pixtral-Large-Instruct-2411 (text) (SentencePiece tokenizer v7: "
    "[SYSTEM_PROMPT], text with tool calls, [TOOL_CONTENT])",
    "mistral_tekken_v3": "Mistral-Nemo-Instruct-2407, Ministral-8B-Instruct-2410, Pixtral-12B-2409 (text) "
    "(tekken.json version v3)",
    "mistral_tekken_v7": "Mistral-Small-24B-Instruct-2501, Mistral-Small-3.1-24B-Instruct-2503 (text), "
    "Devstral-Small-2505 (tekken.json version v7)",
    "mistral_tekken_v11": "Mistral-Small-3.2-24B-Instruct-2506 (tekken.json version v11: [CALL_ID], [ARGS])",
    "mistral_tekken_v13": "Magistral-Small-2507/2509, Devstral-Small-2507 (tekken.json version v13: [ARGS], [THINK])",
    "chatml": "Mistral-7B-OpenOrca and other ChatML fine-tunes (<|im_start|>/<|im_end|>)",
}
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


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
    version (`validation_mode`: see `hf_mistral_kit.conversation`) and raise `ConversationError` when it rejects it.
    """
    source = get_chat_template(template) if template in list_templates() else template
    if "{%" not in source and "{{" not in source:
        raise ValueError(f"Unknown chat template {template!r}; available: {', '.join(list_templates())}.")
    name = template_name(source)
    continue_final_message = kwargs.pop("continue_final_message", False)
    chat = prepare_chat(
        messages,
        tools,
        kwargs.pop("documents", None),
        template=name,
        mode=validation_mode,
        continue_final_message=continue_final_message,
        add_generation_prompt=add_generation_prompt,
    )
    rendered, _ = render_jinja_template(
        conversations=[chat.messages],
        tools=chat.tools,
        documents=chat.documents,
        chat_template=source,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message and name is None,
        bos_token=bos_token,
        eos_token=eos_token,
        **kwargs,
    )
    return rendered[0]


def guess_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The template a tokenizer's vocabulary calls for: ChatML tokens, v3 control tokens, else v1."""
    vocab = tokenizer.get_vocab()
    if CHATML_TOKENS[0] in vocab:
        return "chatml"
    return "mistral_v3" if "[AVAILABLE_TOOLS]" in vocab else "mistral_v1"


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """Set the named template on any tokenizer (in place; also returned).

    For "chatml", <|im_start|> and <|im_end|> are added as special tokens when missing — the model's embeddings must
    then be resized (`model.resize_token_embeddings(len(tokenizer))`), which is said in a warning.
    """
    source = get_chat_template(name)
    if name == "chatml":
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
    return tokenizer
