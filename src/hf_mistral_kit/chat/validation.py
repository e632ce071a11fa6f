"""Validation: exactly the conversations mistral-common's `MistralRequestValidator` of each version accepts.

One class per tokenizer version, each overriding only what its version changes, chained as mistral-common's validators
are (`MistralRequestValidator`, `...V3`, `...V5` for v7, `...V11`, `...V13`, `...V15`); `validator_for(version)` picks
the newest class whose version is not after the tokenizer's. Besides mistral-common's rules, a format without tool
calling refuses tools instead of dropping them. ChatML has no mistral-common reference: its messages get v1's shape
checks only, with no rules on message order.
"""

from __future__ import annotations

import re
from typing import Any

from ..versions import CHATML, CHATML_MODELS, TokenizerVersion, template_format
from .errors import ConversationError, ValidationMode
from .plain import describe
from .reading import NAME_RE, NULL_ID, Message, fail, where

# mistral-common's pattern for v3-v11 tool call ids, applied with re.match as it does.
CALL_ID_RE = re.compile(r"^[a-zA-Z0-9]{9}$")
# Which role may follow which (mistral-common's `_validate_message_order`).
NEXT_ROLES = {
    "system": ("user", "assistant", "system"),
    "user": ("assistant", "system", "user"),
    "assistant": ("assistant", "user", "tool"),
    "tool": ("assistant", "tool", "user"),
}
ORDER_FIXES = {
    "tool": "Put each tool message right after the assistant message whose tool call it answers.",
    "system": "Move the system message before that turn: all system messages become one system prompt anyway.",
}


