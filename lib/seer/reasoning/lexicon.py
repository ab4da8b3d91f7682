"""The curated anatomical lexicon (data/lexicon.json): concepts, synonyms, lay cues, parts, lesion classes and side
words, and the `ParsedText` a text is reduced to (seer.reasoning.parser builds it).

A text (a request, a model answer or a label name such as "hip_left", "Hippocampus_L", "Frontal_Sup_Orb_L") is
reduced to a `ParsedText`: canonical content tokens, a laterality, the lexicon concepts it names and what was left
unrecognised. Label names and requests go through the same parser, so they meet in one token space.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources

from seer.imaging.evidence import BODY, HEAD
from seer.reasoning.sides import (
    BOTH,
    LEFT,
    RIGHT,
)

_HEAD_REGIONS = {"head"}

_VERTEBRA_LEVEL = re.compile(r"^[ctls]\d{1,2}$")

_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$")

_SPLIT = re.compile(r"[^a-z0-9]+")

_MULTI_LETTER_DIGIT = re.compile(r"^([a-z]{2,})(\d+)$")

def coarse_region(region: str | None) -> str | None:
    """Map a lexicon region (head, neck, thorax, ...) onto the two classes the image cue can tell apart."""
    if region is None:
        return None
    return HEAD if region in _HEAD_REGIONS else BODY

def imaged_with(region: str) -> set[str]:
    """The coarse regions (head, body) whose studies may show a structure of this lexicon region: the neck is in a
    head-and-neck study as in a body one."""
    return {HEAD, BODY} if region == "neck" else {coarse_region(region)}

@dataclass(frozen=True)
class Concept:
    key: str  # canonical label-style tokens, e.g. "frontal superior"
    name: str  # display name, e.g. "superior frontal gyrus"
    region: str
    paired: bool
    tokens: tuple[str, ...] = ()  # content tokens of the key (no filler such as "and")
    regions: tuple[str, ...] = ()  # every region it may be imaged in (its own first)

@dataclass(frozen=True)
class ParsedText:
    """A text reduced to canonical tokens.

    tokens: content tokens in canonical (label-style) form, order of appearance, no side words.
    side: "left" | "right" | "both" | None, as written (the patient's side), or the other side for a motor or
        sensory area named by the limb it serves ("moves my right hand"); never guessed.
    concepts: lexicon concepts recognised, in order.
    unknown: content words found in no vocabulary.
    pathology: lesion-type words (lesion, mets, tumour ...).
    corrections / expansions: (written, read-as) pairs for typos and abbreviations.
    """

    text: str
    tokens: tuple[str, ...]
    side: str | None
    concepts: tuple[Concept, ...] = ()
    unknown: tuple[str, ...] = ()
    pathology: tuple[str, ...] = ()
    corrections: tuple[tuple[str, str], ...] = ()
    expansions: tuple[tuple[str, str], ...] = ()
    side_words: tuple[str, ...] = field(default=())
    parts: tuple[str, ...] = ()  # part nouns (vein, duct, head, ...) not absorbed by a concept phrase
    part_of: tuple[tuple[str, str], ...] = ()  # (part phrase, structure) read as the whole structure
    lay: tuple[tuple[str, str], ...] = ()  # (cue words, structure) of a lay description
    findings: tuple[str, ...] = ()  # lesion words of a report's finding that only locate the structure asked for
    asked: tuple[str, ...] = ()  # lesion words of the instructing clause of a report ("Please segment the lesions")
    instruction: str = ""  # the instructing clauses of a report that also describes its lesion (with `asked`)
    focus: str = ""  # the one instructing sentence read alone, the rest being context ("Please segment the left femur.")
    part_words: tuple[str, ...] = ()  # words naming a part of a structure ("tail", "lamina", "pole")
    restricted: bool = False  # the text restricts to what it names ("only", "just", "everything but")

    @cached_property
    def joins_targets(self) -> bool:
        """The text joins words with "and", "with", "including"...: it may ask for two targets ("liver and
        tumour")."""
        words = Lexicon.split(self.instruction or self.text)  # a report's description joins nothing it asks for
        named = {w[:4] for w in (*self.pathology, *self.tokens, *self.findings)}

        def names_after(i: int, span: int) -> bool:
            return any(w[:4] in named for w in words[i + 1 : i + 1 + span])

        # "and"/"plus" join when a structure or lesion follows ("liver and tumour", "left and right"), not in
        # "increased in number and size"; "with" only closely ("liver with tumour", not "mass with arterial
        # hyperenhancement")
        return any((w in CONJUNCTIONS - {"with", "and", "plus"})
                   or (w in ("and", "plus") and (names_after(i, 3) or not named))
                   or (w == "with" and names_after(i, 2)) for i, w in enumerate(words))

    @cached_property
    def token_set(self) -> frozenset[str]:
        return frozenset(self.tokens)

    @cached_property
    def concept_tokens(self) -> frozenset[str]:
        """The tokens of the concepts recognised (what a qualifier or part word is told apart from)."""
        return frozenset(t for c in self.concepts for t in c.tokens)

    @property
    def region(self) -> str | None:
        regions = {c.region for c in self.concepts}
        return regions.pop() if len(regions) == 1 else None

class Lexicon:
    """Synonyms, abbreviations, Latin names and laterality words, loaded once from JSON."""

    def __init__(self, data: dict):
        """`data`: the parsed data/lexicon.json."""
        self.left_words = frozenset(data["side_words"]["left"])
        self.right_words = frozenset(data["side_words"]["right"])
        self.both_words = frozenset(data["bilateral_words"])
        self.filler = frozenset(data["filler_words"])
        self.optional = frozenset(data["optional_words"])
        self.expansions: dict[str, str] = dict(data["token_expansions"])
        self.pathology_words = frozenset(data["pathology_words"])  # with every lesion word (below)
        self.sequence_cues = frozenset(data.get("sequence_cues", []))
        self.negations = frozenset(data.get("negation_words", []))
        self.part_nouns = frozenset(data.get("part_nouns", []))
        self.structure_parts = frozenset(data.get("structure_parts", []))  # "tail", "lamina", "upper pole"
        self.restriction_words = frozenset(data.get("restriction_words", []))  # "only", "just", "except"
        self.restriction_phrases = tuple(tuple(self.split(p)) for p in data.get("restriction_phrases", []))
        self._load_concepts(data)
        self._load_cues(data)
        self._load_lesions(data)
        self.max_phrase = max(len(p) for p in self.phrases)
        # word -> the words that follow / precede it inside some structure phrase ("small" -> {"bowel", ...})
        self.phrase_next: dict[str, set[str]] = {}
        self.phrase_previous: dict[str, set[str]] = {}
        for phrase in self.phrases:
            for first, second in zip(phrase, phrase[1:], strict=False):
                self.phrase_next.setdefault(first, set()).add(second)
                self.phrase_previous.setdefault(second, set()).add(first)
        self.phrase_vocabulary = frozenset(t for phrase in self.phrases for t in phrase)
        self.expansion_words = frozenset(w for v in self.expansions.values() for w in v.split())

    def _load_concepts(self, data: dict) -> None:
        """Concepts and every phrase that names one: keys, names, synonyms, sided synonyms, parts."""
        self.concepts: dict[str, Concept] = {}
        # phrase (tuple of tokens) -> (concept, side or None)
        self.phrases: dict[tuple[str, ...], tuple[Concept, str | None]] = {}
        for key, entry in data["concepts"].items():
            tokens = tuple(w for w in dict.fromkeys(self.words(key)) if w not in self.filler and w not in self.optional)
            concept = Concept(key, entry["name"], entry["region"], bool(entry["paired"]), tokens,
                              tuple(dict.fromkeys([entry["region"], *entry.get("regions", [])])))
            self.concepts[key] = concept
            for phrase in [key, entry["name"], *entry.get("synonyms", [])]:
                tokens = tuple(self.words(phrase))
                if tokens:
                    self.phrases.setdefault(tokens, (concept, None))
            for phrase, side in entry.get("sided_synonyms", {}).items():
                self.phrases[tuple(self.split(phrase))] = (concept, side)
        # parts a label map usually holds only whole ("iliac crest" -> hip bone)
        self.part_phrases: dict[tuple[str, ...], Concept] = {}
        for key, phrases in data.get("part_of", {}).items():
            for phrase in phrases:
                tokens = tuple(self.words(phrase))
                self.part_phrases[tokens] = self.concepts[key]
                self.phrases.setdefault(tokens, (self.concepts[key], None))
        # concepts that are parts of another ("lung upper lobe" of "lung"): read as the whole when a map lacks them
        self.part_concepts: dict[str, Concept] = {
            part: self.concepts[whole] for whole, parts in data.get("part_concepts", {}).items() for part in parts}

    def _load_cues(self, data: dict) -> None:
        """Lay descriptions, generic words and the side relations of structures (limbs, organs, removals)."""
        # lay descriptions: every cue word (prefix when it ends in *) present -> the concept
        # (cue words are expanded like the text: "intestine" is read as "bowel")
        self.lay_cues: list[tuple[tuple[str, ...], Concept]] = [
            (tuple(c if c.endswith("*") else self.expansions.get(c, c) for c in cue), self.concepts[key])
            for key, cues in data.get("lay_cues", {}).items() for cue in cues
        ]
        cue_words = [c for cue, _ in self.lay_cues for c in cue]
        self.cue_exact = frozenset(c for c in cue_words if not c.endswith("*"))
        self.cue_prefixes = tuple(c[:-1] for c in cue_words if c.endswith("*"))
        self.cue_prefix_set = frozenset(self.cue_prefixes)
        self.cues_by_first: dict[str, list[tuple[tuple[str, ...], Concept]]] = {}  # a cue's first word -> cues
        for cue, concept in self.lay_cues:
            self.cues_by_first.setdefault(cue[0], []).append((cue, concept))
        self.cue_prefix_lengths = tuple(sorted({len(p) for p in self.cue_prefixes}))
        self.generic_words = frozenset(data.get("generic_structure_words", []))
        # structures that only contain what a lay description names ("the part of the brain that ...")
        self.lay_containers = frozenset(data.get("lay_containers", []))
        # brain areas that serve the body's other side: "the part that moves my right hand" is the left one
        self.contralateral = frozenset(data.get("contralateral_to_limbs", []))
        self.ipsilateral = frozenset(data.get("ipsilateral_to_limbs", []))  # the cerebellum serves its own side
        self.organ_sides: dict[str, str] = dict(data.get("organ_sides", {}))  # "the liver side" is the right
        self.removals: dict[str, str] = dict(data.get("removals", {}))  # "nephrectomy" removes a kidney
        # structures in or beside a limb, eye or ear that share its side ("the tear gland of the left eye")
        self.limb_structures: dict[str, frozenset[str]] = {
            limb: frozenset(keys) for limb, keys in data.get("limb_structures", {}).items()}

    def _load_lesions(self, data: dict) -> None:
        """Lesion words, their classes and how a class must match a map's lesion labels; instruction words."""
        # lesion word -> class ("mets" -> "metastases"), and how classes must match a map's lesion labels
        self.lesion_class: dict[str, str] = {w: c for c, words in data.get("lesion_classes", {}).items() for w in words}
        self.lesion_words = frozenset(self.lesion_class)
        # two-word lesion phrases whose words alone are no lesion ("radiosurgery targets" -> "tumor")
        self.lesion_phrases = {tuple(self.split(k)): v for k, v in data.get("lesion_phrases", {}).items()}
        self.pathology_words |= self.lesion_words
        self.lesion_generic = frozenset(data.get("lesion_generic", []))
        self.lesion_if_present = frozenset(data.get("lesion_if_present", []))
        # parts of a lesion ("necrotic centre of the met"): the whole lesion where the map has no such part label,
        # but not when asked alone ("necrotic core" on a map of whole metastases)
        self.lesion_parts = frozenset(data.get("lesion_parts", []))
        self.tumor_family = frozenset(data.get("tumor_family", []))
        self.lesion_exclusive = [frozenset(group) for group in data.get("lesion_exclusive", [])]
        self.instruction_words = frozenset(data.get("instruction_words", []))
        self.anaphora_words = frozenset(data.get("anaphora_words", []))

    @staticmethod
    def split(text: str) -> list[str]:
        """Lowercase and split on anything but letters and digits; 'crus1' -> 'crus', '1'; '7th' -> '7'."""
        text = text.lower().replace("'s ", " ").replace("\u2019s ", " ")
        out: list[str] = []
        for raw in _SPLIT.split(text):
            if not raw:
                continue
            ordinal = _ORDINAL.match(raw)
            if ordinal:
                out.append(ordinal.group(1))
                continue
            split = _MULTI_LETTER_DIGIT.match(raw)
            if split and not _VERTEBRA_LEVEL.match(raw):
                out.extend(split.groups())
                continue
            out.append(raw)
        return out

    def words(self, text: str) -> list[str]:
        """Split, expand abbreviations and merge 'crus 1', without typo correction."""
        return _merge_crus([w for t in self.expand(self.split(text)) for w in t.split()])

    def expand(self, tokens: Iterable[str]) -> list[str]:
        return [self.expansions.get(t, t) for t in tokens]

    def side_of(self, token: str) -> str | None:
        if token in self.left_words:
            return LEFT
        if token in self.right_words:
            return RIGHT
        if token in self.both_words:
            return BOTH
        return None

    @property
    def side_vocabulary(self) -> frozenset[str]:
        return self.left_words | self.right_words | self.both_words

@cache
def default_lexicon() -> Lexicon:
    """The packaged data/lexicon.json, read once per process (a Lexicon is not changed after it is built)."""
    with resources.files("seer").joinpath("data/lexicon.json").open(encoding="utf-8") as fp:
        return Lexicon(json.load(fp))

# words that join two targets in one request ("liver and tumour")
CONJUNCTIONS = frozenset({"and", "plus", "both", "together", "including", "incl", "inclusive", "with"})

def _merge_crus(words: list[str]) -> list[str]:
    """'crus', '1' -> 'crus1' so that AAL's Cerebelum_Crus1 and 'crus I' meet."""
    out: list[str] = []
    for word in words:
        if out and out[-1] == "crus" and word in {"1", "2", "i", "ii"}:
            out[-1] = "crus" + ("1" if word in {"1", "i"} else "2")
        else:
            out.append(word)
    return out
