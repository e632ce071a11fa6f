"""The Mistral tokenizer files the tests compare against mistral-common, shipped or derived from shipped ones.

mistral-common ships SentencePiece v7 (`mistral_instruct_tokenizer_241114.model.v7`, and `.v7m1`: the same bytes,
which mistral-common gives an image encoder) and two tekken files of version v3 (`tekken_240718.json`, Mistral-Nemo's,
and `tekken_240911.json`, Pixtral-12B's: the same vocabulary and config plus an image config). No tekken v7, v11 or
v13 file ships, so the tests derive them from `tekken_240718.json`, the way mistral-common itself builds tekken
tokenizers of those versions (`Tekkenizer.from_file` and its own test suite, `tests/test_tekken.py`):

- the version is `config.version` and nothing else: `from_file` reads it and picks `InstructTokenizerV7/V11/V13`,
  the validator and the normalizer from it; the vocabulary, the pre-tokenizer regex and the sizes stay Nemo's (the
  released tekken v7+ files, Mistral-Small-24B's and later, have the same 131072-entry layout);
- v7: no `special_tokens` list, like the v3 files: `from_file` then uses `Tekkenizer.DEPRECATED_SPECIAL_TOKENS`, ranks
  0-19, which include v7's `[SYSTEM_PROMPT]`, `[/SYSTEM_PROMPT]` and `[TOOL_CONTENT]`;
- v11 and v13: `from_file` refuses a file of these versions without a `special_tokens` list, and their instruct
  tokenizers need `[ARGS]` and `[CALL_ID]` (v13 `[THINK]`/`[/THINK]` for thinking). The list is the one
  mistral-common's tests build (`get_special_tokens`): the 20 deprecated tokens, `<SPECIAL_i>` fillers, `[ARGS]` at
  rank 32 and `[CALL_ID]` at 33; v13 adds `[THINK]` 34 and `[/THINK]` 35 (the next free ranks). Ranks 36-999 are
  `from_file`'s own fillers. The kit reads every id from the file, so these ranks only decide which ids the
  comparison sees, never what the templates write.

Both sides load the same derived file: mistral-common with `MistralTokenizer.from_file`, the kit with
`load_tokenizer`, so each comparison is of two readers of one file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from hf_mistral_kit.tokenizers.loading import MISTRAL_COMMON_DATA
from hf_mistral_kit.versions import MistralFormat, TokenizerKind, find_format

SHIPPED = {
    "v7": MISTRAL_COMMON_DATA / "mistral_instruct_tokenizer_241114.model.v7",
    "v7m1": MISTRAL_COMMON_DATA / "mistral_instruct_tokenizer_241114.model.v7m1",
    "tekken-v3": MISTRAL_COMMON_DATA / "tekken_240718.json",
    "tekken-v3-image": MISTRAL_COMMON_DATA / "tekken_240911.json",
}
DERIVED = ("tekken-v7", "tekken-v11", "tekken-v13", "tekken-v13-nothink")


def row_of(name: str) -> MistralFormat:
    """The version table's row of a file here: "v7", "v7m1" (SentencePiece), "tekken-v3", "tekken-v3-image", ..."""
    if name.startswith("tekken-"):
        return find_format(name.split("-")[1], TokenizerKind.tekken)
    return find_format(re.match(r"v\d+", name).group(), TokenizerKind.sentencepiece)


# Every file the parity tests run on, and the kit template each must get (its row's).
TEMPLATES = {name: row_of(name).template for name in (*SHIPPED, *DERIVED) if not name.endswith("nothink")}


def special_tokens(version: str, think: bool) -> list[dict] | None:
    """The special_tokens list of a derived tekken file (None: the file has none, as the v3 and v7 files)."""
    if version in ("v3", "v7"):
        return None
    tokens = [dict(token) for token in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    tokens = [{**token, "token_str": str(getattr(token["token_str"], "value", token["token_str"]))} for token in tokens]
    named = {32: "[ARGS]", 33: "[CALL_ID]"}
    if think:
        named.update({34: "[THINK]", 35: "[/THINK]"})
    for rank in range(len(tokens), max(named) + 1):
        tokens.append({"rank": rank, "token_str": named.get(rank, f"<SPECIAL_{rank}>"), "is_control": True})
    return tokens


def derive(name: str, directory: Path) -> Path:
    """Write the derived tekken file `name` ("tekken-v7", "tekken-v11", "tekken-v13", "tekken-v13-nothink") into
    `directory` (as `<name>.json`: mistral-common and the kit tell a tekken file by "tekken" in a .json name)."""
    version = name.split("-")[1]
    data = json.loads(SHIPPED["tekken-v3"].read_text(encoding="utf-8"))
    data["config"]["version"] = version
    tokens = special_tokens(version, think=not name.endswith("nothink"))
    if tokens is not None:
        data["special_tokens"] = tokens
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# issue 19: crafted tekken.json files, Nemo's file with one edit each, and a fragment of the TokenizerFileError the kit
# raises for it: when loading it, or (for "backtrack", a pattern that backtracks past the tokenizers regex engine's
# limit) when encoding BACKTRACKS with it.
CRAFTED = {
    "version-list": (lambda d: d["config"].update(version=["v3"]), "config.pattern and config.version must be strings"),
    "not-base64": (
        lambda d: d["vocab"][300].update(token_bytes="!!!notbase64"),
        "its vocab is not a tekken vocabulary (Invalid base64-encoded string",
    ),
    "bytes-not-string": (lambda d: d["vocab"][300].update(token_bytes=5), "token_bytes must be a base64 string"),
    "specials-infinite": (
        lambda d: d["config"].update(default_num_special_tokens=float("inf")),
        "config.default_num_special_tokens must be an integer from 1 to 100,000, got inf",
    ),
    "specials-1e9": (
        lambda d: d["config"].update(default_num_special_tokens=10**9, default_vocab_size=10**9 + 131072),
        "config.default_num_special_tokens must be an integer from 1 to 100,000, got 1000000000",
    ),
    "specials-float": (
        lambda d: d["config"].update(default_num_special_tokens=1e9, default_vocab_size=1e9 + 131072),
        "config.default_num_special_tokens must be an integer from 1 to 100,000, got 1000000000.0",
    ),
    "invalid-regex": (
        lambda d: d["config"].update(pattern="(unclosed"),
        "config.pattern is not a regular expression the tokenizers library can run",
    ),
    "special-rank-string": (
        lambda d: d.update(special_tokens=[{"rank": "zero", "token_str": "<unk>"}]),
        "special_tokens must be a list of {'rank': int, 'token_str': str}",
    ),
    "vocab-not-list": (lambda d: d.update(vocab={"a": 1}), "and vocab a list"),
    "backtrack": (
        lambda d: d["config"].update(pattern="(a+)+$|" + d["config"]["pattern"]),
        "cannot encode this text: the tokenizers library stopped with Onig",
    ),
}
BACKTRACKS = "a" * 40 + "!"


def crafted(name: str, directory: Path) -> Path:
    """Write the crafted tekken file `name` (a key of CRAFTED) into `directory`, as `tekken_<name>.json`."""
    data = json.loads(SHIPPED["tekken-v3"].read_text(encoding="utf-8"))
    CRAFTED[name][0](data)
    path = directory / f"tekken_{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