class ValidatorV1:
    """Tokenizer v1 (`MistralRequestValidator`): message order, the last message by mode, tool results in number,
    assistant messages with either content or tool calls; no tool calling (the v1 models were not trained with it)."""

    version = TokenizerVersion.v1
    tool_calling = False
    content_and_calls = False  # an assistant message may have both (tokenizer v7 and later)
    thinking = False  # thinking parts in assistant and system messages (tokenizer v13 with [THINK] tokens)
    system_thinking = True  # where there is thinking, in system messages too (v13; v15 refuses it there)
    check_order = True

    def __init__(self, mode: ValidationMode, template: str, *, mode_given: bool = False):
        # mode_given: the caller named the mode; else it follows from add_generation_prompt (see chat.prepare).
        self.mode, self.template, self.mode_given = mode, template, mode_given

    def validate(self, messages: list[Message], tools: list[dict[str, Any]]) -> None:
        if self.check_order:
            self.check_structure(messages)
        for message in messages:
            self.check_message(message, message is messages[-1])
        if not self.tool_calling:
            if tools:
                raise self.refuse_tools("tools")
            for message in messages:
                if message.role == "tool" or message.calls:
                    raise self.refuse_tools(where(message), message.index)

    # -- the conversation (MistralRequestValidator.validate_messages) --

    def check_structure(self, messages: list[Message]) -> None:
        if not messages:
            raise ConversationError(
                "", "The conversation has no messages.", "Start it with a user (or system) message."
            )
        if len(messages) == 1 and messages[0].role not in ("user", "system"):
            raise fail(
                messages[0],
                "a conversation of one message must be a user or system message.",
                "Start with a user message.",
            )
        if self.mode == ValidationMode.finetuning or len(messages) > 1:
            self.check_last(messages[-1])
        for previous, message in zip(messages, messages[1:], strict=False):
            if message.role not in NEXT_ROLES[previous.role]:
                article = "an" if previous.role == "assistant" else "a"
                raise fail(
                    message,
                    f"a {message.role} message cannot follow {article} {previous.role} message (what may follow "
                    f"it: {', '.join(NEXT_ROLES[previous.role])}).",
                    self.order_fix(message.role),
                )
        self.check_tool_results(messages)

    def order_fix(self, role: str) -> str:
        return ORDER_FIXES[role]

    def check_last(self, last: Message) -> None:
        if self.mode == ValidationMode.agnostic:
            return
        if self.mode == ValidationMode.finetuning:
            if last.role != "assistant":
                raise fail(
                    last,
                    "a fine-tuning sample (validation mode 'finetuning') ends with an assistant message.",
                    "End it with the assistant's answer, or validate it as a prompt (mode 'test').",
                )
            if last.prefix:
                raise fail(
                    last, "a fine-tuning sample cannot continue its last message.", "Drop continue_final_message."
                )
        elif last.role == "assistant" and not last.prefix:
            raise fail(
                last,
                f"a prompt (validation mode '{self.mode.value}') ends with a user or tool message, or with an "
                "assistant message to continue.",
                (
                    "Validate it as a fine-tuning sample (validation_mode='finetuning')"
                    if self.mode_given
                    else "Drop add_generation_prompt to render a fine-tuning sample"
                )
                + ", or pass continue_final_message=True to continue the assistant's message.",
            )

    def check_tool_results(self, messages: list[Message]) -> None:
        expected = 0
        for message in messages[1:]:  # mistral-common does not count the first message
            if message.role == "tool":
                expected -= 1
            elif message.role == "assistant":
                if expected != 0:
                    raise fail(
                        message,
                        "the tool calls before it and the tool results that follow them differ in number.",
                        "Give each tool call exactly one tool message, before the next assistant message.",
                    )
                if message.calls is not None:
                    expected = len(message.calls)
        if expected != 0 and self.mode == ValidationMode.serving:
            raise ConversationError(
                "",
                "The tool calls and tool results differ in number (validation mode 'serving').",
                "Answer every call.",
            )
        if expected < 0 and self.mode == ValidationMode.finetuning:
            raise ConversationError(
                "", "There are more tool results than tool calls.", "Remove the tool messages that answer no call."
            )

    def check_message(self, message: Message, is_last: bool) -> None:
        if message.role == "tool":
            self.check_tool_message_id(message)
        if message.role != "assistant":
            return
        if not self.content_and_calls and message.truthy == bool(message.calls):
            has = "both content and tool_calls" if message.truthy else "neither content nor tool_calls"
            raise fail(
                message,
                f"an assistant message has {has}.",
                "Give it either its text or its tool calls (an empty answer cannot be trained on or continued).",
            )
        for number, call in enumerate(message.calls or []):
            self.check_call(message, number, call, is_last)

    def check_tool_message_id(self, message: Message) -> None:
        return

    def check_call(self, message: Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        self.check_call_id(message, number, call, is_last)
        if not NAME_RE.match(call["name"]):
            raise fail(
                message,
                f"tool_calls[{number}] names the function {describe(call['name'])}, which is not 1-64 letters, "
                "digits, '_' or '-'.",
                "Use the name of a function in tools.",
            )

    def check_call_id(self, message: Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        return

    def refuse_tools(self, where: str, index: int | None = None) -> Exception:
        """The error for tools, tool calls or tool messages in a format without tool calling."""
        models = CHATML_MODELS if self.template == CHATML else template_format(self.template).models
        return ConversationError(
            where,
            f"{self.template} ({models}) has no tool calling: the model was not trained with tools.",
            "Use a v3 model and tokenizer (the mistral_v3 template) for tools, tool calls and tool results.",
            index,
        )


class ValidatorV2(ValidatorV1):
    """Tokenizer v2: v1's validation (mistral-common's base validator); the kit renders it with the v3 template and
    has no v2 tool format."""

    version = TokenizerVersion.v2

    def refuse_tools(self, where: str, index: int | None = None) -> Exception:
        return NotImplementedError(
            "Tokenizer v2 writes tool calls and results differently from v3 and the kit has no v2 tool template; "
            "encode this conversation with mistral_common's MistralTokenizer.encode_chat_completion."
        )


class ValidatorV3(ValidatorV2):
    """Tokenizer v3 (`MistralRequestValidatorV3`): tool calling with 9-character ids."""

    version = TokenizerVersion.v3
    tool_calling = True

    def check_tool_message_id(self, message: Message) -> None:
        if message.call_id is None:
            raise fail(message, "tool_call_id is None.", "Give it the id of the tool call it answers.")
        if not CALL_ID_RE.match(message.call_id):
            raise fail(
                message,
                f"tool_call_id {describe(message.call_id)} is not 9 letters or digits, as Mistral's "
                f"{self.version} format requires.",
                "Use 9-character alphanumeric ids (e.g. uuid4().hex[:9]), the same in the call and its result.",
            )

    def check_call_id(self, message: Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        call_id = call["id"]
        if call_id == NULL_ID:
            allowed = self.mode in (ValidationMode.finetuning, ValidationMode.agnostic) and is_last
            if not allowed:
                raise fail(
                    message,
                    f"tool_calls[{number}] has no id; only the final message of a fine-tuning sample may omit it.",
                    "Give the call a 9-character alphanumeric id (e.g. uuid4().hex[:9]).",
                )
        elif not CALL_ID_RE.match(call_id):
            raise fail(
                message,
                f"tool_calls[{number}] has id {describe(call_id)}, not 9 letters or digits as Mistral's "
                f"{self.version} format requires.",
                "Use 9-character alphanumeric ids (e.g. uuid4().hex[:9]), the same in the call and its result.",
            )


class ValidatorV7(ValidatorV3):
    """Tokenizer v7 (`MistralRequestValidatorV5`): an assistant message may have both text and tool calls, and a
    system message may stand anywhere."""

    version = TokenizerVersion.v7
    content_and_calls = True

    def order_fix(self, role: str) -> str:
        if role == "system":
            return "Move the system message after a user message or before the turn it belongs to."
        return super().order_fix(role)


class ValidatorV11(ValidatorV7):
    """Tokenizer v11 (`MistralRequestValidatorV11`): tool results are matched to the calls by id (each call answered
    at most once, no unknown ids)."""

    version = TokenizerVersion.v11

    def check_tool_results(self, messages: list[Message]) -> None:
        expected: set[str] = set()
        observed: set[str] = set()
        for message in messages[1:]:  # mistral-common does not look at the first message
            if message.role == "tool":
                if message.call_id in observed:
                    raise fail(
                        message,
                        f"a second tool result for the call id {describe(message.call_id)}.",
                        "Answer each tool call once.",
                    )
                if message.call_id not in expected:
                    raise fail(
                        message,
                        f"tool_call_id {describe(message.call_id)} is not the id of a call of the assistant message "
                        "before it.",
                        "Use the id of the tool call this result answers.",
                    )
                observed.add(message.call_id)
            elif message.role == "assistant":
                if len(expected) != len(observed):
                    raise fail(
                        message,
                        "the tool calls before it are not all answered by tool messages.",
                        "Give each tool call exactly one tool message, before the next assistant message.",
                    )
                expected, observed = set(), set()
                for call in message.calls or []:
                    if call["id"] in expected:
                        raise fail(
                            message,
                            f"two tool calls have the id {describe(call['id'])}.",
                            "Give each call its own id.",
                        )
                    expected.add(call["id"])
        if len(expected) != len(observed) and self.mode == ValidationMode.serving:
            raise ConversationError(
                "",
                "The tool calls and tool results differ in number (validation mode 'serving').",
                "Answer every call.",
            )


class ValidatorV13(ValidatorV11):
    """Tokenizer v13 (`MistralRequestValidatorV13`): call ids are any non-empty strings, and assistant and system
    messages may hold thinking chunks."""

    version = TokenizerVersion.v13
    thinking = True

    def check_tool_message_id(self, message: Message) -> None:
        if not message.call_id or message.call_id == NULL_ID:
            raise fail(
                message,
                f"tool_call_id is {describe(message.call_id)}; tokenizer v13 needs the id of the call it answers.",
                "Give it the id of the tool call it answers.",
            )

    def check_call_id(self, message: Message, number: int, call: dict[str, Any], is_last: bool) -> None:
        if not call["id"] or call["id"] == NULL_ID:
            raise fail(
                message,
                f"tool_calls[{number}] has no id; tokenizer v13 needs one (any non-empty string but 'null').",
                "Give the call an id, the same in the call and its result.",
            )


class ValidatorV15(ValidatorV13):
    """Tokenizer v15 (`MistralRequestValidatorV15`): system messages hold text only, no thinking chunks. (Its model
    settings are resolved apart: `hf_mistral_kit.chat.settings`.)"""

    version = TokenizerVersion.v15
    system_thinking = False


class ValidatorChatML(ValidatorV1):
    """ChatML (Mistral-7B-OpenOrca): v1's message shapes, no rules on message order (mistral-common has no ChatML)."""

    check_order = False

    def check_message(self, message: Message, is_last: bool) -> None:
        return


# The chain, oldest first: a version gets the newest class that is not after it.
VALIDATORS = (ValidatorV1, ValidatorV2, ValidatorV3, ValidatorV7, ValidatorV11, ValidatorV13, ValidatorV15)


def validator_for(version: TokenizerVersion | None) -> type[ValidatorV1]:
    """The validator class of a tokenizer version (None: ChatML)."""
    if version is None:
        return ValidatorChatML
    return max((cls for cls in VALIDATORS if cls.version <= version), key=lambda cls: cls.version)
