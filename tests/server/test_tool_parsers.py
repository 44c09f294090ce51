"""Tool-call parsers and the reasoning split on canned model outputs: every format, text
around calls, several calls, malformed calls; and the streamed split (the text cut at every
character) equal to the whole-text one. Tool grammars checked with llguidance against the
default model's tokenizer: they accept valid calls and refuse invalid ones."""

from __future__ import annotations

import json

import llguidance
import pytest

from jaxengine.config import REASONING_PARSERS, TOOL_CALL_PARSERS
from server import reasoning
from server.tools.formats import FORMATS, format_for
from server.tools.grammar import after_reasoning, tool_grammar
from server.tools.parser import Parsed, ToolCallParser

NAMES = {"get_weather", "now"}
WEATHER = {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"},
                                     "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}
NOW = {"name": "now", "parameters": {"type": "object", "properties": {}}}

H1 = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
H2 = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
DS = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')

# (format, model output, expected content, expected [(name, arguments)])
CASES = [
    ("qwen25", H1, "", [("get_weather", {"city": "Paris"})]),
    ("qwen25", f"Let me check.\n{H1}\n{H2}\n", "Let me check.",
     [("get_weather", {"city": "Paris"}), ("now", {})]),
    ("qwen25", "No tools needed: 2 < 3.", "No tools needed: 2 < 3.", []),
    ("qwen25", '<tool_call>\n[{"name": "now", "arguments": {}}]\n</tool_call>', "", [("now", {})]),
    ("qwen25", '<tool_call>\n{"name": "now", "arguments": "{}"}\n</tool_call>', "", [("now", {})]),
    ("qwen25", '<tool_call>\n{"name": "now", "arguments": {}}', "", [("now", {})]),  # EOS, no end
    ("qwen25", '<tool_call>\n{"name": "now", "argu', '<tool_call>\n{"name": "now", "argu', []),
    ("qwen25", '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',
     '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>', []),  # not offered
    ("qwen25", f"{H1} and then some text", "and then some text",
     [("get_weather", {"city": "Paris"})]),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "",
     [("get_weather", {"city": "Paris"})]),
    ("llama3", '<|python_tag|>{"name": "now", "parameters": {}}; {"name": "get_weather", '
     '"arguments": {"city": "Rome"}}', "", [("now", {}), ("get_weather", {"city": "Rome"})]),
    ("llama3", 'A dict looks like {"a": 1}.', 'A dict looks like {"a": 1}.', []),
    ("llama3", '{"name": "now", "parameters": {]}', '{"name": "now", "parameters": {]}', []),
    ("qwen25", '<tool_call>\n[{"name": "now", "arguments": {}]\n</tool_call>',
     '<tool_call>\n[{"name": "now", "arguments": {}]\n</tool_call>', []),  # malformed
    ("mistral", '[TOOL_CALLS] [{"name": "now", "arguments": {}}, {"name": "get_weather", '
     '"arguments": {"city": "Oslo"}}]', "", [("now", {}), ("get_weather", {"city": "Oslo"})]),
    ("mistral", 'Sure. [TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}', "Sure.",
     [("get_weather", {"city": "Oslo"})]),
    ("pythonic", '[get_weather(city="Paris", unit="c"), now()]', "",
     [("get_weather", {"city": "Paris", "unit": "c"}), ("now", {})]),
    ("pythonic", "Lists look like [1, 2].", "Lists look like [1, 2].", []),
    ("pythonic", '<|python_start|>[now()]<|python_end|>', "", [("now", {})]),
    ("pythonic", '[get_weather(city=true)]', "", [("get_weather", {"city": True})]),
    ("deepseekv3", "Checking. " + DS, "Checking.", [("get_weather", {"city": "Paris"})]),
]


def _calls(parsed: Parsed) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in parsed.calls]


def _streamed(parser: ToolCallParser, text: str, cuts: list[int]) -> Parsed:
    out = Parsed()
    for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
        out += parser.feed(text[a:b])
    out += parser.finish()
    return out


@pytest.mark.parametrize(("name", "text", "content", "calls"), CASES)
def test_whole_text(name: str, text: str, content: str, calls: list) -> None:
    parsed = ToolCallParser(FORMATS[name](), NAMES).parse(text)
    assert (parsed.content, _calls(parsed)) == (content, calls)
    assert [c.index for c in parsed.calls] == list(range(len(calls)))


@pytest.mark.parametrize(("name", "text", "content", "calls"), CASES)
def test_every_split_streams_the_same(name: str, text: str, content: str, calls: list) -> None:
    for cut in range(1, len(text)):
        parsed = _streamed(ToolCallParser(FORMATS[name](), NAMES), text, [cut])
        assert (parsed.content, _calls(parsed)) == (content, calls), cut
    one_by_one = _streamed(ToolCallParser(FORMATS[name](), NAMES), text,
                           list(range(1, len(text))))
    assert (one_by_one.content, _calls(one_by_one)) == (content, calls)


