"""Label names read by the naming conventions teams use (data/label_conventions.json), before they are parsed
like any text.

TG-263 radiotherapy names ("OpticNrv_L", "Glnd_Submand_R", "Bone_Mandible"), FreeSurfer names
("ctx-lh-superiortemporal", "Left-Cerebral-White-Matter", "4th-Ventricle"), BraTS, MSD and PI-RADS abbreviations
("ET", "SNFH", "TZ", "SV_L"), Couinaud segments by number ("Seg_IVa", "Segment_7"), TotalSegmentator snake_case
and AAL names all become plain words: "optic nerve l", "left superior temporal", "enhancing tumor", "seminal
vesicle l", "liver segment 4a". A name already in plain words stays as it is.
The same table gives the abbreviations a request may use for the structures of one map
(`request_abbreviations`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from seer.reasoning.lexicon import Lexicon

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")  # "OpticNrv" -> "Optic Nrv" (not "GTVp", "PZ")
# Couinaud segments named by number: "Seg_IVa", "Segment_7", "liver_seg_I_caudate" -> "liver segment 4a", ...
_COUINAUD = re.compile(r"(?:liver[_\- ]?)?seg(?:ment)?[_\- ]?(viii|vii|vi|iv|v|iii|ii|i|[1-8])([ab])?(?:[_\- ](.+))?",
                       re.IGNORECASE)
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}
_SIDE_CODES = frozenset({"lh", "rh"})


@dataclass(frozen=True)
class Conventions:
    """label_words: word -> plain words ('' drops it); category_first: TG-263 category word -> the word it becomes
    after the rest of the name; abbreviations: abbreviation -> phrase; case_sensitive: abbreviations that are also
    English words, read in requests only when written in capitals."""

    label_words: Mapping[str, str]
    category_first: Mapping[str, str]
    abbreviations: Mapping[str, str]
    case_sensitive: frozenset[str]


@lru_cache(maxsize=1)
def default_conventions() -> Conventions:
    with resources.files("seer").joinpath("data/label_conventions.json").open(encoding="utf-8") as fp:
        data = json.load(fp)
    return Conventions(
        label_words=dict(data["label_words"]),
        category_first=dict(data["category_first"]),
        abbreviations=dict(data["abbreviations"]),
        case_sensitive=frozenset(data["case_sensitive"]),
    )


def decode_label_name(name: str, lexicon: Lexicon, conventions: Conventions | None = None) -> str:
    """`name` as plain words: CamelCase and separators split, a whole-name abbreviation spelled out ("SV_L" ->
    "seminal vesicle l"), a TG-263 category read last ("Glnd_Submand_L" -> "submandibular gland l"), convention
    words replaced ("lh" -> "left", "ctx" dropped) and run-together words split by the lexicon's words
    ("superiortemporal" -> "superior temporal")."""
    conventions = conventions or default_conventions()
    couinaud = _COUINAUD.fullmatch(name.strip())
    if couinaud:
        number, half, rest = couinaud.groups()
        number = _ROMAN.get(number.lower(), number)
        if rest and re.fullmatch(r"caudate([_\- ]lobe)?", rest, re.IGNORECASE) and str(number) == "1":
            rest = None  # segment I is the caudate lobe: the name says it twice
        return f"liver segment {number}{(half or '').lower()}" + (f" {decode_label_name(rest, lexicon, conventions)}"
                                                                  if rest else "")
    # CamelCase splits only what the lexicon does not know whole ("OpticNrv", not AAL's "SupraMarginal")
    words = lexicon.split(" ".join(piece if _known(piece.lower(), lexicon) else _CAMEL.sub(" ", piece)
                                   for piece in re.split(r"[^A-Za-z0-9]+", name)))
    if not words:
        return name
    content = [w for w in words if lexicon.side_of(w) is None and w not in _SIDE_CODES]
    sides = [w for w in words if w not in content]
    whole = " ".join(content)
    if whole in conventions.abbreviations:
        return " ".join([conventions.abbreviations[whole], *sides])
    first = content[0] if content else ""
    if first in conventions.category_first and len(content) > 1 and name[:1].isupper():
        content = [*content[1:], conventions.category_first[first]]
    spelled: list[str] = []
    for word in content:
        word = conventions.label_words.get(word, word)
        if len(word) >= 8 and not _known(word, lexicon):
            word = " ".join(_split_run_together(word, lexicon) or [word])
        spelled.extend(word.split())
    return " ".join([*spelled, *(conventions.label_words.get(s, s) for s in sides)])


def request_abbreviations(vocabulary: Iterable[str], lexicon: Lexicon,
                          conventions: Conventions | None = None) -> dict[str, str]:
    """The abbreviations a request may use on a map whose (decoded) label words are `vocabulary`: those whose every
    content word the map holds ("TZ" on a prostate zone map, "ON" on a map with optic nerves)."""
    conventions = conventions or default_conventions()
    held = set(vocabulary)
    held_classes = {lexicon.lesion_class[w] for w in held if w in lexicon.lesion_class}
    out = {}
    for abbreviation, phrase in conventions.abbreviations.items():
        words = [w for w in lexicon.words(phrase)
                 if lexicon.side_of(w) is None and w not in lexicon.filler and w not in lexicon.optional]
        # a lesion word is held when the map holds its class ("ED" on a map that spells it "oedema"); a generic
        # one ("tumor", "core") when the map holds some lesion class
        missing = [w for w in words if w not in held and lexicon.lesion_class.get(w) not in held_classes
                   and not (held_classes and (w in ("core", "tumor") or lexicon.lesion_class.get(w) == "tumor"))]
        if words and not missing and abbreviation not in held:
            out[abbreviation] = phrase
    return out


def _known(word: str, lexicon: Lexicon) -> bool:
    return word in lexicon.phrase_vocabulary or word in lexicon.expansions or lexicon.side_of(word) is not None


@lru_cache(maxsize=4096)
def _pieces(lexicon: Lexicon) -> frozenset[str]:
    return frozenset(w for w in (*lexicon.phrase_vocabulary, *lexicon.expansions, "pars")
                     if len(w) >= 3 and w.isalpha())


def _split_run_together(word: str, lexicon: Lexicon) -> list[str] | None:
    """The fewest known words (3 letters or more) that `word` is written from, or None."""
    pieces = _pieces(lexicon)
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(3, len(word) + 1):
        for start in range(0, end - 2):
            head = best[start]
            piece = word[start:end]
            if head is not None and piece in pieces and (best[end] is None or len(head) + 1 < len(best[end])):
                best[end] = [*head, piece]
    found = best[len(word)]
    return [lexicon.expansions.get(w, w) for w in found] if found and len(found) > 1 else None
