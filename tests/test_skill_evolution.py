"""The contract's skill-evolution rules on hand-made reward sequences: credit, utility and retirement, harvest,
merge, cap, and rounds on disk; and the retrieval index against the reference's linear scan."""

from __future__ import annotations

import json
import random

import pytest

from seer.errors import BadRequest
from seer.loop.skill_rounds import SkillRounds
from seer.reasoning.parser import Parser
from seer.reasoning.skills import (
    STYLE_TO_TAG,
    EvolutionSettings,
    RequestCue,
    RewardedTrace,
    Skill,
    SkillBank,
    credited_skills,
    evolve,
    harvest_skill,
    skill_id_for,
)


def skill(n: int, tag="ABBR_DISAMBIGUATE", canonical="liver", dataset="ds", dice_gain=0.0, aliases=None, **kw) -> Skill:
    content = f"rule {n}->Segment the {canonical}."
    return Skill(skill_id=skill_id_for(f"k{n}", content), source_key=f"k{n}", tag=tag, content=content,
                 audit=f"a{n}", dataset=dataset, style_bucket="abbr_or_short", canonical=canonical,
                 aliases=aliases if aliases is not None else [f"alias{n}"], dice_gain=dice_gain, **kw)


def reward(n: int, dice: float, raw: float, credited=(), request=None, style="abbr_or_short", valid=True,
           target="liver") -> RewardedTrace:
    return RewardedTrace(trace_id=f"t{n}", study=f"study{n % 3}", request=request or f"request {n}",
                         answer=f"Segment the {target}.", target=target, style=style, vis_cue="ABDOMINAL_ORGANS",
                         format_valid=valid, credited=tuple(credited), dice=dice, raw_dice=raw, dataset="ds")


NO_HARVEST = EvolutionSettings(harvest_min_dice=2.0)  # isolates the other rules


# -- credit ----------------------------------------------------------------------------------------------------------
def test_credit_prefers_ids_then_ranks_then_tags_else_the_top_retrieved():
    tags = {"seer:a": "ABBR_DISAMBIGUATE", "seer:b": "MESSY_INPUT_REPAIR", "seer:c": "ABBR_DISAMBIGUATE"}
    retrieved = ["seer:a", "seer:b", "seer:c"]
    assert credited_skills("Chose skill [2] MESSY_INPUT_REPAIR (seer:b): ...", retrieved, tags) == ["seer:b"]
    assert credited_skills("I apply skill [3] here", retrieved, tags) == ["seer:c"]
    assert credited_skills("the ABBR_DISAMBIGUATE rule fits", retrieved, tags) == ["seer:a", "seer:c"]
    assert credited_skills("no skill named", retrieved, tags) == ["seer:a"]
    assert credited_skills("anything", [], tags) == []


# -- utility and retirement ---------------------------------------------------------------------------------------------
def test_utility_is_gains_minus_penalty_times_drops_and_sets_dice_gain():
    s = skill(1)
    bank = SkillBank([s])
    rewards = [reward(1, 0.9, 0.5, [s.skill_id]), reward(2, 0.8, 0.7, [s.skill_id]), reward(3, 0.6, 0.65, [s.skill_id])]
    new, report = evolve(bank, rewards, 1, 3, EvolutionSettings(penalty=2.0, harvest_min_dice=2.0))
    out = new.skills[s.skill_id]
    assert out.uses == 3
    assert out.gain_sum == pytest.approx(0.5) and out.drop_sum == pytest.approx(0.05)
    assert out.utility == pytest.approx(0.5 - 2 * 0.05)
    assert out.dice_gain == pytest.approx(0.4 / 3, abs=1e-6)  # stored to 6 decimals
    assert report.credited == {s.skill_id: 3} and not report.retired
    assert [p["trace_id"] for p in out.provenance] == ["t1", "t2", "t3"]


def test_a_skill_whose_utility_falls_below_zero_retires_and_the_penalty_decides():
    s = skill(1)
    rewards = [reward(1, 0.9, 0.6, [s.skill_id]), reward(2, 0.5, 0.7, [s.skill_id])]  # +0.3, -0.2
    kept, report = evolve(SkillBank([s]), rewards, 1, 2, EvolutionSettings(penalty=1.0, harvest_min_dice=2.0))
    assert s.skill_id in kept.skills and kept.skills[s.skill_id].utility == pytest.approx(0.1)
    gone, report = evolve(SkillBank([s]), rewards, 1, 2, EvolutionSettings(penalty=2.0, harvest_min_dice=2.0))
    assert s.skill_id not in gone.skills and report.retired == [s.skill_id]