def test_ids_and_arguments_as_openai_sends_them() -> None:
    call = ToolCallParser(FORMATS["qwen25"](), NAMES).parse(H1).calls[0]
    assert call.id.startswith("call_") and len(call.id) == 29
    assert call.openai() == {"id": call.id, "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    mistral = ToolCallParser(FORMATS["mistral"](), NAMES).parse(
        '[TOOL_CALLS][{"name": "now", "arguments": {}}]').calls[0]
    assert len(mistral.id) == 9 and mistral.id.isalnum()  # what Mistral's templates demand


def test_default_format_follows_the_chat_template() -> None:
    assert format_for(None, "... <tool_call> ...").name == "qwen25"
    assert format_for(None, "{{ '<|python_tag|>' }}").name == "llama3"
    assert format_for(None, "[AVAILABLE_TOOLS]").name == "mistral"
    assert format_for(None, "<｜tool▁calls▁begin｜>").name == "deepseekv3"
    assert format_for(None, None).name == "qwen25"  # the fallback prompt's format
    assert format_for("pythonic", "<tool_call>").name == "pythonic"


def test_cli_choices_are_the_implemented_parsers() -> None:
    assert set(TOOL_CALL_PARSERS) == set(FORMATS)
    assert set(REASONING_PARSERS) == set(reasoning.REASONING_PARSERS)


# ---- the grammars ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def lltokenizer():
    from jaxengine.models.checkpoint import load_checkpoint
    from jaxengine.structured.backend import GrammarBackend

    tokenizer = load_checkpoint(None).tokenizer
    return tokenizer, GrammarBackend(tokenizer, len(tokenizer), [tokenizer.eos_token_id])._llt()


