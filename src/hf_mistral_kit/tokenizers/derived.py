"""tekken files of every version the kit templates, derived from the one mistral-common ships, as mistral-common
builds them.

mistral-common ships tekken files of version v3 only (`tekken_240718.json`, Mistral-Nemo's; `tekken_240911.json`,
Pixtral-12B's: the same vocabulary and config plus an image config). The released files of the later versions
(Mistral-Small-24B's v7 and on, Magistral's v13, Mistral Small 4's v15) hold the same 131072-entry vocabulary, and
mistral-common's own tests build tokenizers of those versions the same way: Nemo's vocabulary, pre-tokenizer regex
and sizes, with

- `config.version`, the one thing that decides the version (`Tekkenizer.from_file` picks the instruct tokenizer, the
  validator and the normalizer from it);
- v7 and before: no `special_tokens` list (mistral-common's `Tekkenizer.DEPRECATED_SPECIAL_TOKENS`, ranks 0-19, which
  hold every control token up to v7's);
- later versions: that list, `<SPECIAL_i>` fillers, and the control tokens the version adds (`MistralFormat.controls`)
  at the ranks of Mistral's released files: `[ARGS]` 32, `[CALL_ID]` 33, `[THINK]` 34 and `[/THINK]` 35 (v13 and on,
  unless `thinking=False`: a v13 file may come without them), `[MODEL_SETTINGS]` 36 and `[/MODEL_SETTINGS]` 37 (v15);
- v15: Mistral Small 4's `model_settings_builder` (`versions.SMALL_4_MODEL_SETTINGS`).

mistral-common and the kit look control tokens up by name, so the ranks decide the ids, never the format. The tests
compare the kit with mistral-common on these files, and `tiny_model` gives tiny models of the later versions their
tokenizer from here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..hub import cache_dir
from ..versions import (
    ARGS,
    CALL_ID,
    MODEL_SETTINGS,
    MODEL_SETTINGS_END,
    SMALL_4_MODEL_SETTINGS,
    THINK_TOKENS,
    TokenizerKind,
    TokenizerVersion,
    find_format,
    versions,
)
from .loading import reference_tokenizer_file

# The ranks of the control tokens added after v7 in Mistral's released tekken files.
RANKS = {ARGS: 32, CALL_ID: 33, THINK_TOKENS[0]: 34, THINK_TOKENS[1]: 35, MODEL_SETTINGS: 36, MODEL_SETTINGS_END: 37}
FILLER = "<SPECIAL_{}>"  # mistral-common's name for the special ids a file leaves unnamed


def derived_tekken_data(version: str | TokenizerVersion, *, thinking: bool = True) -> dict[str, Any]:
    """The contents of a tekken file of `version` ("v3" ... "v15") derived from Mistral-Nemo's (see the module
    docstring). `thinking=False` leaves out [THINK] and [/THINK] (v13 and later)."""
    row = find_format(getattr(version, "value", version), TokenizerKind.tekken)
    if row is None:
        raise ValueError(
            f"Unknown tekken version {version!r}; expected one of {', '.join(versions(TokenizerKind.tekken))}."
        )
    data = json.loads(reference_tokenizer_file(TokenizerKind.tekken.value).read_text(encoding="utf-8"))
    data["config"]["version"] = row.version.value
    if not row.default_special_tokens:
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer

        tokens = [
            {"rank": t["rank"], "token_str": str(getattr(t["token_str"], "value", t["token_str"])), "is_control": True}
            for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS
        ]
        deprecated = {token["token_str"] for token in tokens}
        added = [token for token in row.controls() if token not in deprecated]
        if thinking and row.version >= TokenizerVersion.v13:
            added += THINK_TOKENS
        named = {RANKS[token]: token for token in added}
        for rank in range(len(tokens), max(named) + 1):
            tokens.append({"rank": rank, "token_str": named.get(rank, FILLER.format(rank)), "is_control": True})
        data["special_tokens"] = tokens
    if row.version >= TokenizerVersion.v15:
        data["model_settings_builder"] = SMALL_4_MODEL_SETTINGS
    return data


def derived_tekken_file(
    version: str | TokenizerVersion, *, thinking: bool = True, directory: str | os.PathLike | None = None
) -> Path:
    """A tekken file of `version` derived from Mistral-Nemo's (`derived_tekken_data`), written once into `directory`
    (the kit's cache, `tokenizers/`, by default) as `tekken_<version>.json` (`tekken_<version>_nothink.json` with
    `thinking=False`), and its path. The name holds "tekken" and ends in .json: mistral-common, vLLM and the kit tell
    a tekken file by that."""
    data = derived_tekken_data(version, thinking=thinking)
    directory = Path(directory) if directory is not None else cache_dir() / "tokenizers"
    file_version = TokenizerVersion(data["config"]["version"])
    suffix = "_nothink" if not thinking and file_version >= TokenizerVersion.v13 else ""
    path = directory / f"tekken_{file_version}{suffix}.json"
    content = json.dumps(data).encode("utf-8")
    if path.is_file() and path.read_bytes() == content:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{path.name}.", delete=False) as staging:
        staging.write(content)
    os.replace(staging.name, path)  # whole or not at all, also for processes writing it at once
    return path
