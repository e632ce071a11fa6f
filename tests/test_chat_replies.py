"""The reply formats of `hf_mistral_kit.chat.replies`: one per version of the table, each as transformers'
`response_template` and as the kit's reader; text needs no tokenizer."""

from __future__ import annotations

import importlib.util

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.chat.replies import REPLY_FORMATS, ReplyChatML, reply_format_for
from hf_mistral_kit.versions import CHATML, FORMATS, TEMPLATES, TokenizerVersion, template_version

# transformers 5.25 reads `response_template` from token ids (`transformers.utils.chat_parsing.token_ids`), so that a
# control token counts only as its id, as in the kit's reader: the releases the tests compare with. 5.16 to 5.24 read
# the same templates from decoded text; 5.10 (the lowest the kit supports) to 5.15 read none of them (another
# `parse_response`, a `response_schema`), and there the kit's function is the way.


def _has_token_id_parser() -> bool:
    try:  # find_spec imports the parent package, which older releases do not have
        return importlib.util.find_spec("transformers.utils.chat_parsing.token_ids") is not None
    except ModuleNotFoundError:
        return False


HAS_RESPONSE_TEMPLATE = _has_token_id_parser()
if HAS_RESPONSE_TEMPLATE:
    from transformers.utils.chat_parsing import ResponseParser
    from transformers.utils.chat_parsing.response_templates import load_response_template


def test_every_version_of_the_table_has_a_reply_format_and_a_valid_response_template():
    for row in FORMATS:
        fmt = reply_format_for(row.version)
        assert fmt.version == max(cls.version for cls in REPLY_FORMATS if cls.version <= row.version)
        # a template reads the replies of the newest version it renders (mistral_v3: v3, which reads v2's too)
        assert reply_format_for(row.template).version == reply_format_for(template_version(row.template)).version
        if HAS_RESPONSE_TEMPLATE:
            load_response_template(fmt.response_template())
    assert isinstance(reply_format_for(CHATML), ReplyChatML)
    assert len({reply_format_for(name).__class__ for name in TEMPLATES}) == len(REPLY_FORMATS) - 1 + 1  # no v2 one
    with pytest.raises(ValueError, match="Unknown tokenizer version or template 'v99'"):
        reply_format_for("v99")


def test_every_response_template_pattern_compiles_in_the_regex_module():
    """transformers compiles the templates with `regex` (recursive and duplicate named groups); checked on every
    release, also those whose transformers reads no response_template."""
    import regex

    for fmt in {reply_format_for(name).__class__: reply_format_for(name) for name in TEMPLATES}.values():
        template = fmt.response_template()
        patterns = [template.get("start_anchor_pattern")]
        for field in template["fields"].values():
            patterns += [field.get("open_pattern"), field.get("close_pattern")]
        for pattern in filter(None, patterns):
            regex.compile(pattern, regex.DOTALL)
    call = reply_format_for("v3").response_template()["fields"]["tool_calls"]
    text = '[TOOL_CALLS] [{"name": "f", "arguments": {"a": {"b": "}, {"}}, "id": "x"}, {"name": "g"'
    pattern = regex.compile(call["open_pattern"], regex.DOTALL)
    assert pattern.search(text).start() == 0  # the list's start, then the second item (not a "{" inside the first)
    assert pattern.search(text, 1).start() == text.index(', {"name": "g"') + 1


def test_text_and_versions_need_no_tokenizer():
    assert kit.parse_response("v1", " Hello</s>", "[INST] Hi [/INST]") == {"role": "assistant", "content": "Hello"}
    assert kit.parse_response("mistral_tekken_v13", "[THINK]a[/THINK]b</s>") == {
        "role": "assistant",
        "content": "b",
        "reasoning_content": "a",
    }
    assert kit.parse_response("chatml", "Hi<|im_end|>", "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n") == {
        "role": "assistant",
        "content": "Hi",
    }
    with pytest.raises(ValueError, match="need the tokenizer that made them"):
        kit.parse_response("v13", [1, 2, 3])
    assert TokenizerVersion.v13 in {cls.version for cls in REPLY_FORMATS}


@pytest.mark.skipif(not HAS_RESPONSE_TEMPLATE, reason="transformers < 5.25 has no token-id response parser")
@pytest.mark.parametrize("version", ["v3", "v13"])
def test_transformers_streams_each_call_of_a_reply_as_its_own_region(version):
    """`transformers serve` streams a tool_calls region's value as one call: a v3 list too is one region per call."""
    text = {
        "v3": '[TOOL_CALLS] [{"name": "f", "arguments": {"a": {"b": "}, {"}}, "id": "abcDEF123"}, '
        '{"name": "g", "arguments": {}, "id": "ghiJKL456"}]</s>',
        "v13": '[TOOL_CALLS]f[ARGS]{"a": {"b": "}, {"}}[TOOL_CALLS]g[ARGS]{}</s>',
    }[version]
    parser = ResponseParser(reply_format_for(version).response_template(), prefix="")
    events = [event for character in text for event in parser.feed(character)]
    message, final = parser.finalize()
    closed = [e["value"] for e in events + final if e["type"] == "region_close" and e["field"] == "tool_calls"]
    assert [call["function"]["name"] for call in closed] == ["f", "g"]
    assert message["tool_calls"] == closed == kit.parse_response(version, text)["tool_calls"]