def test_utility_accumulates_across_rounds_and_the_input_bank_is_not_edited():
    s = skill(1)
    first, _ = evolve(SkillBank([s]), [reward(1, 0.9, 0.6, [s.skill_id])], 1, 1, NO_HARVEST)
    second, report = evolve(first, [reward(2, 0.5, 0.6, [s.skill_id])], 2, 2, NO_HARVEST)
    assert second.skills[s.skill_id].uses == 2
    assert second.skills[s.skill_id].utility == pytest.approx(0.3 - 2 * 0.1)
    assert s.uses == 0 and first.skills[s.skill_id].uses == 1  # copies, never edits
    untouched = skill(2)
    bank = SkillBank([s, untouched])
    new, _ = evolve(bank, [reward(3, 0.9, 0.1, [s.skill_id])], 1, 1, NO_HARVEST)
    assert new.skills[untouched.skill_id] is untouched


def test_credit_to_a_skill_no_longer_in_the_bank_is_ignored():
    new, report = evolve(SkillBank([skill(1)]), [reward(1, 0.9, 0.1, ["seer:gone"])], 1, 1, NO_HARVEST)
    assert report.credited == {} and len(new) == 1


# -- harvest ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dice,raw,valid,harvested",
    [
        (0.5, 0.2, True, True),    # exactly at both thresholds
        (0.49, 0.0, True, False),  # Dice below 0.5
        (0.9, 0.61, True, False),  # gain 0.29 < 0.3
        (0.9, 0.1, False, False),  # format invalid
    ],
)
def test_harvest_needs_dice_gain_and_a_valid_format(dice, raw, valid, harvested):
    trace = reward(1, dice, raw, request="livr pls", style="messy_or_misspelled", valid=valid)
    new, report = evolve(SkillBank(), [trace], 1, 1)
    assert bool(report.harvested) is harvested
    if harvested:
        made = new.skills[report.harvested[0]]
        assert made.tag == STYLE_TO_TAG["messy_or_misspelled"] == "MESSY_INPUT_REPAIR"
        assert made.aliases == ["livr pls"] and made.canonical == "liver"
        assert made.content.startswith("livr pls->Segment the liver.; trig={RAW:MESSY_OR_MISSPELLED, "
                                       "VIS:ABDOMINAL_ORGANS, DS:ds}")
        assert made.score_hint == pytest.approx(dice) and made.dice_gain == pytest.approx(dice - raw)
        assert made.skill_id == skill_id_for(made.source_key, made.content)
        assert made.provenance[0] | {} == {"round": 1, "how": "harvested", "study": "study1", "request": "livr pls",
                                           "trace_id": "t1", "dice": dice, "gain": round(dice - raw, 4)}
        assert Skill.from_dict(json.loads(json.dumps(made.to_dict()))) == made


def test_the_same_trace_harvested_twice_is_one_skill():
    trace = reward(1, 0.9, 0.0, request="lt kidney", target="left kidney")
    first, report = evolve(SkillBank(), [trace], 1, 1)
    again, report2 = evolve(first, [trace], 2, 2)
    assert len(again) == 1 and report2.harvested == []
    assert [p["round"] for p in next(iter(again.skills.values())).provenance] == [1, 2]


# -- merge and cap ---------------------------------------------------------------------------------------------------
def test_merge_keeps_the_best_per_dataset_tag_and_target_and_hands_aliases_to_the_best():
    group = [skill(i, dice_gain=i / 100, aliases=[f"a{i}"]) for i in range(1, 14)]  # 13 in one group
    other = skill(99, canonical="spleen", dice_gain=0.0)
    other_tag = skill(98, tag="MESSY_INPUT_REPAIR", dice_gain=0.0)
    new, report = evolve(SkillBank(group + [other, other_tag]), [], 1, 1000, EvolutionSettings(merge_keep=10))
    kept = {s.skill_id for s in group[3:]}
    assert {sid for sid in new.skills if sid in {s.skill_id for s in group}} == kept
    best = new.skills[group[-1].skill_id]
    assert best.aliases == ["a13", "a3", "a2", "a1"]  # dropped ones in rank order
    assert report.merged == {group[i].skill_id: best.skill_id for i in range(3)}
    assert other.skill_id in new.skills and other_tag.skill_id in new.skills


