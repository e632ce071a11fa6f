"""The Mistral tokenizer files the tests compare against mistral-common, shipped or derived from shipped ones.

mistral-common ships SentencePiece v7 (`mistral_instruct_tokenizer_241114.model.v7`, and `.v7m1`: the same bytes,
which mistral-common gives an image encoder) and two tekken files of version v3 (`tekken_240718.json`, Mistral-Nemo's,
and `tekken_240911.json`, Pixtral-12B's: the same vocabulary and config plus an image config). No tekken v7, v11, v13
or v15 file ships, so the tests derive them from `tekken_240718.json` the way mistral-common itself builds tekken
tokenizers of those versions (`Tekkenizer.from_file` and its own test suite, `tests/test_tekken.py`), with the
package's derivation, `hf_mistral_kit.tokenizers.derived` (its docstring says how and why that is faithful): the
version is `config.version` and nothing else; v11 and later list their special tokens, with `[ARGS]` 32, `[CALL_ID]`
33, `[THINK]` 34 and `[/THINK]` 35 (v13 and later, not in the "-nothink" files), `[MODEL_SETTINGS]` 36 and
`[/MODEL_SETTINGS]` 37 (v15, with Mistral Small 4's `model_settings_builder`). The kit reads every id from the file,
so these ranks only decide which ids the comparison sees, never what the templates write.

Both sides load the same derived file: mistral-common with `MistralTokenizer.from_file`, the kit with
`load_tokenizer`, so each comparison is of two readers of one file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hf_mistral_kit.tokenizers.derived import derived_tekken_file
from hf_mistral_kit.tokenizers.loading import MISTRAL_COMMON_DATA
from hf_mistral_kit.versions import MistralFormat, TokenizerKind, find_format

SHIPPED = {
    "v7": MISTRAL_COMMON_DATA / "mistral_instruct_tokenizer_241114.model.v7",
    "v7m1": MISTRAL_COMMON_DATA / "mistral_instruct_tokenizer_241114.model.v7m1",
    "tekken-v3": MISTRAL_COMMON_DATA / "tekken_240718.json",
    "tekken-v3-image": MISTRAL_COMMON_DATA / "tekken_240911.json",
}
DERIVED = ("tekken-v7", "tekken-v11", "tekken-v13", "tekken-v13-nothink", "tekken-v15", "tekken-v15-nothink")


def row_of(name: str) -> MistralFormat:
    """The version table's row of a file here: "v7", "v7m1" (SentencePiece), "tekken-v3", "tekken-v3-image", ..."""
    if name.startswith("tekken-"):
        return find_format(name.split("-")[1], TokenizerKind.tekken)
    return find_format(re.match(r"v\d+", name).group(), TokenizerKind.sentencepiece)


# Every file the parity tests run on, and the kit template each must get (its row's).
TEMPLATES = {name: row_of(name).template for name in (*SHIPPED, *DERIVED) if not name.endswith("nothink")}


def derive(name: str, directory: Path) -> Path:
    """Write the derived tekken file `name` ("tekken-v7", "tekken-v11", "tekken-v13", "tekken-v13-nothink",
    "tekken-v15", "tekken-v15-nothink") into `directory`, with the package's derivation
    (`hf_mistral_kit.tokenizers.derived`, which tiny models of the later versions use too)."""
    return derived_tekken_file(name.split("-")[1], thinking=not name.endswith("nothink"), directory=directory)


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
