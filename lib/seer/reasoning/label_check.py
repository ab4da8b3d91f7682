"""How SEER reads a team's label map, before a project starts (`python main.py labels check MAP.json`).

For each label: the plain words its name decodes to (seer.reasoning.label_names), the structure(s) it names, its
side, its qualifiers (what the name adds to the structure: a part, zone, segment, level or lesion class), the team's
aliases, and up to three phrasings that resolve to it. Then the labels that collide (two labels read alike: a
request for either is refused as ambiguous) and those whose name decodes to no structure SEER knows (reachable only
by their own words).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from seer.errors import BadRequest
from seer.reasoning.sides import LEFT, RIGHT
from seer.reasoning.targets import LabelEntry, LabelTable, Resolver, read_label_map_json

PHRASINGS = 3


def read_label_map(path: str | Path) -> dict:
    """The label map at `path` as JSON, checked strictly: a non-empty object of id -> name (or {"name": ...,
    "aliases": [...]}) with integer ids, non-empty text names and no name twice. Raises BadRequest naming the
    offending labels."""
    data = read_label_map_json(path)
    problems: list[str] = []
    seen: dict[str, list[str]] = {}
    for key, value in data.items():
        name = value.get("name") if isinstance(value, dict) else value
        if not str(key).strip().lstrip("-").isdigit():
            problems.append(f"label {key!r} has no integer id")
        elif not isinstance(name, str):
            problems.append(f"label {key}'s name is {name!r} ({type(name).__name__}), not text")
        elif not name.strip():
            problems.append(f"label {key} has an empty name")
        else:
            seen.setdefault(name.strip(), []).append(str(key))
        aliases = value.get("aliases", []) if isinstance(value, dict) else []
        if isinstance(value, dict) and (not isinstance(aliases, list)
                                        or not all(isinstance(a, str) and a.strip() for a in aliases)):
            problems.append(f"label {key}'s aliases must be a list of non-empty texts")
    problems += [f"labels {', '.join(keys[:-1])} and {keys[-1]} are {'both' if len(keys) == 2 else 'all'} named {name!r}"
                 for name, keys in seen.items() if len(keys) > 1]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise BadRequest(f"Label map {path} cannot be used: {shown}.")
    return data


def check_label_map(labels: Mapping) -> dict:
    """The onboarding report of a label map (see the module docstring), as a JSON-ready dict."""
    table = LabelTable(labels)
    resolver = Resolver(table)
    lexicon = table.parser.lexicon
    by_concept: dict[str, list[str]] = {}  # concept key -> its phrases, shortest first
    for words, (concept, side) in lexicon.phrases.items():
        if side is None and words not in lexicon.part_phrases:  # "pons" reads as the brainstem, but names a part
            by_concept.setdefault(concept.key, []).append(" ".join(words))
    for phrases in by_concept.values():
        phrases.sort(key=lambda p: (len(p), p))
    abbreviations = {phrase: abbreviation for abbreviation, phrase in table.parser.abbreviations.items()}
    rows = [_row(entry, table, resolver, by_concept, abbreviations) for entry in table.entries]
    groups: dict[tuple, list[str]] = {}
    for entry in table.entries:
        if entry.tokens:
            groups.setdefault((entry.tokens, entry.side), []).append(entry.name)
    collisions = [{"labels": names, "why": f"{' and '.join(names)} read alike ({_reading(table.by_name[names[0]])}); "
                   "a request for either is refused as ambiguous: rename one or give it an alias"}
                  for names in groups.values() if len(names) > 1]
    undecoded = [{"label": row["name"], "why": f"'{row['name']}' names no structure SEER knows; requests reach it "
                  f"only by its own words ({row['reads_as'] or row['name']})"}
                 for row in rows if not row["concepts"] and not row["lesion"]]
    return {"labels": rows, "collisions": collisions, "undecoded": undecoded,
            "summary": {"labels": len(rows), "with_phrasings": sum(1 for r in rows if r["phrasings"]),
                        "collisions": len(collisions), "undecoded": len(undecoded),
                        "aliases": sum(len(r["aliases"]) for r in rows)}}


def _row(entry: LabelEntry, table: LabelTable, resolver: Resolver, by_concept: dict[str, list[str]],
         abbreviations: dict[str, str]) -> dict:
    lexicon = table.parser.lexicon
    parsed = entry.parsed
    covered = parsed.concept_tokens
    lesion = sorted({lexicon.lesion_class[t] for t in entry.tokens if t in lexicon.lesion_class})
    qualifiers = [t for t in parsed.tokens if t not in covered and t not in lexicon.lesion_class]
    return {
        "id": entry.id,
        "name": entry.name,
        "reads_as": table.decoded.get(entry.id, entry.name),
        "concepts": [c.name for c in parsed.concepts],
        "side": entry.side,
        "qualifiers": qualifiers,
        "lesion": lesion,
        "aliases": list(table.aliases.get(entry.id, ())),
        "phrasings": _phrasings(entry, table, resolver, by_concept, abbreviations),
    }


def _phrasings(entry: LabelEntry, table: LabelTable, resolver: Resolver, by_concept: dict[str, list[str]],
               abbreviations: dict[str, str]) -> list[str]:
    """Up to three texts a user might type that resolve to this label (each checked by resolving it)."""
    side = entry.side if entry.side in (LEFT, RIGHT) else None
    lexicon = table.parser.lexicon
    extra = " ".join(t for t in entry.parsed.tokens if t not in entry.parsed.concept_tokens)
    stems: list[str] = []
    for concept in entry.parsed.concepts:
        stems += [concept.name, *by_concept.get(concept.key, [])[:4]]
    if not entry.parsed.concepts:
        stems.append(table.decoded.get(entry.id, entry.name))
    stems = [f"{stem} {extra}".strip() if extra and extra not in stem else stem for stem in stems]
    decoded = table.decoded.get(entry.id, "")
    plain = " ".join(w for w in lexicon.split(decoded) if lexicon.side_of(w) is None)
    if plain in abbreviations:  # written as teams write it: "TZ", "SMG"
        stems.append(abbreviations[plain].upper())
    candidates = [f"{side} {stem}" if side else stem for stem in dict.fromkeys(stems)]
    candidates += list(table.aliases.get(entry.id, ()))
    found: list[str] = []
    for text in dict.fromkeys(candidates):
        resolution = resolver.resolve(text)
        if resolution.ok and resolution.entry.id == entry.id:
            found.append(text)
            if len(found) == PHRASINGS:
                break
    return found


def _reading(entry: LabelEntry) -> str:
    words = [entry.side] if entry.side in (LEFT, RIGHT) else []
    return " ".join([*words, *entry.parsed.tokens]) or entry.name
