"""Laterality in free text: which side words state the target's side, and which do not.

Idioms ("right away", "what's left of"), the viewer's side of a screen, limbs and symptoms and the brain areas that
serve them, comparisons ("R>L ... the more affected"), dictated vertebral levels. Pure functions over the parser's
word lists; `Parser` in parser.py applies them.
"""

from __future__ import annotations

import re

LEFT, RIGHT, BOTH = "left", "right", "both"
SIDE_CONFLICT = "conflict"  # two cues about the target's side disagree: no side can be chosen
SIDE_UNKNOWN = "unknown"  # the text says the side depends on something it cannot tell (a left-hander's dominance)


def other_side(side: str | None) -> str | None:
    """"right" for "left" and back; any other value ("both", None) as it is."""
    return {LEFT: RIGHT, RIGHT: LEFT}.get(side, side)


# idioms with a side word that state no side: "right away"
IDIOMS = {("tumour", "board"), ("tumor", "board"), ("right", "away"), ("right", "now"), ("right", "after"),
          ("right", "then"), ("all", "right"), ("right", "here"), ("right", "there"), ("front", "of"),
          ("right", "behind"), ("right", "at"), ("right", "in"), ("right", "under"), ("right", "above"),
          ("right", "below"), ("right", "next"), ("right", "handed"), ("left", "handed"),
          # "left" as a verb or a remainder: "what's left of the kidney", "I left the femur for last"
          *((w, "left") for w in ("what", "whatever", "is", "anything", "nothing", "still", "was", "are", "were",
                                  "has", "have", "had", "i", "we", "you", "he", "she", "they", "stroke", "it")),
          *(("left", w) for w in ("over", "him", "her", "them", "me", "us")), ("muscle", "belly"),
          ("right", "off"), ("remember", "right"), ("get", "right"), ("ok", "right"), ("okay", "right"),
          *((w, "right") for w in ("it", "this", "that", "things")),
          *(("left", w) for w in ("before", "after", "early", "without", "for")),
          # "RT planning": radiotherapy, not the right side
          *(("rt", w) for w in ("planning", "plan", "plans", "dose", "field", "fields", "course", "target", "targets"))}

LIMBS = frozenset({"hand", "hands", "arm", "arms", "leg", "legs", "foot", "feet", "face", "finger", "fingers",
                   "toe", "toes", "eye", "eyes", "ear", "ears"})

OPPOSITE = frozenset({"contralateral", "opposite"})

ONLY = frozenset({"only", "just", "solely"})

TAG_RIGHT = re.compile(r",?\s*\bright\s*\?", re.IGNORECASE)

DONE = frozenset({"done", "traced", "finished", "completed", "already", "segmented", "contoured", "labelled",
                  "labeled"})

CONTRAST = frozenset({"but", "however", "instead", "rather"})

RELATIVE = frozenset({"contralateral", "ipsilateral", "opposite"})

VIEWER = frozenset({"screen", "monitor", "display", "image", "slice", "viewer", "picture", "scan", "film"})


def viewer_side(words: list[str], at: int) -> bool:
    """The side word at `at` is the viewer's, not the patient's: "on the left of the screen", "shown on the right
    side of the image", "on my left as I look at the monitor", "facing the patient, the bone on my right"."""
    after = words[at + 1 : at + 6]
    before = words[max(0, at - 3) : at]
    present = set(words)
    if after[:1] and after[0] in ("of", "side", "half", "part", "hand") and set(after) & VIEWER:
        return True
    if set(before) & {"shown", "displayed", "appears", "seen"} and present & VIEWER:
        return True
    if before[-1:] and before[-1] in VIEWER:  # "the viewer's left", "screen right"
        return True
    return "my" in before and bool(present & (VIEWER | {"facing", "look", "looking", "viewing"}) or facing(words))


FACED = frozenset({"patient", "patients", "her", "him", "them"})


def facing(words: list[str]) -> bool:
    """The writer faces the patient ("facing the patient", "face to face with her", "if I face the patient",
    "standing in front of him"): the writer's left is the patient's right. "In front of" a structure is a place."""
    if "facing" in words or any(a == "face" and b == "to" and c == "face"
                                for a, b, c in zip(words, words[1:], words[2:], strict=False)):
        return True
    for at, word in enumerate(words):
        after = [w for w in words[at + 1 : at + 4] if w not in ("the", "my", "this", "our", "of")]
        if word in ("face", "faces") and after[:1] and after[0] in FACED:
            return True
        if word in ("front", "before") and words[at - 1 : at] == ["in"] and after[:1] and after[0] in FACED:
            return True  # "in front of the patient" ("in before the patient" once the idiom is read)
    return False