def test_cap_keeps_max_of_cap_min_and_a_fraction_of_requests_seen_best_first():
    skills = [skill(i, canonical=f"organ{i}", dice_gain=i / 100) for i in range(30)]
    rules = EvolutionSettings(cap_fraction=0.05, cap_min=1)
    new, report = evolve(SkillBank(skills), [], 1, 200, rules)  # int(0.05 x 200) = 10
    assert len(new) == 10 and {s.dice_gain for s in new.skills.values()} == {i / 100 for i in range(20, 30)}
    assert len(report.capped) == 20
    new, _ = evolve(SkillBank(skills), [], 1, 10, rules)  # int(0.5) = 0 -> the contract's floor of 1
    assert len(new) == 1
    new, _ = evolve(SkillBank(skills), [], 1, 10, EvolutionSettings(cap_min=25))
    assert len(new) == 25


def test_evolution_is_deterministic():
    bank = SkillBank([skill(i, dice_gain=random.Random(i).random()) for i in range(40)])
    rewards = [reward(i, 0.9, 0.2 * (i % 4), [skill(i % 40).skill_id], request=f"req {i}") for i in range(30)]
    a, _ = evolve(bank, rewards, 1, 30, EvolutionSettings(merge_keep=5))
    b, _ = evolve(bank, rewards, 1, 30, EvolutionSettings(merge_keep=5))
    assert a.payload() == b.payload() and a.version == b.version


# -- rounds on disk ------------------------------------------------------------------------------------------------
def test_rounds_freeze_the_bank_until_round_size_rewards_and_keep_every_round(tmp_path):
    rounds = SkillRounds(tmp_path, round_size=3)
    starter = SkillBank.starter()
    assert rounds.rounds() == [0] and rounds.active()[1].payload() == starter.payload()
    assert (tmp_path / "skills.jsonl").read_bytes() == starter.payload()
    rewards = [reward(i, 0.9, 0.0, request=f"lt kidney {i}", target="left kidney") for i in range(2)]
    assert rounds.close_due(rewards) == [] and rounds.active()[0] == 0  # 2 < 3: frozen
    rewards += [reward(i, 0.9, 0.0, request=f"lt kidney {i}", target="left kidney") for i in range(2, 7)]
    closed = rounds.close_due(rewards)  # 7 rewards: rounds 1 (0-2) and 2 (3-5); one left over
    assert [r.round for r in closed] == [1, 2] and rounds.rounds() == [0, 1, 2]
    assert rounds.consumed(2) == 6 and rounds.report(2)["trace_ids"] == ["t3", "t4", "t5"]
    number, bank = rounds.active()
    assert number == 2 and len(bank) == len(starter) + 6
    assert (tmp_path / "skills.jsonl").read_bytes() == bank.payload()
    assert len(rounds.bank(1)) == len(starter) + 3  # the previous round stays readable
    assert rounds.close_due(rewards) == []  # idempotent


def test_a_second_reader_sees_a_round_closed_by_another_process(tmp_path):
    writer = SkillRounds(tmp_path, round_size=1)
    reader = SkillRounds(tmp_path, round_size=1)
    assert reader.active()[0] == 0
    writer.close_due([reward(1, 0.9, 0.0, request="lt kidney", target="left kidney")])
    assert reader.active()[0] == 1


def test_the_seed_is_round_zero_only_once(tmp_path):
    seed = SkillBank([skill(1)])
    rounds = SkillRounds(tmp_path, seed=lambda: seed)
    assert rounds.active()[1].payload() == seed.payload()
    again = SkillRounds(tmp_path, seed=SkillBank.starter)  # rounds exist: the seed is not read again
    assert again.active()[1].payload() == seed.payload()


def test_a_round_that_retires_every_skill_serves_requests_without_skills(tmp_path):
    from seer.pipeline import SeerPipeline
    from seer.reasoning.reasoners.offline import OfflineReasoner

    rounds = SkillRounds(tmp_path, seed=lambda: SkillBank([skill(1), skill(2)]), round_size=2, settings=NO_HARVEST)
    drops = [reward(1, 0.2, 0.9, credited=[skill(1).skill_id]), reward(2, 0.1, 0.8, credited=[skill(2).skill_id])]
    [report] = rounds.close_due(drops)
    assert sorted(report.retired) == sorted([skill(1).skill_id, skill(2).skill_id]) and report.skills_after == 0
    assert rounds.path(1).read_bytes() == b"" == (tmp_path / "skills.jsonl").read_bytes()
    for reader in (rounds, SkillRounds(tmp_path, create=False)):  # this process, and one that loads the round file
        number, bank = reader.active()
        assert number == 1 and len(bank) == 0
        pipeline = SeerPipeline(OfflineReasoner(), None, bank)
        reasoning = pipeline.reason("lt kidney")
        assert reasoning.skills == [] and reasoning.trace.skill_ids == []
        assert reasoning.trace.answer == "Segment the left kidney." and reasoning.entry is None
    # an empty bank evolves like any other: a good trace of the next round is harvested into it
    rewards = drops + [reward(3, 0.9, 0.1, request="lt kidney", target="left kidney"), reward(4, 0.9, 0.9)]
    harvesting = SkillRounds(tmp_path, round_size=2)  # the default rules harvest
    [report] = harvesting.close_due(rewards)
    assert report.skills_before == 0 and len(report.harvested) == 1 and len(harvesting.active()[1]) == 1