def _accepts(lltokenizer, grammar: str, text: str) -> bool:
    tokenizer, llt = lltokenizer
    matcher = llguidance.LLMatcher(llt, llguidance.grammar_from("lark", grammar), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and \
        matcher.is_accepting()


GRAMMAR_CASES = [  # (format, text, valid under required, valid under auto)
    ("qwen25", '<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}\n</tool_call>',
     True, True),
    ("qwen25", 'Hi <tool_call>\n{"name":"now","arguments":{}}\n</tool_call> bye', False, True),
    ("qwen25", "Just text.", False, True),
    ("qwen25", '<tool_call>\n{"name":"nope","arguments":{}}\n</tool_call>', False, False),
    ("qwen25", '<tool_call>\n{"name":"get_weather","arguments":{"unit":"c"}}\n</tool_call>',
     False, False),  # the required city is missing
    ("qwen25", '<tool_call>\n{"name":"get_weather","arguments":{"city":"P","x":1}}\n'
     '</tool_call>', False, False),  # a key the schema does not have
    ("llama3", '{"name":"get_weather","parameters":{"city":"Paris"}}; '
     '{"name":"now","parameters":{}}', True, True),
    ("llama3", "plain text", False, True),
    ("mistral", '[TOOL_CALLS][{"name":"now","arguments":{}}]', True, True),
    ("pythonic", '[get_weather(city="Paris", unit="f"), now()]', True, True),
    ("pythonic", '[get_weather(unit="f")]', False, False),
]


@pytest.mark.parametrize(("name", "text", "required_ok", "auto_ok"), GRAMMAR_CASES)
def test_tool_grammars(lltokenizer, name: str, text: str, required_ok: bool,
                       auto_ok: bool) -> None:
    fmt = FORMATS[name]()
    for required, ok in ((True, required_ok), (False, auto_ok)):
        grammar = tool_grammar(fmt, [WEATHER, NOW], required, True, {})
        assert _accepts(lltokenizer, grammar, text) == ok, (required, grammar)
        if ok:  # and what the grammar lets through, the parser reads as the calls
            parsed = ToolCallParser(fmt, NAMES).parse(text)
            assert parsed.calls or not required


def test_single_call_and_reasoning_grammars(lltokenizer) -> None:
    fmt = FORMATS["qwen25"]()
    two = f"{H2}\n{H2}".replace(": ", ":").replace(", ", ",")
    assert _accepts(lltokenizer, tool_grammar(fmt, [NOW], True, True, {}), two)
    assert not _accepts(lltokenizer, tool_grammar(fmt, [NOW], True, False, {}), two)
    think = "<think>I should call now.</think>" + two
    assert _accepts(lltokenizer, tool_grammar(fmt, [NOW], True, True, {},
                                              reasoning="optional"), think)
    assert _accepts(lltokenizer, tool_grammar(fmt, [NOW], True, True, {}, reasoning="open"),
                    think[len("<think>"):])
    answer = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    with_answer = tool_grammar(fmt, [NOW], False, True, {}, answer=answer)
    assert _accepts(lltokenizer, with_answer, '{"x":3}')
    assert not _accepts(lltokenizer, with_answer, "free text")
    # response_format after a reasoning part (no tools)
    for start, text, ok in (("optional", '<think>hm, 3</think>{"x":3}', True),
                            ("optional", '{"x":3}', True), ("optional", "<think>a</think>b", False),
                            ("open", 'hm</think>{"x":3}', True), ("open", '{"x":3}', False)):
        assert _accepts(lltokenizer, after_reasoning(answer, start, {}), text) == ok, text


# ---- reasoning -------------------------------------------------------------------------

REASONING_CASES = [  # (start, text, reasoning, content)
    ("optional", "<think>Two and two.</think>\n\nFour.", "Two and two.", "Four."),
    ("optional", "Four.", "", "Four."),
    ("optional", "<thin", "", "<thin"),
    ("open", "Two and two.\n</think>\n\nFour.", "Two and two.\n", "Four."),
    ("open", "Still thinking", "Still thinking", ""),  # cut off: all of it is reasoning
    ("open", "a</think>", "a", ""),
    ("open", "<think>a</think>b", "a", "b"),  # an R1 distill that writes the tag anyway
    ("open", "<th", "<th", ""),
]


@pytest.mark.parametrize(("start", "text", "thought", "content"), REASONING_CASES)
def test_reasoning_split_streams_the_same(start: str, text: str, thought: str,
                                         content: str) -> None:
    assert reasoning.split_reasoning(text, start) == (thought, content)
    for cut in range(1, len(text)):
        splitter = reasoning.ReasoningSplitter(start)
        parts = [splitter.feed(text[:cut]), splitter.feed(text[cut:]), splitter.finish()]
        assert ("".join(p[0] for p in parts), "".join(p[1] for p in parts)) == \
            (thought, content), cut


def test_reasoning_start_from_the_prompt() -> None:
    assert reasoning.reasoning_start("deepseek-r1", "<|Assistant|>") == "open"
    assert reasoning.reasoning_start("qwen3", "<|im_start|>assistant\n<think>\n") == "open"
    assert reasoning.reasoning_start(
        "qwen3", "<|im_start|>assistant\n<think>\n\n</think>\n\n") == "optional"
    assert reasoning.reasoning_start("qwen3", "<|im_start|>assistant\n") == "optional"


def test_schemas_with_defs(lltokenizer) -> None:
    """Pydantic-made schemas (LangChain, the Agents SDK) keep nested models in $defs; embedded
    in a call object, their references still resolve."""
    point = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    tool = {"name": "plot", "parameters": {
        "$defs": {"Point": point}, "type": "object",
        "properties": {"at": {"$ref": "#/$defs/Point"}}, "required": ["at"]}}
    for name, good, bad in (
            ("qwen25", '<tool_call>\n{"name":"plot","arguments":{"at":{"x":1}}}\n</tool_call>',
             '<tool_call>\n{"name":"plot","arguments":{"at":{"y":1}}}\n</tool_call>'),
            ("pythonic", '[plot(at={"x":1})]', '[plot(at={"x":"a"})]')):
        grammar = tool_grammar(FORMATS[name](), [tool, NOW], True, True, {})
        assert _accepts(lltokenizer, grammar, good) and not _accepts(lltokenizer, grammar, bad)


def test_hermes_arguments_stream_as_written() -> None:
    """The id and name go out once the name is read, then the arguments in pieces; a call cut
    off (max_tokens) keeps what was written, streamed or not, as OpenAI's truncated calls do."""
    from server.tools.parser import ArgsDelta, CallStart

    parser = ToolCallParser(FORMATS["qwen25"](), NAMES)
    items = [item for ch in H1 for item in parser.feed(ch).items] + parser.finish().items
    starts = [i for i, item in enumerate(items) if isinstance(item, CallStart)]
    pieces = [item.text for item in items if isinstance(item, ArgsDelta)]
    assert len(starts) == 1 and starts[0] == 0 and len(pieces) == len('{"city": "Paris"}')
    assert "".join(pieces) == '{"city": "Paris"}'
    cut = H1[:H1.index("Paris") + 2]
    whole = ToolCallParser(FORMATS["qwen25"](), NAMES).parse(cut)
    streamed = _streamed(ToolCallParser(FORMATS["qwen25"](), NAMES), cut, list(range(1, len(cut))))
    for parsed in (whole, streamed):
        assert parsed.content == ""
        assert [(c.name, c.arguments) for c in parsed.calls] == [("get_weather", '{"city": "Pa')]