def display_convention(text: str) -> tuple[str, str | None]:
    """The text without the sentences that only state how the viewer shows sides ("our viewer is set to
    neurological convention (screen left = patient left)"), and that convention: "radiological", "neurological"
    or None. A side written in such a statement is no side of the target."""
    found = None
    kept = []
    for part in re.split(r"(?<=[.;!?\n()])|(?=[()])", text):
        low = part.lower()
        equation = re.search(r"\b(screen|viewer|image|display|monitor)'?s?\s+(left|right)\s*(=|is|means|equals)\s*"
                             r"(the\s+)?patient'?s?\s+(left|right)\b", low)
        if "neurological" in low or (equation and equation.group(2) == equation.group(5)):
            found = found or "neurological"
        elif "radiological" in low or "radiologic" in low or (equation and equation.group(2) != equation.group(5)):
            found = found or "radiological"
        if equation or ("convention" in low and not re.search(r"[a-z]{4,}", re.sub(
                r"\b(convention|neurological|radiological|radiologic|viewer|viewers|screen|image|display|monitor|our|"
                r"the|is|set|to|in|on|axial|coronal|view|views|shown|uses|using|follows|with|left|right|patient|"
                r"patients|t1|t2|flair)\b", " ", low))):
            kept.append(" ")  # a statement of the convention only
            continue
        kept.append(part)
    return "".join(kept), found


GREATER = re.compile(r"\b([RrLl])\s*>\s*([RrLl])\b|\b(left|right)\s+(?:more|greater|worse)\s+than\s+(left|right)\b"
                     r"|\b(?:more|greater|worse)\s+on\s+the\s+(left|right)\s+than\s+(?:on\s+)?the\s+(left|right)\b"
                     r"|\b([RrLl])\s*<\s*([RrLl])\b", re.IGNORECASE)

LESS = frozenset({"smaller", "smallest", "less", "lesser", "least", "milder", "mildest"})

MORE = frozenset({"more", "most", "worse", "worst", "larger", "largest", "bigger", "biggest", "greater", "dominant",
                  "predominant", "severe", "affected"})

# symptoms that have a side of the body (crossing like a limb), and complaints whose side is no structure's
SYMPTOMS = frozenset({"hemianopia", "hemianopsia", "homonymous", "hemiparesis", "hemiplegia", "hemisensory",
                     "hemibody", "weakness", "numbness", "paralysis", "palsy"})

COMPLAINTS = frozenset({"headache", "headaches", "pain", "pains", "ache", "migraine", "migraines", "tinnitus"})


def limb_after(words: list[str], at: int) -> str | None:
    """The limb, face or visual field that a side word before `at` belongs to ("left hand", "the left side of the
    face", "the right half of the visual field"), or None ("left hand side" is a plain side)."""
    following = words[at : at + 6]
    if following[:1] and following[0] in LIMBS and following[1:2] != ["side"]:
        return following[0]
    if following[:1] and following[0] in SYMPTOMS:  # "a right homonymous hemianopia", "right hemiparesis"
        return following[0]
    if following[:1] in (["sided"], ["side"]) and following[1:2] and following[1] in SYMPTOMS | COMPLAINTS:
        return following[1]  # "right-sided hemiparesis", "right-sided headaches"
    if following[:1] and following[0] in COMPLAINTS:
        return following[0]
    if following[:2] in (["side", "of"], ["half", "of"]):
        limb = next((w for w in following[2:] if w in LIMBS or w in ("field", "body", "head", "scalp", "temple")),
                    None)
        return None if limb is None else f"{following[0]} of the {'visual field' if limb == 'field' else limb}"
    if following[:2] in (["visual", "field"], ["visual", "hemifield"]):
        return "visual field"
    return None


def side_relation(words: list[str]) -> str | None:
    """"other" when the text places its target on the other side of something ("contralateral to the numb left
    hand"), "same" for "ipsilateral" / "the same side as" / "on the side of"; None otherwise."""
    if set(words) & OPPOSITE:
        return "other"
    if "ipsilateral" in words or any(a == "same" and b == "side" for a, b in zip(words, words[1:], strict=False)):
        return "same"
    if any(a == "the" and b == "side" and c == "of" for a, b, c in zip(words, words[1:], words[2:], strict=False)) \
            and set(words) & LIMBS:  # "on the side of the weak right hand" (not "the left side of the face")
        return "same"
    return None


SPOKEN_LETTERS = {"el": "l", "ell": "l", "tee": "t", "tea": "t", "cee": "c", "ess": "s"}  # not "see" or "es"

NUMBER_WORDS = {w: str(n) for n, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven",
                                                 "eight", "nine", "ten", "eleven", "twelve"])}