def test_read_only_rounds_need_an_existing_state(tmp_path):
    with pytest.raises(BadRequest, match="start the server"):
        SkillRounds(tmp_path, create=False)


def test_a_bank_from_before_rounds_becomes_round_zero(tmp_path):
    old = SkillBank([skill(7)])
    old.save(tmp_path / "skills.jsonl")
    rounds = SkillRounds(tmp_path)
    assert rounds.active()[1].payload() == old.payload()


# -- retrieval index -----------------------------------------------------------------------------------------------
def test_the_retrieval_index_ranks_exactly_as_the_linear_scan():
    rng = random.Random(7)
    parser = Parser()
    targets = ["liver", "spleen", "left kidney", "right kidney", "left hip bone", "right hip bone", "sacrum",
               "left hippocampus", "aorta", "white matter"]
    styles = list(STYLE_TO_TAG)
    cues = ["ABDOMINAL_ORGANS", "PELVIC_BONES", "BRAIN_LESION", "GENERIC_MEDICAL_IMAGE"]
    skills = []
    for i in range(600):
        target = rng.choice(targets)
        style = rng.choice(styles)
        content = f"{target} {rng.choice(['pls', 'rt', 'lt', 'contour', 'findings'])}->Segment the {target}."
        skills.append(Skill(skill_id=skill_id_for(f"k{i}", content), source_key=f"k{i}", tag=STYLE_TO_TAG[style],
                            content=content, audit="", dataset=rng.choice(["a", "b", ""]),
                            style_bucket=rng.choice([style, style, style, "", "odd_style"]),
                            canonical=target if rng.random() < 0.8 else "", aliases=[rng.choice(targets)],
                            vis_cue=rng.choice(cues + [""]), score_hint=round(rng.random(), 2)))
    bank = SkillBank(skills + list(SkillBank.starter().skills.values()))
    requests = ["rt kidney", "liver pls", "Findings: mass near the sacrum", "lt hip bone", "contour the aorta",
                "hipocampus lft", "asdf", "white matter", "spleen", "the left kidney for planning"]
    for raw in requests:
        for cue in cues + [""]:
            for dataset in ("", "a"):
                request_cue = bank.cue(raw, parser.parse(raw), cue, None, dataset)
                odd = RequestCue(**{**request_cue.__dict__, "style": "odd_style"})  # no such style bucket
                for k, threshold in ((3, 8.0), (5, 0.0), (1, 15.0)):
                    assert ([s.skill_id for s, _ in bank.retrieve(odd, parser, k, threshold)]
                            == [s.skill_id for s, _ in bank.retrieve_scan(odd, parser, k, threshold)])
                    indexed = [(s.skill_id, score) for s, score in bank.retrieve(request_cue, parser, k, threshold)]
                    scanned = [(s.skill_id, score) for s, score in bank.retrieve_scan(request_cue, parser, k, threshold)]
                    assert indexed == scanned, (raw, cue, dataset, k)


def test_harvest_skill_reads_the_trace():
    made = harvest_skill(reward(5, 0.8, 0.1, request="rt kidney", target="right kidney"), 3, "team")
    assert made.tag == "ABBR_DISAMBIGUATE" and "RAW:ABBR(rt kidney)" in made.content
    assert made.created_round == 3 and made.dataset == "ds"


def test_merge_groups_carried_across_rounds_match_a_fresh_grouping():
    rng = random.Random(3)
    bank = SkillBank([skill(i, canonical=rng.choice(["liver", "spleen"]), dice_gain=rng.random()) for i in range(40)])
    rules = EvolutionSettings(merge_keep=4, cap_min=30)
    for number in range(1, 8):
        rewards = [reward(100 * number + j, rng.uniform(0.5, 1), rng.uniform(0, 0.2), [rng.choice(sorted(bank.skills))],
                          request=f"req {number} {j}", target=rng.choice(["liver", "spleen", "aorta"]))
                   for j in range(6)]
        bank, _ = evolve(bank, rewards, number, 600 * number, rules)
        fresh = SkillBank(bank.skills.values()).groups()
        assert bank.groups() == fresh
        assert max(len(ids) for ids in fresh.values()) <= 4 and len(bank) <= 30
