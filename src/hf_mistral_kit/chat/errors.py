"""What the conversation contract raises, and mistral-common's validation modes."""

from __future__ import annotations

from enum import Enum


class ValidationMode(str, Enum):
    """mistral-common's validation modes (`mistral_common.protocol.instruct.validator.ValidationMode`); its members
    are accepted wherever the kit takes one."""

    serving = "serving"
    finetuning = "finetuning"
    test = "test"
    agnostic = "agnostic"


class ConversationError(ValueError):
    """A conversation the template's tokenizer version does not accept (mistral-common rejects it too).

    `index` is the position of the offending message in the caller's list (None when the problem is not one
    message's), `rule` says what is wrong and `fix` what to do about it.
    """

    def __init__(self, where: str, rule: str, fix: str, index: int | None = None):
        self.where, self.rule, self.fix, self.index = where, rule, fix, index
        super().__init__(f"{where}: {rule} Fix: {fix}" if where else f"{rule} Fix: {fix}")