def spoken_levels(words: list[str]) -> list[str]:
    """Dictated vertebral levels: "el three" -> "l3", "tea twelve" -> "t12" (a letter's name, then a number)."""
    out: list[str] = []
    skip = False
    for word, following in zip(words, [*words[1:], ""], strict=False):
        if skip:
            skip = False
            continue
        number = NUMBER_WORDS.get(following) or (following if following.isdigit() else None)
        if word in SPOKEN_LETTERS and number and number != "0":
            out.append(SPOKEN_LETTERS[word] + number)
            skip = True
            continue
        out.append(word)
    return out


def greater_side(text: str) -> str | None:
    """The greater side of a comparison: the first in "R>L" and "left more than right", the second in "L < R"."""
    found = GREATER.search(text)
    if not found:
        return None
    groups = [g for g in found.groups() if g]
    first, second = groups[0].lower()[0], groups[1].lower()[0]
    if found.group(7):  # "L < R": the second is the greater
        first, second = second, first
    if first == second:
        return None
    return RIGHT if first == "r" else LEFT


def without_idioms(words: list[str]) -> list[str]:
    """The words without the side word (or "front") of an idiom: "right behind the groove" keeps "behind", "what's
    left of the kidney" keeps "what"; "the tumour board" (a meeting) loses both. "Is left-sided" keeps its side."""
    out: list[str] = []
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if out and (out[-1], word) in IDIOMS and following not in ("sided", "side"):
            if out[-1] == "front":
                out[-1] = "before"  # "in front of the central sulcus": a place
            elif out[-1] in ("right", "left", "rt"):
                out[-1] = word  # "right away" -> "away", "left over" -> "over"
            elif word == "board":
                out.pop()
            elif word == "belly":
                pass  # "the muscle belly" is the muscle, not the abdomen
            continue  # "all right" -> "all", "what left" -> "what"
        out.append(word)
    return out


def combine_sides(sides: list[str]) -> str | None:
    """One side from all those read: "left" / "right" / "both" (both named, or "bilateral"), None when none."""
    distinct = set(sides)
    if not distinct:
        return None
    if SIDE_CONFLICT in distinct:
        return SIDE_CONFLICT
    if SIDE_UNKNOWN in distinct:
        return SIDE_UNKNOWN
    if distinct == {LEFT} or distinct == {RIGHT} or distinct == {BOTH}:
        return distinct.pop()
    return BOTH if BOTH in distinct or distinct == {LEFT, RIGHT} else None


_DOMINANT_TARGET = re.compile(r"\b(?:language|speech)?[- ]?(?:non[- ]?)?dominant (?:hemisphere|side)\b", re.IGNORECASE)
_NON_DOMINANT = re.compile(r"\bnon[- ]?dominant\b", re.IGNORECASE)
_DOMINANCE_STATED = re.compile(r"\b(left|right)[- ](?:hemisphere|hemispheric|sided)?\)?[- ]?(?:language[- ]|speech[- ])?"
                               r"(?:dominan(?:ce|t)|laterali[sz]ation)\b", re.IGNORECASE)
_TYPICAL = re.compile(r"\btypical (?:left[- ]sided |left[- ]hemisphere )?(?:language|speech) "
                      r"(?:dominance|laterali[sz]ation)", re.IGNORECASE)
_HANDED = re.compile(r"\b(left|right)[- ]handed\b", re.IGNORECASE)


def dominant_hemisphere(text: str) -> str | None:
    """The side of "the (language-)dominant hemisphere" a text asks for: as stated ("left-hemisphere language
    dominance"), else from handedness (a right-handed patient's is the left; a left-handed patient's cannot be
    told: "unknown"). None when the text asks for no dominant hemisphere."""
    handed = {m.group(1).lower() for m in _HANDED.finditer(text)}
    if not (_DOMINANT_TARGET.search(text) or (handed and re.search(r"\b(?:non[- ]?)?dominant\b", text, re.IGNORECASE))):
        return None  # ("a right-handed patient, the dominant angular gyrus" asks for it too)
    stated = {m.group(1).lower() for m in _DOMINANCE_STATED.finditer(text)}
    if len(stated) == 1:
        dominant = stated.pop()
    elif _TYPICAL.search(text) and not re.search(r"\batypical\b", text, re.IGNORECASE):
        dominant = LEFT  # "typical language lateralisation": the left hemisphere
    else:
        dominant = LEFT if handed == {RIGHT} else SIDE_UNKNOWN
    return other_side(dominant) if _NON_DOMINANT.search(text) and dominant in (LEFT, RIGHT) else dominant
