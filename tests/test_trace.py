import json
import re

from seer.loop.trace_log import TraceLog
from seer.reasoning import prompts
from seer.reasoning.trace import has_valid_format, parse_output, render_output

from conftest import CONTRACT, missing_fixture


def test_valid_output_is_parsed():
    text = "<evidence>CT pelvis</evidence>\n<rationale>rt = right</rationale>\n<answer>Segment the right hip bone.</answer>"
    trace = parse_output(text, "rt hip")
    assert trace.format_valid
    assert (trace.evidence, trace.rationale, trace.answer) == ("CT pelvis", "rt = right", "Segment the right hip bone.")
    assert trace.answer_source == "answer"


def test_tags_are_case_insensitive_and_whitespace_between_parts_is_allowed():
    text = "  <EVIDENCE>e</EVIDENCE>   <Rationale>r</Rationale>\n\n<answer> a </answer> "
    trace = parse_output(text, "x")
    assert trace.format_valid and trace.answer == "a"


def test_text_outside_the_parts_makes_the_format_invalid_but_keeps_the_answer():
    text = "Sure! <evidence>e</evidence><rationale>r</rationale><answer>Segment the liver.</answer>"
    trace = parse_output(text, "liver pls")
    assert not trace.format_valid
    assert trace.answer == "Segment the liver."


def test_wrong_order_is_invalid():
    assert not has_valid_format("<answer>a</answer><evidence>e</evidence><rationale>r</rationale>")


def test_missing_answer_falls_back_to_the_tag_stripped_text():
    trace = parse_output("<evidence>CT</evidence> Segment the spleen", "spleen?")
    assert trace.answer == "CT Segment the spleen"
    assert trace.answer_source == "stripped_text"
    assert not trace.format_valid


def test_empty_output_falls_back_to_the_raw_request():
    trace = parse_output("<evidence></evidence>  ", "  left   kidney ")
    assert trace.answer == "left kidney"
    assert trace.answer_source == "raw_request"


def test_empty_answer_tag_falls_back_to_the_raw_request():
    trace = parse_output("<evidence>e</evidence><rationale>r</rationale><answer> </answer>", "liver")
    assert trace.answer == "liver" and trace.answer_source == "raw_request"


def test_render_then_parse_round_trips():
    text = render_output("e", "r", "Segment the liver.")
    trace = parse_output(text, "liver")
    assert trace.format_valid and trace.answer == "Segment the liver."


def test_trace_log_appends_durably_and_skips_a_torn_last_line(tmp_path):
    log = TraceLog(tmp_path / "traces.jsonl")
    log.append({"request": "liver"})
    log.append({"request": "spleen"})
    with open(log.path, "a") as fp:
        fp.write('{"request": "torn')  # a crash mid-write
    rows = list(log.read())
    assert [r["request"] for r in rows] == ["liver", "spleen"]
    assert all("ts" in r for r in rows)


def _contract_blocks() -> list[str]:
    if not CONTRACT.exists():
        missing_fixture(f"{CONTRACT} not available")
    return re.findall(r"```\n(.*?)\n```", CONTRACT.read_text(), re.DOTALL)


def test_prompt_strings_equal_the_contract_character_for_character():
    blocks = _contract_blocks()
    system = next(b for b in blocks if b.startswith("You are a medical image"))
    user = next(b for b in blocks if b.startswith("Review the provided medical image slices and the raw"))
    user_skills = next(b for b in blocks if b.startswith("Review the provided medical image slices, the raw"))
    assert system == prompts.SYSTEM_PROMPT
    assert user.replace("\\n", "\n") == prompts.USER_TEXT
    assert user_skills.replace("\\n", "\n") == prompts.USER_TEXT_WITH_SKILLS
    assert "rationale.Then" in prompts.USER_TEXT_WITH_SKILLS


def test_user_text_layout_with_and_without_skills():
    class S:
        tag, content, audit = "ABBR_DISAMBIGUATE", "rt->right", "id=x"

    plain = prompts.user_text("rt hip")
    assert plain == prompts.USER_TEXT + "\n\n<raw_prompt>rt hip</raw_prompt>"
    with_skills = prompts.user_text("rt hip", [S(), S()])
    expected_blocks = "[1]\nTag: ABBR_DISAMBIGUATE\nContent: rt->right\nAudit: id=x\n[2]\nTag: ABBR_DISAMBIGUATE\nContent: rt->right\nAudit: id=x"
    assert with_skills == (
        prompts.USER_TEXT_WITH_SKILLS + "\n\n<skill_bank>\n" + expected_blocks + "\n</skill_bank>"
        + "\n\n<raw_prompt>rt hip</raw_prompt>"
    )
    messages = prompts.build_messages(["img"] * 8, "rt hip")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert [c["type"] for c in messages[1]["content"]] == ["image"] * 8 + ["text"]
    json.dumps(messages)
