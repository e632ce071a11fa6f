"""The kit's chat templates: plain Jinja files in `chat_templates/`, rendered with transformers' own Jinja setup."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

# Which models each template is for (README's table is generated from the same words).
TEMPLATE_MODELS = {
    "mistral_v1": "Mistral-7B-Instruct-v0.1, Mistral-7B-Instruct-v0.2, Mixtral-8x7B-Instruct-v0.1 and their "
    "fine-tunes or pruned variants (tokenizer v1)",
    "mistral_v3": "Mistral-7B-Instruct-v0.3 (tokenizer v3: control tokens, function calling)",
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


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n\n".join(part["text"] for part in content if part.get("type") == "text" and part.get("text"))


def _normalized_json(text: str) -> str | None:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except json.JSONDecodeError:
        return None


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-normalize tool results and tool-call arguments the way mistral-common does (Jinja cannot parse JSON).

    A tool message gets `content_json`: its content re-serialized when it is JSON (`{}` when empty), else nothing,
    and the template quotes the text. Tool-call arguments become JSON text: re-serialized when they parse, quoted
    as a JSON string when they don't. Messages are copied; the caller's stay untouched.
    """
    normalized = []
    for message in messages:
        message = {key: value for key, value in dict(message).items() if value is not None}
        if message.get("role") == "tool" and "content_json" not in message:
            content = message.get("content")
            if isinstance(content, (dict, list)) and not (
                content and isinstance(content[0], dict) and "type" in content[0]
            ):
                message["content_json"] = json.dumps(content, ensure_ascii=False)
            else:
                text = _text(content)
                as_json = _normalized_json(text) if text else "{}"
                if as_json is not None:
                    message["content_json"] = as_json
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                call = dict(call)
                function = dict(call.get("function", call))
                arguments = function.get("arguments")
                if not arguments and arguments != 0:
                    function["arguments"] = "{}"
                elif isinstance(arguments, str):
                    function["arguments"] = _normalized_json(arguments) or json.dumps(arguments, ensure_ascii=False)
                else:
                    function["arguments"] = json.dumps(arguments, ensure_ascii=False)
                if "function" in call:
                    call["function"] = function
                else:
                    call = function
                calls.append(call)
            message["tool_calls"] = calls
        normalized.append(message)
    return normalized


def render(
    messages: list[dict[str, Any]],
    template: str,
    *,
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    **kwargs: Any,
) -> str:
    """Render `messages` with a named template (or Jinja source), no tokenizer needed.

    Uses transformers' sandboxed Jinja environment, so the text is what `tokenizer.apply_chat_template(...,
    tokenize=False)` gives with the same template. Pass `continue_final_message=True` to leave the last assistant
    message open.
    """
    source = get_chat_template(template) if template in list_templates() else template
    if "{%" not in source and "{{" not in source:
        raise ValueError(f"Unknown chat template {template!r}; available: {', '.join(list_templates())}.")
    chat = normalize_messages(messages)
    if kwargs.pop("continue_final_message", False):
        if not chat or chat[-1].get("role") != "assistant":
            raise ValueError("continue_final_message needs a conversation that ends with an assistant message.")
        chat[-1]["prefix"] = True
    rendered, _ = render_jinja_template(
        conversations=[chat],
        tools=tools,
        chat_template=source,
        add_generation_prompt=add_generation_prompt,
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
