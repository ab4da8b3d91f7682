import json

import pytest

from seer.errors import BadRequest
from seer.reasoning.parser import Parser
from seer.reasoning.skills import TAGS, Skill, SkillBank, request_style, skill_id_for


def test_starter_bank_follows_the_contract_schema():
    bank = SkillBank.starter()
    assert len(bank) >= 10
    assert {s.tag for s in bank.skills.values()} == set(TAGS)
    for skill in bank.skills.values():
        assert skill.skill_id == skill_id_for(skill.source_key, skill.content)
        assert skill.skill_id.startswith("seer:") and len(skill.skill_id) == 17
        assert skill.audit.startswith(f"id={skill.skill_id};")


def test_save_is_atomic_and_round_trips(tmp_path):
    bank = SkillBank.starter()
    path = bank.save(tmp_path / "bank.jsonl")
    again = SkillBank.load(path)
    assert again.payload() == bank.payload()
    assert SkillBank(again.skills.values()).version == again.version  # the file's hash is the content's
    assert not list(tmp_path.glob("*.tmp-*"))


def test_bad_rows_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bank.jsonl"
    path.write_text(json.dumps(SkillBank.starter().skills.popitem()[1].to_dict()) + "\n{oops\n")
    with pytest.raises(BadRequest, match="line 2"):
        SkillBank.load(path)
    path.write_text(json.dumps({"skill_id": "seer:x", "tag": "NOPE", "content": "c"}) + "\n")
    with pytest.raises(BadRequest, match="unknown tag"):
        SkillBank.load(path)


@pytest.mark.parametrize(
    "raw,style",
    [
        ("rt hip", "abbr_or_short"),
        ("hipocampus lft pls", "messy_or_misspelled"),
        ("Findings: 3 cm lesion near the sacrum", "report_style"),
        ("contour the liver for radiotherapy planning", "clinical_request"),
        ("I would like you to carefully outline the left hippocampus on all of the slices where it is visible please", "verbose_request"),
        ("Segment the white matter of the brain.", "formal_task"),
    ],
)
def test_request_style_comes_from_the_text(raw, style):
    parser = Parser()
    assert request_style(raw, parser.parse(raw)) == style


def test_out_of_region_style_needs_the_image_region():
    parser = Parser()
    parsed = parser.parse("left hippocampus")
    assert request_style("left hippocampus", parsed, "body") == "out_of_region_reference"
    assert request_style("left hippocampus", parsed, "head") != "out_of_region_reference"


@pytest.mark.parametrize(
    "raw,cue,tag",
    [
        ("hipocampus lft plz", "BRAIN_LESION", "MESSY_INPUT_REPAIR"),
        ("rt hip", "PELVIC_BONES", "ABBR_DISAMBIGUATE"),
        ("Findings: mass abutting the sacrum", "PELVIC_BONES", "REPORT_STYLE_PARSE"),
        ("please contour the liver for planning", "ABDOMINAL_ORGANS", "CLINICAL_REQUEST_NORMALIZE"),
    ],
)
def test_retrieval_uses_only_request_text_and_image_cue(raw, cue, tag):
    bank = SkillBank.starter()
    parser = Parser()
    hits = bank.retrieve(bank.cue(raw, parser.parse(raw), cue, None), parser)
    assert hits, "nothing retrieved"
    assert hits[0][0].tag == tag
    assert all(score >= 8.0 for _, score in hits)


def test_nothing_is_retrieved_for_an_unrelated_request():
    bank = SkillBank.starter()
    parser = Parser()
    raw = "asdf"
    assert bank.retrieve(bank.cue(raw, parser.parse(raw), "GENERIC_MEDICAL_IMAGE", None), parser) == []


def test_an_empty_bank_is_a_valid_bank(tmp_path):
    """A team that starts without skills, or a round that retired them all: retrieval finds nothing, no error."""
    (tmp_path / "empty.jsonl").write_bytes(b"")
    bank = SkillBank.load(tmp_path / "empty.jsonl")
    parser = Parser()
    raw = "lt kidney"
    cue = bank.cue(raw, parser.parse(raw), "ABDOMINAL_ORGANS", "abdomen")
    assert len(bank) == 0 and bank.index(parser).size == 0
    assert bank.retrieve(cue, parser, min_score=0.0) == [] == bank.retrieve_scan(cue, parser, min_score=0.0)
    assert bank.payload() == b""
    wordless = Skill(skill_id="seer:abc", source_key="k", tag="", content="->", audit="")  # no content words
    assert SkillBank([wordless]).retrieve(cue, parser, min_score=0.0) == [(wordless, 0.0)]


def test_skill_from_dict_fills_defaults():
    skill = Skill.from_dict({"skill_id": "seer:abc", "tag": "PROMPT_NORMALIZE", "content": "target=x"})
    assert skill.aliases == [] and skill.dice_gain == 0.0
