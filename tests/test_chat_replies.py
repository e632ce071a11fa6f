"""The reply formats of `hf_mistral_kit.chat.replies`: one per version of the table, each as transformers'
`response_template` and as the kit's reader; text needs no tokenizer."""

from __future__ import annotations

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.chat.replies import REPLY_FORMATS, ReplyChatML, reply_format_for
from hf_mistral_kit.versions import CHATML, FORMATS, TEMPLATES, TokenizerVersion, template_version

# transformers >= 5.24 reads `response_template` (`transformers.utils.chat_parsing`); older releases have another,
# incompatible `parse_response` (a `response_schema`), and there the kit's function is the way.
try:
    from transformers.utils.chat_parsing.response_templates import load_response_template
except ImportError:
    load_response_template = None
HAS_RESPONSE_TEMPLATE = load_response_template is not None


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
