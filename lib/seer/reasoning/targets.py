"""Target resolution: map a model answer or a raw request onto one entry of a label vocabulary, or refuse.

Rules (see tests/test_targets.py):
- Names in any style meet in one token space (lexicon.Parser): "hip_left", "Hippocampus_L", "left hipbone".
- An entry matches when all of its tokens are in the request; the most specific match wins; two unrelated
  matches ("liver and spleen") are a refusal, not a guess.
- Laterality never flips: a sided request only matches the same side; an unsided request for a paired
  structure is refused when both sides exist.
- Out-of-region, lesion-type and unknown requests are refused with a reason and the nearest supported targets.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from seer.errors import BadRequest
from seer.reasoning.label_names import decode_label_name, default_conventions, request_abbreviations
from seer.reasoning.lexicon import Lexicon, ParsedText, coarse_region, default_lexicon, imaged_with
from seer.reasoning.parser import Parser
from seer.reasoning.sides import BOTH, LEFT, RIGHT, SIDE_CONFLICT, SIDE_UNKNOWN

MATCH = "match"
REFUSED_KINDS = (
    "empty",
    "nonsense",
    "out_of_region",
    "not_in_vocabulary",
    "lesion_not_supported",
    "ambiguous_side",
    "side_not_available",
    "multiple_targets",
    "side_conflict",
)


@dataclass(frozen=True)
class LabelEntry:
    """One segmentable target: `id` is the value written in masks, `name` as the label map spells it."""

    id: int
    name: str
    parsed: ParsedText
    prompt: str | None = None  # text handed to a text-promptable backbone, when it differs from `name`

    @property
    def tokens(self) -> frozenset[str]:
        return self.parsed.token_set

    @property
    def side(self) -> str | None:
        return self.parsed.side

    @property
    def region(self) -> str | None:
        return self.parsed.region

    def describe(self) -> str:
        """Human phrase, e.g. 'left hippocampus' for Hippocampus_L."""
        words: list[str] = []
        if self.side in (LEFT, RIGHT):
            words.append(self.side)
        if self.parsed.concepts:
            covered: set[str] = set()
            for concept in self.parsed.concepts:
                words.append(concept.name)
                covered.update(concept.tokens)
            words.extend(t for t in self.parsed.tokens if t not in covered)
        else:
            words.extend(self.parsed.tokens)
        return " ".join(words) if words else self.name


@dataclass
class Resolution:
    """Outcome of resolving one text. `entry` is None exactly when `kind` is a refusal kind."""

    kind: str
    parsed: ParsedText
    entry: LabelEntry | None = None
    reason: str = ""
    suggestions: list[str] = field(default_factory=list)
    method: str = ""  # "tokens" or "embedding"

    @property
    def ok(self) -> bool:
        return self.entry is not None


class LabelTable:
    """A label vocabulary: id -> name, parsed once. Accepts {"1": "spleen"} or {"spleen": 1} mappings."""

    def __init__(self, labels: Mapping, lexicon: Lexicon | None = None):
        pairs = sorted(label_mapping(labels).items())
        self.aliases = {i: a for i, a in label_aliases(labels).items() if i in dict(pairs)}
        lexicon = lexicon or default_lexicon()
        conventions = default_conventions()
        self._lexicon, self._conventions = lexicon, conventions
        # each name read by its naming convention: "Glnd_Submand_L" -> "submandibular gland l", "TZ" -> "transition
        # zone", "ctx-lh-insula" -> "left insula"
        self.decoded = {i: decode_label_name(n, lexicon, conventions) for i, n in pairs}
        texts = [*self.decoded.values(), *(a for found in self.aliases.values() for a in found)]
        vocabulary = {word for text in texts for word in lexicon.words(text)}
        vocabulary -= lexicon.side_vocabulary | lexicon.filler | lexicon.optional
        couinaud = any(re.fullmatch(r"liver segment \d[ab]?", d) for d in self.decoded.values())
        self.parser = Parser(lexicon, vocabulary, abbreviations=request_abbreviations(vocabulary, lexicon, conventions),
                             case_sensitive=conventions.case_sensitive, couinaud=couinaud)
        self.entries = [LabelEntry(i, n, self.parser.parse(self.decoded[i], correct_typos=False)) for i, n in pairs]
        self.by_id = {e.id: e for e in self.entries}
        self.by_name = {e.name: e for e in self.entries}
        # each alias is one more way to name its label; a side the alias does not say is the label's own
        self.alias_entries: list[LabelEntry] = []
        for value, found in self.aliases.items():
            label = self.by_id[value]
            for alias in found:
                parsed = self.parser.parse(alias, correct_typos=False)
                if parsed.side is None and label.side is not None:
                    parsed = replace(parsed, side=label.side)
                self.alias_entries.append(LabelEntry(value, label.name, parsed, label.prompt))
        # each name and alias under each of its tokens: a text's candidates are found without a scan of the map
        self._by_token: dict[str, list[tuple[int, LabelEntry]]] = {}
        for position, entry in enumerate((*self.entries, *self.alias_entries)):
            for token in entry.tokens:
                self._by_token.setdefault(token, []).append((position, entry))
        lesion_words = lexicon.lesion_words
        self.lesion_entries = [e for e in self.entries if e.tokens & lesion_words]
        self.anatomy_entries = [e for e in self.entries if not e.tokens & lesion_words]
        self.anatomy_tokens = frozenset(t for e in self.entries for t in e.tokens) - lesion_words

    def entries_with_any(self, tokens) -> list[LabelEntry]:
        """The names and aliases that hold at least one of `tokens`, each once, in table order."""
        found: dict[int, LabelEntry] = {}
        for token in tokens:
            for position, entry in self._by_token.get(token, ()):
                found[position] = entry
        return [found[position] for position in sorted(found)]

    @classmethod
    def from_json(cls, path: str | Path) -> LabelTable:
        return cls(read_label_map_json(path))

    def names(self) -> dict[str, int]:
        return {e.name: e.id for e in self.entries}

    def aliases_by_name(self) -> dict[str, list[str]]:
        """{label name: the team's aliases} for the labels that have some."""
        return {self.by_id[i].name: list(a) for i, a in sorted(self.aliases.items())}

    def __len__(self) -> int:
        return len(self.entries)

    def names_label(self, value: int, name: str) -> bool:
        """Whether `name` names this table's label `value` (its name or an alias), read by the same conventions:
        case, separators, word order and the spelling of the side aside ("Kidney_L" names "left kidney")."""
        entry = self.by_id.get(value)
        if entry is None:
            return False
        key = self._name_key(name)
        return any(key == self._name_key(known) for known in (entry.name, *self.aliases.get(value, ())))

    def _name_key(self, name: str) -> frozenset[str]:
        words = self._lexicon.words(decode_label_name(name, self._lexicon, self._conventions))
        return frozenset(self._lexicon.side_of(w) or w for w in words)


def read_label_map_json(path: str | Path) -> dict:
    """The label map file at `path` as a non-empty JSON object; BadRequest when it is missing, unreadable, not
    JSON or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadRequest(f"Label map {path} does not exist.") from None
    except (OSError, ValueError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise BadRequest(f"Label map {path} is not valid JSON ({str(exc).splitlines()[0][:120]}); expected "
                         '{"1": "liver", ...}.') from None
    if not isinstance(data, dict) or not data:
        raise BadRequest(f"Label map {path} must be a non-empty JSON object such as {{\"1\": \"liver\"}}.")
    return data


BACKGROUND_NAMES = frozenset({"background", "bg", "_background_", "clear_label"})


def _name_of(value) -> str | None:
    """A label's name: the value itself, or the "name" of a {"name": ..., "aliases": [...]} entry."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"]
    return None


def label_mapping(labels: Mapping, strict: bool = True) -> dict[int, str]:
    """The one reader of label maps: {"1": "liver"} or {"1": {"name": "liver", "aliases": ["hepar"]}} (value ->
    name) or {"liver": 1} / {"liver": "1"} (name -> value), as {value: name} without background (value 0 or a name
    in BACKGROUND_NAMES, any case). An entry that is neither form raises BadRequest when `strict`, else is
    skipped."""
    out: dict[int, str] = {}
    for key, value in labels.items():
        name = _name_of(value)
        if name is not None and str(key).lstrip("-").isdigit() and not name.strip().lstrip("-").isdigit():
            out[int(key)] = name
        elif isinstance(key, str) and (isinstance(value, int) and not isinstance(value, bool)
                                       or isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            out[int(value)] = key
        elif strict:
            raise BadRequest(f"Label map entry {key!r}: {value!r} is neither id -> name nor name -> id.")
    return {v: n for v, n in out.items() if v != 0 and n.strip().lower() not in BACKGROUND_NAMES}


def label_aliases(labels: Mapping) -> dict[int, tuple[str, ...]]:
    """The team's own aliases of a label map's {"5": {"name": "liver", "aliases": ["hepar"]}} entries, by value."""
    out: dict[int, tuple[str, ...]] = {}
    for key, value in labels.items():
        if isinstance(value, Mapping) and str(key).lstrip("-").isdigit():
            aliases = value.get("aliases") or ()
            if isinstance(aliases, str):
                aliases = (aliases,)
            found = tuple(a.strip() for a in aliases if isinstance(a, str) and a.strip())
            if found:
                out[int(key)] = found
    return out


EmbeddingScorer = Callable[[str, list[LabelEntry]], list[float]]


class Resolver:
    """Resolves texts against one LabelTable. `study_region` ("head" / "body" / None) enables out-of-region refusals.

    `embed` (optional) scores a text against entries by sentence-embedding cosine; it is consulted only when
    token matching finds nothing and the text holds words the lexicon does not know.
    """

    def __init__(self, table: LabelTable, embed: EmbeddingScorer | None = None, embed_threshold: float = 0.55):
        self.table = table
        self.parser = table.parser
        self.embed = embed
        self.embed_threshold = embed_threshold

    def parse(self, text: str) -> ParsedText:
        return self.parser.parse(text)

    def resolve(self, text: str, study_region: str | None = None, required_side: str | None = None,
                request: ParsedText | None = None) -> Resolution:
        """Resolve `text`. `required_side` (the side the raw request states) vetoes any other side; `request` (the
        raw request's parse, when `text` is a reasoner's answer) keeps what the request restricts to: a part the
        map holds only whole is refused, whatever the answer says."""
        parsed = self.parser.parse(text)
        readings = (parsed,) if request is None else (parsed, request)
        conflict = next((p for p in readings if p.side == SIDE_CONFLICT), None)
        if conflict is not None or required_side == SIDE_CONFLICT:
            said = "; ".join((conflict or parsed).side_words)
            return self._refuse("side_conflict", conflict or parsed, "the request gives two sides that disagree"
                                + (f" ({said})" if said else "") + "; say left or right")
        unknown = next((p for p in readings if p.side == SIDE_UNKNOWN), None)
        if unknown is not None:
            return self._refuse("ambiguous_side", unknown, "the request's side cannot be told from what it says ("
                                + "; ".join(unknown.side_words) + "); say left or right")
        resolution = self._resolve(parsed, text, study_region, required_side)
        restricting = next((p for p in readings if p.restricted), None)
        if resolution.ok and restricting is not None:
            entry = resolution.entry
            named = [*(part for part, _ in restricting.part_of),
                     *(w for w in restricting.part_words
                       if w not in entry.tokens and w not in restricting.concept_tokens)]
            if named:  # "only the tail of the pancreas" on a map of the whole pancreas
                return self._refuse(
                    "not_in_vocabulary", restricting,
                    f"the request asks for only part of '{entry.name}' ({', '.join(dict.fromkeys(named))}), which "
                    f"this label map holds only whole; ask for the whole '{entry.name}' or draw the part by hand",
                    suggestions=[entry.name])
        return resolution

    def _resolve(self, parsed: ParsedText, text: str, study_region: str | None,
                 required_side: str | None) -> Resolution:
        if not parsed.tokens and not parsed.pathology and not parsed.unknown:
            if parsed.side:
                return self._refuse("empty", parsed, f"'{text}' states a side ({parsed.side}) but no structure.")
            return self._refuse("empty", parsed, "The request names no structure to segment.")
        region_clash = self._region_clash(parsed, study_region)
        if region_clash:
            return self._refuse("out_of_region", parsed, region_clash)
        side = parsed.side
        if required_side in (LEFT, RIGHT) and side in (LEFT, RIGHT) and side != required_side:
            return self._refuse(
                "side_conflict",
                parsed,
                f"the answer names the {side} side but the request asks for the {required_side} side",
            )
        side = side or required_side
        lex = self.parser.lexicon
        lesion_words = [w for w in (*parsed.pathology, *parsed.tokens) if w in lex.lesion_words]
        lesion_labels = self.table.lesion_entries
        if lesion_words and lesion_labels:
            return self._resolve_lesion(parsed, side, list(parsed.asked) or lesion_words, lesion_labels)
        if parsed.pathology and not (set(parsed.pathology) & self.parser.label_vocabulary):
            return self._refuse(
                "lesion_not_supported",
                parsed,
                f"'{' '.join(parsed.pathology)}' asks for a lesion, which this backbone's vocabulary does not hold;"
                " it segments named anatomy",
            )
        candidates = _one_per_label([e for e in self.table.entries_with_any(parsed.token_set)
                                     if self._covers(parsed, e)])
        if candidates:
            return self._choose(parsed, side, candidates)
        wholes = {c.key: c for c in parsed.concepts}
        in_parts = [e for e in self.table.entries if _side_ok(e.side, side) and any(
            (whole := lex.part_concepts.get(c.key)) is not None and whole.key in wholes for c in e.parsed.concepts)]
        if in_parts:  # "the prostate" on a map of its zones, "the right lung" on a map of lobes
            names = sorted(e.name for e in in_parts)
            asked = ", ".join(dict.fromkeys(lex.part_concepts[c.key].name for e in in_parts for c in e.parsed.concepts
                                            if c.key in lex.part_concepts))
            return self._refuse("not_in_vocabulary", parsed, f"this label map holds the {asked} only in parts "
                                f"({', '.join(names[:6])}); ask for one of them", suggestions=names)
        if self.embed is not None and (parsed.unknown or parsed.tokens):
            found = self._embedding_match(parsed, side)
            if found is not None:
                return found
        if not parsed.tokens:
            if set(self.parser.lexicon.split(text)) & self.parser.lexicon.generic_words:
                return self._refuse(
                    "not_in_vocabulary", parsed,
                    f"'{text}' describes a structure, but none that this backbone's vocabulary holds",
                )
            return self._refuse(
                "nonsense", parsed, f"No anatomical structure was recognised in '{text}'"
            )
        return self._refuse(
            "not_in_vocabulary",
            parsed,
            f"'{self._phrase(parsed)}' is not in this backbone's vocabulary",
        )

    # -- helpers -------------------------------------------------------------------------------------------------
    def _lesion_classes(self, words) -> set[str]:
        lesion_class = self.parser.lexicon.lesion_class
        return {lesion_class[w] for w in words if w in lesion_class}

    def _resolve_lesion(self, parsed: ParsedText, side: str | None, words: list[str],
                        labels: list[LabelEntry]) -> Resolution:
        """A lesion request on a map with lesion labels: the one lesion label whose class and site fit.

        Classes: a must-match class of the request ("fracture", "edema") must be the label's; "metastases" or
        "enhancing" must be when some lesion label of the map has it; generic words ("lesion", "tumour") fit any
        tumour-family label. Site: a structure the request names must be one of the map's (a lesion-only map such
        as BrainMetShare's takes any), and a label's own site ("liver" in liver_tumor) must be the one named."""
        lex = self.parser.lexicon
        asked = self._lesion_classes(words)
        present = set().union(*(self._lesion_classes(e.tokens) for e in labels))
        required = {c for c in asked if c not in lex.lesion_generic and (c not in lex.lesion_if_present or c in present)}
        if required - lex.lesion_parts or asked - lex.lesion_parts - required:  # "the necrotic centre of the met"
            required -= {c for c in lex.lesion_parts if c not in present}
        sites = {t for c in parsed.concepts if c.key not in lex.lay_containers  # "CT abdomen" names no site
                 for t in c.tokens} - lex.lesion_words  # structures named, not "pole"
        anatomy = self.table.anatomy_entries
        if sites and anatomy:
            known = self.table.anatomy_tokens
            if not sites <= known:
                return self._refuse(
                    "not_in_vocabulary", parsed,
                    f"the lesion asked for lies in {', '.join(sorted(sites - known))}, which this label map does not "
                    f"hold (its lesion labels: {', '.join(e.name for e in labels)})",
                    suggestions=[e.name for e in labels],
                )
        named_anatomy = [e for e in anatomy if e.tokens and e.tokens <= sites]
        if named_anatomy and parsed.joins_targets:
            names = sorted({*(e.name for e in named_anatomy), *(e.name for e in labels)})
            return self._refuse("multiple_targets", parsed,
                                f"the request names a structure and a lesion ({', '.join(names[:5])}); SEER segments "
                                "one target per request", suggestions=names)
        fits = []
        for entry in labels:
            classes = self._lesion_classes(entry.tokens)
            if (required and not required <= classes) or (not required and not classes & lex.tumor_family):
                continue
            if any(len((asked | classes) & group) > 1 for group in lex.lesion_exclusive):
                continue  # a glioblastoma is no metastasis
            site = entry.parsed.concept_tokens - lex.lesion_words
            if site and sites and not site <= sites:
                continue
            if _side_ok(entry.side, side):
                fits.append(entry)
        names = sorted(e.name for e in fits)
        if not fits:
            return self._refuse(
                "lesion_not_supported", parsed,
                f"'{' '.join(dict.fromkeys(words))}' asks for a lesion that none of this map's lesion labels "
                f"({', '.join(e.name for e in labels)}) holds",
                suggestions=[e.name for e in labels],
            )
        if len(fits) == 1:
            return Resolution(kind=MATCH, parsed=parsed, entry=fits[0], method="lesion label")
        if len({e.tokens for e in fits}) == 1:
            return self._refuse("ambiguous_side", parsed,
                                f"that lesion label exists on both sides; say left or right ({', '.join(names)})",
                                suggestions=names)
        return self._refuse("multiple_targets", parsed,
                            f"several lesion labels fit ({', '.join(names)}); name the one to segment",
                            suggestions=names)

    @staticmethod
    def _covers(parsed: ParsedText, entry: LabelEntry) -> bool:
        """All of the entry's tokens are in the text, and no concept of the text is only partly in the entry
        ("LV" = heart ventricle must not match "heart")."""
        if not entry.tokens or not entry.tokens <= parsed.token_set:
            return False
        return all(
            set(c.tokens) <= entry.tokens or not (set(c.tokens) & entry.tokens) for c in parsed.concepts
        )

    def _choose(self, parsed: ParsedText, side: str | None, candidates: list[LabelEntry]) -> Resolution:
        sided = [e for e in candidates if _side_ok(e.side, side)]
        if not sided:  # only a stated side can exclude every candidate
            others = sorted({e.name for e in candidates})
            return self._refuse(
                "side_not_available",
                parsed,
                f"the {side} side of '{self._phrase(parsed)}' is not in this backbone's vocabulary "
                f"(it has {', '.join(others[:6])}); laterality is never swapped",
                suggestions=others,
            )
        best_size = max(len(e.tokens) for e in sided)
        top = [e for e in sided if len(e.tokens) == best_size]
        if len(top) > 1:
            names = sorted(e.name for e in top)
            if len({e.tokens for e in top}) == 1 and len({e.side for e in top}) > 1:
                if side == BOTH:
                    return self._refuse(
                        "multiple_targets",
                        parsed,
                        f"both sides were asked for; SEER segments one target per request: ask for {' or '.join(names[:2])}",
                        suggestions=names,
                    )
                return self._refuse(
                    "ambiguous_side",
                    parsed,
                    f"'{self._phrase(parsed)}' exists on both sides; say left or right ({', '.join(names)})",
                    suggestions=names,
                )
            return self._refuse(
                "multiple_targets",
                parsed,
                f"the request names several structures ({', '.join(names[:5])}); SEER segments one target per request",
                suggestions=names,
            )
        entry = top[0]
        extra_parts = [p for p in parsed.parts if p not in entry.tokens]
        if extra_parts:
            return self._refuse(
                "not_in_vocabulary",
                parsed,
                f"'{self._phrase(parsed)} {' '.join(extra_parts)}' (a part of or a vessel or duct beside "
                f"'{entry.name}') is not in this backbone's vocabulary",
                suggestions=[entry.name, *self.suggestions(parsed)],
            )
        rivals = [e for e in sided if e is not entry and not e.tokens <= entry.tokens]
        if rivals:
            names = sorted({entry.name, *(e.name for e in rivals)})
            return self._refuse(
                "multiple_targets",
                parsed,
                f"the request names several structures ({', '.join(names[:5])}); SEER segments one target per request",
                suggestions=names,
            )
        lex = self.parser.lexicon
        unheld = [c for c in parsed.concepts if c.key not in lex.lay_containers and not set(c.tokens) & entry.tokens]
        if unheld:  # "segment the liver plus the gallbladder" on a map without a gallbladder: not the liver alone
            names = ", ".join(c.name for c in unheld)
            kind = "multiple_targets" if parsed.joins_targets else "not_in_vocabulary"
            return self._refuse(kind, parsed, f"the request also names {names}, which this backbone's vocabulary does "
                                f"not hold beside '{entry.name}'; name one structure it holds",
                                suggestions=[entry.name, *self.suggestions(parsed)])
        if entry.side is None and side in (LEFT, RIGHT) and self._is_paired(entry):
            return self._refuse(
                "side_not_available",
                parsed,
                f"this vocabulary has '{entry.name}' without a side, so the {side} one alone cannot be segmented",
                suggestions=[entry.name],
            )
        return Resolution(kind=MATCH, parsed=parsed, entry=self.table.by_id[entry.id],
                          method="tokens" if self.table.by_id[entry.id] is entry else "alias")

    def _is_paired(self, entry: LabelEntry) -> bool:
        return entry.side is None and not any(not c.paired for c in entry.parsed.concepts)

    def _embedding_match(self, parsed: ParsedText, side: str | None) -> Resolution | None:
        pool = [e for e in self.table.entries if _side_ok(e.side, side) and (side is not None or e.side is None
                or not self._has_mirror(e))]
        if not pool:
            return None
        query = " ".join(([side] if side in (LEFT, RIGHT) else []) + list(parsed.tokens) + list(parsed.unknown))
        scores = self.embed(query, pool)
        ranked = sorted(zip(scores, range(len(pool)), strict=True), reverse=True)
        best_score, best_index = ranked[0]
        runner_up = ranked[1][0] if len(ranked) > 1 else -1.0
        if best_score >= self.embed_threshold and best_score - runner_up >= 0.02:
            return Resolution(kind=MATCH, parsed=parsed, entry=pool[best_index], method="embedding")
        return None

    def _has_mirror(self, entry: LabelEntry) -> bool:
        return any(e.tokens == entry.tokens and e.side not in (None, entry.side) for e in self.table.entries)

    def _region_clash(self, parsed: ParsedText, study_region: str | None) -> str:
        if study_region is None or not parsed.concepts:
            return ""
        regions = {coarse_region(c.region) for c in parsed.concepts}
        imaged_in = {coarse for c in parsed.concepts for r in c.regions or (c.region,) for coarse in imaged_with(r)}
        if study_region in regions | imaged_in or len(regions) != 1:  # (the cervical esophagus on a head study)
            return ""
        names = ", ".join(c.name for c in parsed.concepts)
        where = "the head" if study_region == "head" else "the body trunk or limbs"
        belongs = "the head" if regions == {"head"} else "the body"
        return f"out of region: the request names {names} ({belongs}) but this study shows {where}"

    def _phrase(self, parsed: ParsedText) -> str:
        words = ([parsed.side] if parsed.side in (LEFT, RIGHT) else []) + list(parsed.tokens or parsed.unknown)
        words += list(parsed.pathology)
        return " ".join(words) or parsed.text

    def suggestions(self, parsed: ParsedText, limit: int = 5) -> list[str]:
        """Nearest supported targets by shared tokens, then by spelling."""
        scored: list[tuple[float, str]] = []
        want = parsed.token_set | set(parsed.unknown)
        text = " ".join(parsed.tokens + parsed.unknown)
        for entry in self.table.entries:
            if parsed.side in (LEFT, RIGHT) and entry.side not in (None, parsed.side):
                continue
            overlap = len(want & entry.tokens) / max(1, len(want | entry.tokens))
            spelling = difflib.SequenceMatcher(None, text, " ".join(sorted(entry.tokens))).ratio()
            scored.append((overlap * 2 + spelling * 0.5, entry.name))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [name for score, name in scored[:limit] if score > 0.3]

    def _refuse(self, kind: str, parsed: ParsedText, reason: str, suggestions: Iterable[str] | None = None) -> Resolution:
        names = list(dict.fromkeys(suggestions)) if suggestions is not None else self.suggestions(parsed)
        if kind in ("not_in_vocabulary", "nonsense", "lesion_not_supported", "out_of_region") and names:
            reason = f"{reason}; nearest supported targets: {', '.join(names[:5])}"
        elif kind in ("not_in_vocabulary", "nonsense") and self.table.entries:
            examples = ", ".join(e.name for e in self.table.entries[:5])
            reason = f"{reason}; this backbone segments e.g. {examples}"
        return Resolution(kind=kind, parsed=parsed, reason=_sentence(reason), suggestions=names)


def _one_per_label(entries: list[LabelEntry]) -> list[LabelEntry]:
    """One candidate per label value: the name or alias that covers the most of the text."""
    best: dict[int, LabelEntry] = {}
    for entry in entries:
        if entry.id not in best or len(entry.tokens) > len(best[entry.id].tokens):
            best[entry.id] = entry
    return list(best.values())


def _side_ok(entry_side: str | None, want: str | None) -> bool:
    if want in (LEFT, RIGHT):
        return entry_side in (want, None)
    return True


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
