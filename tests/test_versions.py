"""hf_mistral_kit.versions: the ordered tokenizer versions and the one table of what each means to the kit. Every
per-version table the kit had is derived from `FORMATS` now; each test here derives one of them, row by row, and
checks it against what the kit does and what mistral-common does for that version."""

from __future__ import annotations

import json
import re

import pytest
from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
from mistral_common.tokens.tokenizers.base import TokenizerVersion as ReferenceVersion
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

import hf_mistral_kit as kit
from hf_mistral_kit.chat.normalization import NORMALIZERS, normalizer_for
from hf_mistral_kit.chat.validation import VALIDATORS, ValidatorChatML, validator_for
from hf_mistral_kit.cli import TEMPLATES as CLI_TEMPLATES
from hf_mistral_kit.cli.render import template_tokenizer
from hf_mistral_kit.formats.gguf_vocabulary import add_space_prefix
from hf_mistral_kit.versions import (
    CHATML,
    FORMATS,
    REFERENCE_FORMATS,
    TEMPLATES,
    TokenizerKind,
    TokenizerVersion,
    find_format,
    sentencepiece_version,
    template_format,
    template_models,
    template_version,
)

ROWS = {f"{row.kind}-{row.version}": row for row in FORMATS}
SENTENCEPIECE = [name for name, row in ROWS.items() if row.kind is TokenizerKind.sentencepiece]
TEKKEN = [name for name, row in ROWS.items() if row.kind is TokenizerKind.tekken]


def test_versions_are_ordered_as_mistral_commons():
    ours = sorted(TokenizerVersion)
    assert [v.value for v in ours] == ["v1", "v2", "v3", "v7", "v11", "v13", "v15"]
    assert [ReferenceVersion(v.value).version_num for v in ours] == [v.number for v in ours]
    assert TokenizerVersion.v11 > "v7" and TokenizerVersion.v2 < TokenizerVersion.v3 <= "v3"
    assert sorted(["v13", "v2", "v11"], key=TokenizerVersion) == ["v2", "v11", "v13"]


def test_each_row_is_one_version_of_one_kind_with_a_shipped_template():
    assert len(ROWS) == len(FORMATS)
    for row in FORMATS:
        assert row.template in kit.list_templates()
        assert find_format(row.version.value, row.kind.value) is row


def test_templates_and_the_cli_choices_derive_from_the_table():
    """Was: the CLI's TEMPLATES and conversation.TEMPLATE_VERSIONS."""
    assert list(TEMPLATES) == kit.list_templates() == sorted({row.template for row in FORMATS} | {CHATML})
    assert CLI_TEMPLATES is TEMPLATES
    for template in TEMPLATES:
        rows = [row for row in FORMATS if row.template == template]
        assert template_version(template) == (max(row.version for row in rows) if rows else None)


def test_template_models_derive_from_the_table():
    """Was: templates.TEMPLATE_MODELS and each rule class's `models`."""
    for template in TEMPLATES:
        row = template_format(template)
        assert template_models(template).startswith(row.models if row else "Mistral-7B-OpenOrca")
    with pytest.raises(kit.ConversationError, match=rf"mistral_v1 \({template_format('mistral_v1').models}\) has no"):
        kit.render([{"role": "user", "content": "hi"}], "mistral_v1", tools=[{"function": {"name": "f"}}])


@pytest.mark.parametrize("name", list(ROWS))
def test_rule_classes_follow_mistral_commons_validators(name):
    """Was: conversation._RULES. The validator a version gets mirrors mistral-common's `get_validator`."""
    row = ROWS[name]
    validator, normalizer = validator_for(row.version), normalizer_for(row.version)
    assert validator.version == max(c.version for c in VALIDATORS if c.version <= row.version)
    assert normalizer.version == max(c.version for c in NORMALIZERS if c.version <= row.version)
    reference = type(get_validator(ReferenceVersion(row.version.value), ValidationMode.test)).__name__
    assert f"`{reference}`" in validator.__doc__ or (reference == "MistralRequestValidator" and row.version.number < 3)
    assert validator.tool_calling == (row.version >= "v3") and validator.thinking == (row.version >= "v13")
    assert validator_for(None) is ValidatorChatML


@pytest.mark.parametrize("name", list(REFERENCE_FORMATS))
def test_reference_files_load_as_their_row_says(name):
    """Was: tokenizer.REFERENCE_TOKENIZER_FILES, TEMPLATE_FOR_VERSION, TEKKEN_TEMPLATE_FOR_VERSION, the version guessed
    from a vocabulary, and tiny's TOKENIZERS."""
    row = REFERENCE_FORMATS[name]
    path = kit.reference_tokenizer_file(name)
    assert path.name == row.reference_file and path.is_file()
    tokenizer = kit.load_tokenizer(path)
    reference = MistralTokenizer.from_file(str(path))
    assert tokenizer.mistral_version == row.version == reference.instruct_tokenizer.tokenizer.version.value
    assert tokenizer.kind is row.kind and tokenizer.kit_template == row.template
    assert tokenizer.chat_template == kit.get_chat_template(row.template)
    if row.kind is TokenizerKind.sentencepiece:
        assert sentencepiece_version(tokenizer.get_vocab()) is row.version
        assert tokenizer.legacy == row.prefix_every_segment
    assert template_tokenizer(row.template) == (name if row.version == template_version(row.template) else "v3")


def test_tiny_models_take_every_reference_file():
    with pytest.raises(ValueError, match=f"tokenizer must be one of {', '.join(REFERENCE_FORMATS)}, got 'v9'"):
        kit.tiny_model(tokenizer="v9")
    path = kit.tiny_model(tokenizer="v2")
    assert (path / REFERENCE_FORMATS["v2"].file_name).is_file()
    assert kit.AutoTokenizer.from_pretrained(path).mistral_version == "v2"


@pytest.mark.parametrize("name", SENTENCEPIECE)
def test_gguf_add_space_prefix_is_the_dummy_prefix_rule(name):
    """Was: gguf.ADD_SPACE_PREFIX."""
    row = ROWS[name]
    assert add_space_prefix(row.version.value) is row.prefix_every_segment is (row.version == "v1")


@pytest.mark.parametrize("name", TEKKEN)
def test_tekken_controls_are_what_mistral_common_needs(name, mistral_file):
    """Was: tokenizer._TEKKEN_CONTROLS. A file of the version carries them, and one without any of them is refused by
    both mistral-common and the kit."""
    row = ROWS[name]
    path = mistral_file(f"tekken-{row.version}")
    reference = MistralTokenizer.from_file(str(path)).instruct_tokenizer.tokenizer
    specials = {reference.id_to_piece(i) for i in range(reference.num_special_tokens)}
    assert set(row.controls()) <= specials
    earlier = [other for other in FORMATS if other.kind is row.kind and other.version < row.version]
    assert set(row.controls()) == {token for other in [*earlier, row] for token in other.new_controls}
    for token in row.new_controls:
        data = json.loads(path.read_text())
        data.setdefault("special_tokens", None)
        if data["special_tokens"] is None:
            continue  # v3/v7 files list no special tokens: mistral-common's defaults always have them
        data["special_tokens"] = [
            {**t, "token_str": f"<SPECIAL_{t['rank']}>"} if t["token_str"] == token else t
            for t in data["special_tokens"]
        ]
        broken = path.with_name(f"{path.stem}-without.json")
        broken.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"without the control tokens {re.escape(token)}"):
            kit.load_tokenizer(broken)
        with pytest.raises(Exception):  # noqa: B017  mistral-common's own error
            MistralTokenizer.from_file(str(broken))
