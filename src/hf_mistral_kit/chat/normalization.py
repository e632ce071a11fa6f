"""Normalization: the messages a template gets, and what mistral-common's normalizer and encoder reject.

mistral-common merges consecutive messages of one role (`InstructRequestNormalizer`), JSON-normalizes tool results
and writes each version's message kinds (`InstructRequestNormalizerV7`, `...V13`, `...V15`); its instruct tokenizers
then refuse what they cannot encode (an assistant turn without text, text beside tool calls before v7). One class per
version that changes any of this, chained as mistral-common's normalizers are; `normalizer_for(version)` picks the
newest class whose version is not after the tokenizer's. Only the fields mistral-common reads reach the template, so
the keys the templates read internally (`prefix` for `continue_final_message`, `content_json` for a tool result) are
only ever set here.
"""

from __future__ import annotations

from typing import Any

from ..versions import TokenizerVersion
from .reading import JOIN, NULL_ID, Message, fail, normalized_json


def runs(messages: list[Message]) -> list[list[Message]]:
    """Consecutive messages of one role, as mistral-common merges them (a system message splits a run; tool
    messages are never merged)."""
    result: list[list[Message]] = []
    for message in messages:
        if result and result[-1][0].role == message.role and message.role != "tool":
            result[-1].append(message)
        else:
            result.append([message])
    return result


class NormalizerV1:
    """Tokenizer v1 and v2 (`InstructRequestNormalizer`, `InstructTokenizerV1`): merged assistant turns need text;
    tool results carry their normalized JSON (`content_json`: Jinja cannot parse JSON)."""

    version = TokenizerVersion.v1
    chunk_join = JOIN  # what the text chunks of one message are joined with (`Message.text`)

    def check_runs(self, messages: list[Message]) -> None:
        for run in runs(messages):
            if run[0].role == "assistant" and not any(m.text for m in run):
                raise fail(run[0], "the assistant's text is empty.", "Give the assistant message its answer.")

    def output(self, message: Message) -> dict[str, Any]:
        if message.role == "tool":
            text = message.text
            return {
                "role": "tool",
                "tool_call_id": message.call_id,
                "content": text,
                "content_json": normalized_json(message, "the tool result", text),
            }
        out: dict[str, Any] = {"role": message.role}
        if message.role == "system" and message.truthy and not message.text:
            out["content"] = [{"type": "text", "text": ""}]  # counts in the system prompt, as in mistral-common
        elif message.role != "system" or message.truthy:
            out["content"] = message.text
        else:
            out["content"] = ""
        if message.calls:
            out["tool_calls"] = [
                {
                    **({"id": call["id"]} if call["id"] and call["id"] != NULL_ID else {}),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in message.calls
            ]
        if message.prefix:
            out["prefix"] = True
        return out


class NormalizerV3(NormalizerV1):
    """Tokenizer v3 (`InstructTokenizerV3`): a merged assistant turn holds text or tool calls, never both."""

    version = TokenizerVersion.v3

    def check_runs(self, messages: list[Message]) -> None:
        for run in runs(messages):
            if run[0].role != "assistant":
                continue
            text, calls = any(m.text for m in run), any(m.calls for m in run)
            if text and calls:
                raise fail(
                    run[0],
                    "consecutive assistant messages are merged, and this run has both text and tool calls.",
                    "Put the text and the tool calls into separate turns.",
                )
            if not text and not calls:
                raise fail(run[0], "the assistant's text is empty.", "Give the assistant message its answer.")


class NormalizerV7(NormalizerV3):
    """Tokenizer v7 and later (`InstructRequestNormalizerV7`, `InstructTokenizerV7`): every system message is its own
    [SYSTEM_PROMPT] block where it stands, an assistant turn may hold text and tool calls (or thinking, v13), tool
    results are written as they are (no JSON normalization) after their call id, and no empty user turn is
    inserted."""

    version = TokenizerVersion.v7

    def check_runs(self, messages: list[Message]) -> None:
        for run in runs(messages):
            if run[0].role != "assistant":
                continue
            if not any(m.text or m.thinks for m in run) and not any(m.calls for m in run):
                raise fail(
                    run[0], "the assistant's turn has neither text nor tool calls.", "Give the assistant its answer."
                )

    def output(self, message: Message) -> dict[str, Any]:
        if message.role == "tool":
            return {"role": "tool", "tool_call_id": message.call_id, "content": message.text}
        out = super().output(message)
        if message.role in ("system", "assistant") and message.thinks:
            out["content"] = message.content
        elif message.role == "system":
            out["content"] = message.text  # every system message is written, empty or not
        return out


class NormalizerV15(NormalizerV7):
    """Tokenizer v15 (`InstructRequestNormalizerV15`): the text chunks of one message are joined with nothing (merged
    messages still with a blank line). Its model settings are resolved apart (`hf_mistral_kit.chat.settings`)."""

    version = TokenizerVersion.v15
    chunk_join = ""


class NormalizerChatML(NormalizerV1):
    """ChatML: the messages as they are (mistral-common has no ChatML to reject anything)."""

    def check_runs(self, messages: list[Message]) -> None:
        return

    def output(self, message: Message) -> dict[str, Any]:
        out = {"role": message.role, "content": message.content}
        if message.prefix:
            out["prefix"] = True
        return out


# The chain, oldest first: a version gets the newest class that is not after it.
NORMALIZERS = (NormalizerV1, NormalizerV3, NormalizerV7, NormalizerV15)


def normalizer_for(version: TokenizerVersion | None) -> type[NormalizerV1]:
    """The normalizer class of a tokenizer version (None: ChatML)."""
    if version is None:
        return NormalizerChatML
    return max((cls for cls in NORMALIZERS if cls.version <= version), key=lambda cls: cls.version)
