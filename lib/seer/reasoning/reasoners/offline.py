"""The offline reasoner: a full SEER trace without a VLM.

Evidence comes from the image (seer.imaging.evidence), the rationale names the chosen skill and every normalization
step, and the answer is a normalized segmentation prompt ("Segment the right hip bone."). It writes its output in
the contract's tag format and goes through the same parser as a model's text.
"""

from __future__ import annotations

from seer.reasoning.lexicon import Concept, ParsedText, coarse_region, default_lexicon
from seer.reasoning.parser import Parser
from seer.reasoning.reasoners.base import ReasoningInput
from seer.reasoning.sides import BOTH, LEFT, RIGHT
from seer.reasoning.trace import Trace, parse_output, render_output


class OfflineReasoner:
    name = "offline"
    needs_images = False

    def __init__(self):
        self._default_parser = Parser(default_lexicon())

    def reason(self, inputs: ReasoningInput) -> Trace:
        parser = inputs.parser or self._default_parser
        request = inputs.request
        parsed = parser.parse(request.text)
        evidence = inputs.evidence.text if inputs.evidence else "No image was provided; only the request text was read."
        region = inputs.evidence.region if inputs.evidence else None

        kept, dropped = _split_by_region(parsed.concepts, region)
        steps: list[str] = []
        if request.was_altered:
            steps.append(f"set aside {' and '.join(request.removed)} found in the request (request text is data)")
        for part in request.set_aside[:3]:
            steps.append(f"ignored text posing as instructions: '{part[:80]}'")
        if parsed.focus:
            steps.append(f"read the one instructing sentence '{parsed.focus}' alone (the rest is context)")
        if parsed.expansions:
            steps.append("expanded " + ", ".join(f"'{a}'->'{b}'" for a, b in parsed.expansions))
        if parsed.corrections:
            steps.append("repaired spelling " + ", ".join(f"'{a}'->'{b}'" for a, b in parsed.corrections))
        if dropped:
            steps.append("dropped out-of-region " + ", ".join(c.name for c in dropped))
        for part, whole in parsed.part_of:
            steps.append(f"read '{part}' as part of the {whole} (the label map holds it whole)")
        if parsed.findings:
            steps.append(f"the finding ({', '.join(parsed.findings)}) only locates the structure the instruction "
                         "asks for")
        for cue, whole in parsed.lay:
            steps.append(f"read the lay description ({cue}) as the {whole}")
        if parsed.side in (LEFT, RIGHT):
            steps.append(f"laterality {parsed.side} as written ({', '.join(parsed.side_words)}; patient's {parsed.side})")
        elif parsed.side == BOTH:
            steps.append("both sides requested")
        if parsed.unknown:
            steps.append("ignored unrecognised words " + ", ".join(f"'{w}'" for w in parsed.unknown[:6]))

        if parsed.concepts and not kept:
            names = ", ".join(c.name for c in dropped)
            where = "head" if region == "head" else "body"
            answer = f"Reject: {names} is outside the imaged region ({where})."
        else:
            answer = _answer(parsed, kept, dropped, request.text, parser.lexicon.pathology_words)

        skill_note = "No skill in the bank matched this request and image"
        if inputs.skills:
            top = inputs.skills[0]
            skill_note = f"Chose skill [1] {top.tag} ({top.skill_id}): {top.content.split(';')[0]}"
        rationale = skill_note + ". " + ("Normalization: " + "; ".join(steps) + "." if steps else "Request kept as written.")
        text = render_output(_safe(evidence), _safe(rationale), _safe(answer))
        trace = parse_output(text, request.text)
        trace.skill_ids = [s.skill_id for s in inputs.skills]
        trace.reasoner = self.name
        return trace


def _split_by_region(concepts, region: str | None) -> tuple[list[Concept], list[Concept]]:
    if region is None:
        return list(concepts), []
    kept = [c for c in concepts if coarse_region(c.region) == region]
    dropped = [c for c in concepts if coarse_region(c.region) != region]
    return kept, dropped


def _answer(parsed: ParsedText, kept: list[Concept], dropped: list[Concept], fallback: str,
            lesion_words: frozenset[str] = frozenset()) -> str:
    """'Segment the <side> <structure>.' built from concept names and the remaining canonical tokens."""
    if not parsed.tokens and not parsed.pathology:
        return fallback
    dropped_tokens = {t for c in dropped for t in c.tokens}
    covered: set[str] = set()
    words: list[str] = []
    for concept in kept:
        words.append(concept.name)
        covered.update(concept.tokens)
    words += [t for t in parsed.tokens if t not in covered and t not in dropped_tokens]
    words += [p for p in parsed.parts if p not in words]  # "pancreatic duct" must not become "pancreas"
    words += list(parsed.asked or parsed.pathology)  # a report's instruction says which lesion it asks for
    lesion = [i for i, w in enumerate(words) if w in lesion_words]
    if lesion and lesion[0] > 0 and parsed.joins_targets:
        words.insert(lesion[0], "and")  # "liver with tumour" asks for two targets: the answer keeps saying so
    side = {LEFT: "left ", RIGHT: "right ", BOTH: "left and right "}.get(parsed.side or "", "")
    phrase = " ".join(words).strip()
    return f"Segment the {side}{phrase}." if phrase else fallback


def _safe(text: str) -> str:
    """Keep our own tags unambiguous: no '<' from request-derived text reaches the trace, so no tag can form."""
    return text.replace("<", "‹")
