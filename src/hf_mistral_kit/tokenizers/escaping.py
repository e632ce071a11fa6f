"""Control tokens spelled in a conversation stay text: escaping them before rendering, undoing it in the encoder.

Before rendering, `apply_chat_template` marks every control-token spelling found in conversation data with a
private-use character that the chat encoder's normalizer removes again (`ControlTokenEscaper`), so the added-token
matcher never sees the spelling and the encoder's pieces come out as if it were plain text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from tokenizers import Regex, normalizers

from ..chat.plain import map_strings

# Inserted after the first character of every control-token spelling found in conversation data; the chat encoder's
# normalizer removes it. A mark followed by _LITERAL stands for a U+E000 of the data itself; a one-character control
# token is written as the mark followed by its code (private-use plane 15).
_MARK = "\ue000"
_LITERAL = "\ue001"
_CODES = 0xF0000
# Where mistral-common encodes two texts separately with no control token between them (v13's open thinking chunk
# and the text after it), the kit's templates write `chunk_break` when the kit renders: an added token of the chat
# encoder that splits the text there and whose id is then dropped. Escaped data never holds it (a mark is only ever
# followed by _LITERAL, a code or a token's second character, and no token holds these private-use characters).
CHUNK_BREAK = _MARK + "\ue002"


class ControlTokenEscaper:
    """Keeps control-token spellings in conversation data text, for one set of `tokens` (the added tokens).

    `escape` rewrites the strings of the data so that no token is found in them any more (overlapping and
    one-character tokens included); `normalizer` undoes it inside the tokenizer, before anything else, so offsets
    still point into the escaped text; `unescape` undoes it on rendered text.
    """

    def __init__(self, tokens: Iterable[str]):
        tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
        if any(_MARK <= ch <= CHUNK_BREAK[-1] or ord(ch) >= _CODES for t in tokens for ch in t):
            raise ValueError("Added tokens must not contain U+E000-U+E002 or plane-15 private-use characters.")
        self.singles = {t: chr(_CODES + i) for i, t in enumerate(t for t in tokens if len(t) == 1)}
        self._decoded = {_LITERAL: _MARK, **{code: t for t, code in self.singles.items()}}
        self._starts = re.compile(f"(?=(?:{_trie_pattern(tokens)}))") if tokens else None
        # Most text holds none of the characters tokens start with: one scan decides that.
        self._first_chars = re.compile(f"[{''.join(sorted({re.escape(t[0]) for t in tokens}))}]") if tokens else None

    def escape(self, value: Any) -> Any:
        """`value` with every string in it (dict keys included) escaped; other values returned as they are.

        Iterative (`map_strings`), so that data nested as deeply as the conversation contract admits never hits the
        recursion limit.
        """
        return map_strings(value, self.escape_text)

    def escape_text(self, text: str) -> str:
        if _MARK in text:
            text = text.replace(_MARK, _MARK + _LITERAL)
        if self._starts is None or not self._first_chars.search(text):
            return text
        starts = [m.start() for m in self._starts.finditer(text)]
        if not starts:
            return text
        out, last = [], 0
        for start in starts:
            char = text[start]
            out.append(text[last:start])
            out.append(_MARK + self.singles[char] if char in self.singles else char + _MARK)
            last = start + 1
        out.append(text[last:])
        return "".join(out)

    def unescape(self, text: str) -> str:
        """`escape` undone, as `normalizer` undoes it: a mark stands for a U+E000 before _LITERAL, for a
        one-character token before its code, and for nothing otherwise (the character after it is not part of it)."""
        if _MARK not in text:
            return text
        return self._marks.sub(lambda match: self._decoded.get(match.group(1), ""), text)

    @cached_property
    def _marks(self) -> re.Pattern:
        return re.compile(f"{_MARK}([{_LITERAL}{''.join(self._decoded)}])?")

    def normalizer(self) -> Any:
        """Normalizer steps that undo `escape`, to run before the tokenizer's own normalizer."""
        steps = [normalizers.Replace(_MARK + code, token) for token, code in self.singles.items()]
        steps.append(normalizers.Replace(Regex(f"{_MARK}(?!{_LITERAL})"), ""))
        steps.append(normalizers.Replace(_MARK + _LITERAL, _MARK))
        return steps


def _trie_pattern(strings: list[str]) -> str:
    """A regex matching any of `strings`, factored by common prefixes (hundreds of control tokens stay fast)."""
    trie: dict = {}
    for string in strings:
        node = trie
        for char in string:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ends else f"(?:{'|'.join(branches)})"
        return f"(?:{body})?" if ends and branches else body

    return pattern(trie)
