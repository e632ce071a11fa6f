"""What loading a tokenizer file raises when the file itself is wrong."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class TokenizerFileError(ValueError):
    """A tokenizer file the kit cannot load, or whose contents cannot encode a text (a crafted or damaged file): the
    message names the file, what in it is wrong, and what to use instead."""


@contextlib.contextmanager
def panics_as_file_errors(source: str) -> Iterator[None]:
    """A panic of the `tokenizers` library while encoding (pyo3's `PanicException`, a `BaseException` that `except
    Exception` misses) raised as `TokenizerFileError`: with the kit's files it comes from a pattern in the file (a
    crafted tekken.json whose regex backtracks past Oniguruma's limit)."""
    try:
        yield
    except BaseException as error:
        if type(error).__name__ != "PanicException":
            raise
        raise TokenizerFileError(
            f"The tokenizer of {source} cannot encode this text: the tokenizers library stopped with {error!s:.200} "
            "(the file's pre-tokenizer pattern backtracks too much on it; mistral-common's tiktoken has no such "
            "limit). Use the model's own tokenizer file."
        ) from None
