"""hf_mistral_kit.tokenizers.derived: the tekken files of every version derived from Mistral-Nemo's, as mistral-common
builds them (the parity tests' files, and the tokenizers of tiny models of the later versions)."""

import json

import pytest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

import hf_mistral_kit as kit
from hf_mistral_kit.tokenizers.derived import RANKS, derived_tekken_data, derived_tekken_file
from hf_mistral_kit.versions import SMALL_4_MODEL_SETTINGS, TokenizerKind, TokenizerVersion, find_format, versions

TEKKEN = versions(TokenizerKind.tekken)


@pytest.mark.parametrize("version", TEKKEN)
def test_each_tekken_version_derives_a_file_mistral_common_reads_as_that_version(version, tmp_path):
    path = derived_tekken_file(version, directory=tmp_path)
    assert path == tmp_path / f"tekken_{version}.json"
    reference = MistralTokenizer.from_file(str(path))
    instruct = reference.instruct_tokenizer
    assert instruct.tokenizer.version.value == version
    assert type(instruct).__name__ == f"InstructTokenizerV{version[1:]}"
    tokenizer = kit.load_tokenizer(path)
    assert tokenizer.mistral_version == version and len(tokenizer) == 131072
    row = find_format(version, TokenizerKind.tekken)
    thinks = row.version >= TokenizerVersion.v13
    for token in [*row.controls(), *(["[THINK]", "[/THINK]"] if thinks else [])]:
        rank = instruct.tokenizer.get_special_token(token)
        assert tokenizer.convert_tokens_to_ids(token) == rank == RANKS.get(token, rank)
    builder = instruct.tokenizer.model_settings_builder
    expected = SMALL_4_MODEL_SETTINGS if row.version >= TokenizerVersion.v15 else None
    assert (builder.model_dump(mode="json", exclude_none=True) if builder else None) == expected
    assert tokenizer.model_settings_builder == expected


def test_without_thinking_and_in_the_cache(tmp_path, monkeypatch):
    """thinking=False leaves [THINK] and [/THINK] out (v13 and later); by default the file goes into the kit's cache,
    written once."""
    plain = derived_tekken_file("v15", thinking=False, directory=tmp_path)
    assert plain.name == "tekken_v15_nothink.json"
    names = {token["token_str"] for token in json.loads(plain.read_text())["special_tokens"]}
    assert "[THINK]" not in names and {"[MODEL_SETTINGS]", "[/MODEL_SETTINGS]"} <= names
    assert derived_tekken_file("v11", thinking=False, directory=tmp_path).name == "tekken_v11.json"
    monkeypatch.setenv("HF_MISTRAL_KIT_CACHE", str(tmp_path / "cache"))
    path = derived_tekken_file(TokenizerVersion.v15)
    assert path == tmp_path / "cache" / "tokenizers" / "tekken_v15.json"
    written = path.stat().st_mtime_ns
    assert derived_tekken_file("v15") == path and path.stat().st_mtime_ns == written
    assert json.loads(path.read_text()) == derived_tekken_data("v15")
    with pytest.raises(ValueError, match="Unknown tekken version 'v1'; expected one of v3, v7, v11, v13, v15"):
        derived_tekken_file("v1")
