"""The SEER skill bank: schema (SEER-MODEL-CONTRACT.md), atomic storage, and request-time retrieval.

Retrieval uses only what a deployed system knows when a request arrives: the raw text (its style and the target
it names, as the lexicon reads it) and the image evidence (its visual cue). The reference scorer's weights are
kept (style +4, canonical +6, alias +3, cue +2, dataset +3, +0.4 per shared token, +0.2 x score_hint), but every
term is computed from request-time estimates instead of the evaluation row's ground truth.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
from filelock import FileLock

from seer.errors import BadRequest
from seer.files import write_atomic
from seer.reasoning.lexicon import ParsedText, coarse_region
from seer.reasoning.parser import Parser
from seer.settings import KEYS

TAGS = (
    "ABBR_DISAMBIGUATE",
    "MESSY_INPUT_REPAIR",
    "OUT_OF_REGION_REJECT",
    "CLINICAL_REQUEST_NORMALIZE",
    "REPORT_STYLE_PARSE",
    "VERBOSE_PRUNE",
    "PROMPT_NORMALIZE",
)
STYLE_TO_TAG = {
    "abbr_or_short": "ABBR_DISAMBIGUATE",
    "ambiguous_abbreviation": "ABBR_DISAMBIGUATE",
    "messy_or_misspelled": "MESSY_INPUT_REPAIR",
    "out_of_region_reference": "OUT_OF_REGION_REJECT",
    "clinical_request": "CLINICAL_REQUEST_NORMALIZE",
    "report_style": "REPORT_STYLE_PARSE",
    "verbose_request": "VERBOSE_PRUNE",
    "formal_task": "PROMPT_NORMALIZE",
}
DEFAULT_TOP_K = 3
DEFAULT_MIN_SCORE = 8.0
_STOPWORDS = {
    "the", "a", "an", "to", "of", "for", "and", "or", "on", "in", "with", "this", "that", "please", "segment",
    "delineate", "outline", "mark", "identify", "locate", "need", "region", "structure", "organ", "segmentation",
    "show", "shows", "image", "images", "case", "view", "scan", "provided", "review",
}
_WORD = re.compile(r"[A-Za-z0-9_\-/]+")
_REPORT = re.compile(
    r"\b(findings?|impression|there is|there are|noted|consistent with|suspicious|status post|s/p|history of|hx|"
    r"r/o|rule out|evaluate for|measuring|measures|compared|prior|demonstrat\w*|unremarkable)\b|\d+(\.\d+)?\s?(cm|mm)\b",
    re.IGNORECASE,
)
_CLINICAL = re.compile(
    r"\b(contour\w*|delineat\w*|outline|planning|radiotherapy|oar|volumetry|volume|measure\w*|quantif\w*|pre-?op\w*|"
    r"surg\w*|for (the )?(tumou?r )?board|needed|asap|stat)\b",
    re.IGNORECASE,
)
_INFORMAL = re.compile(r"\b(pls|plz|thx|ty|u|ur|gimme|wanna|lol|asap)\b", re.IGNORECASE)


def words(text: str) -> set[str]:
    """The reference's bag of words: [A-Za-z0-9_-/]+ lowercased, minus stopwords and 1-letter tokens."""
    return {w for w in _WORD.findall((text or "").lower()) if w not in _STOPWORDS and len(w) > 1}


def skill_id_for(source_key: str, content: str) -> str:
    return "seer:" + hashlib.sha1(f"{source_key}|{content}".encode()).hexdigest()[:12]


@dataclass
class Skill:
    """One skill-bank row: the contract schema, then what the annotation loop learns about it.

    uses: rewarded requests that credited the skill; gain_sum / drop_sum: summed positive Dice gains and summed Dice
    drops (as positive numbers) over those requests; utility = gain_sum - penalty x drop_sum (set at each round
    close); provenance: the requests that made or used it ({round, how, study, request, trace_id, dice, gain}).
    """

    skill_id: str
    source_key: str
    tag: str
    content: str
    audit: str
    dataset: str = ""
    style_bucket: str = ""
    canonical: str = ""
    aliases: list[str] = field(default_factory=list)
    vis_cue: str = "GENERIC_MEDICAL_IMAGE"
    score_hint: float = 0.0
    dice_gain: float = 0.0
    uses: int = 0
    gain_sum: float = 0.0
    drop_sum: float = 0.0
    utility: float = 0.0
    created_round: int = 0
    provenance: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, row: dict, where: str = "") -> Skill:
        missing = [k for k in ("skill_id", "tag", "content") if not row.get(k)]
        if missing:
            raise BadRequest(f"Skill bank row {where} lacks {', '.join(missing)}.")
        if row["tag"] not in TAGS:
            raise BadRequest(f"Skill bank row {where} has unknown tag {row['tag']!r}; tags are {', '.join(TAGS)}.")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in row.items() if k in known}
        try:
            values["aliases"] = [str(a) for a in values.get("aliases") or []]
            values["score_hint"] = float(values.get("score_hint") or 0.0)
            values["dice_gain"] = float(values.get("dice_gain", values["score_hint"]) or 0.0)
            for key in ("gain_sum", "drop_sum", "utility"):
                values[key] = float(values.get(key) or 0.0)
            for key in ("uses", "created_round"):
                values[key] = int(values.get(key) or 0)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"Skill bank row {where} has a non-numeric statistic ({exc}).") from None
        values["provenance"] = [p for p in values.get("provenance") or [] if isinstance(p, dict)]
        for key in ("source_key", "audit", "dataset", "style_bucket", "canonical"):
            values[key] = str(values.get(key) or "")
        values["vis_cue"] = str(values.get("vis_cue") or "GENERIC_MEDICAL_IMAGE")
        return cls(**values)

    def to_dict(self) -> dict:
        """The row as written to the bank file (a shallow copy: lists and provenance entries are shared)."""
        return {name: getattr(self, name) for name in _SKILL_FIELDS}


_SKILL_FIELDS = tuple(Skill.__dataclass_fields__)


@dataclass(frozen=True)
class RequestCue:
    """What retrieval may know about a request: its style, the target the lexicon reads in it, the image cue."""

    style: str
    target_tokens: frozenset[str]
    side: str | None
    words: frozenset[str]
    text: str
    vis_cue: str = "GENERIC_MEDICAL_IMAGE"
    dataset: str = ""


def request_style(raw: str, parsed: ParsedText, study_region: str | None = None) -> str:
    """Guess the request's style bucket from its text (and, for out-of-region, the image's region)."""
    concept_regions = {coarse_region(c.region) for c in parsed.concepts}
    if study_region and concept_regions and study_region not in concept_regions:
        return "out_of_region_reference"
    if _REPORT.search(raw):
        return "report_style"
    n_words = len(raw.split())
    if n_words > 14:
        return "verbose_request"
    if parsed.corrections or _INFORMAL.search(raw):
        return "messy_or_misspelled"
    if parsed.expansions or parsed.side_words and any(len(w) <= 3 for w in parsed.side_words) or _has_acronym(raw):
        return "abbr_or_short"
    if _CLINICAL.search(raw):
        return "clinical_request"
    if n_words <= 2:
        return "abbr_or_short"
    return "formal_task"


def _has_acronym(raw: str) -> bool:
    return any(2 <= len(w) <= 4 and w.isupper() and w.isalpha() for w in re.findall(r"[A-Za-z]+", raw))


class SkillBank:
    """Skills in memory plus their JSONL file. Saving is atomic (temp file + fsync + rename) under a file lock.

    A bank is not edited in place once it serves requests: skill evolution builds a new bank per round
    (`evolve`), so retrieval can keep an index and `version` (a hash of the content) never goes stale.
    """

    def __init__(self, skills: Iterable[Skill] = (), path: str | os.PathLike | None = None):
        self.skills: dict[str, Skill] = {}
        for skill in skills:
            self.skills.setdefault(skill.skill_id, skill)
        self.path = Path(path) if path else None
        self._version: str | None = None
        self._payload: bytes | None = None
        self._index: RetrievalIndex | None = None
        self._index_lock = threading.Lock()
        self._groups: dict[tuple, frozenset[str]] | None = None
        self.merged_keep: int | None = None  # set by `evolve`: no merge group holds more skills than this

    def __len__(self) -> int:
        return len(self.skills)

    def groups(self) -> dict[tuple, frozenset[str]]:
        """Merge groups: (dataset, tag, canonical) -> skill ids; built once per bank, carried forward by `evolve`."""
        if self._groups is None:
            groups: dict[tuple, set[str]] = {}
            for skill in self.skills.values():
                groups.setdefault(_group_key(skill), set()).add(skill.skill_id)
            self._groups = {key: frozenset(ids) for key, ids in groups.items()}
        return self._groups

    @classmethod
    def _evolved(cls, skills: dict[str, Skill], groups: dict[tuple, frozenset[str]], merged_keep: int) -> SkillBank:
        bank = cls()
        bank.skills = skills
        bank._groups = groups
        bank.merged_keep = merged_keep
        return bank

    @property
    def version(self) -> str:
        """Content hash of the bank (12 hex), computed once; call `touch()` after editing `skills` in place."""
        if self._version is None:
            self._version = _digest(self.payload())
        return self._version

    def touch(self) -> None:
        self._version = None
        self._payload = None
        self._index = None
        self._groups = None
        self.merged_keep = None

    def payload(self) -> bytes:
        """The JSONL text of the bank, rows sorted by (dataset, tag, skill_id); built once."""
        if self._payload is None:
            rows = sorted(self.skills.values(), key=lambda s: (s.dataset, s.tag, s.skill_id))
            self._payload = "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in rows).encode("utf-8")
        return self._payload

    @classmethod
    def load(cls, path: str | os.PathLike) -> SkillBank:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadRequest(f"Skill bank {path} does not exist.") from None
        except OSError as exc:
            raise BadRequest(f"Skill bank {path} could not be read ({exc.strerror}).") from None
        return cls.loads(data, path)

    @classmethod
    def loads(cls, data: bytes, where: str | os.PathLike) -> SkillBank:
        """A bank from its JSONL bytes (as `payload()` writes them); `where` names it in errors and is its path."""
        name = Path(str(where)).name
        skills = []
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"Skill bank {where} line {number} is not JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise BadRequest(f"Skill bank {where} line {number} is not a JSON object.")
            skills.append(Skill.from_dict(row, f"{name}:{number}"))
        bank = cls(skills, where)
        bank._version = _digest(data)  # the bytes are what `payload()` wrote: no need to serialize them again
        return bank

    @classmethod
    def starter(cls) -> SkillBank:
        """The bundled starter skills (data/starter_skills.jsonl)."""
        with resources.as_file(resources.files("seer").joinpath("data/starter_skills.jsonl")) as path:
            bank = cls.load(path)
        bank.path = None
        return bank

    def save(self, path: str | os.PathLike | None = None) -> Path:
        target = Path(path or self.path or "")
        if not str(target):
            raise ValueError("no path to save the skill bank to")
        with FileLock(str(target) + ".lock"):
            write_atomic(target, self.payload())
        return target

    # -- retrieval -----------------------------------------------------------------------------------------------
    def cue(self, raw: str, parsed: ParsedText, vis_cue: str, study_region: str | None, dataset: str = "") -> RequestCue:
        return RequestCue(
            style=request_style(raw, parsed, study_region),
            target_tokens=parsed.token_set,
            side=parsed.side,
            words=frozenset(words(raw)),
            text=" ".join(parsed.tokens),
            vis_cue=vis_cue,
            dataset=dataset,
        )

    def score(self, skill: Skill, cue: RequestCue, parser: Parser) -> float:
        """The reference's hand-weighted score from request-time estimates (the terms are added in this order)."""
        score = 0.0
        if cue.dataset and skill.dataset == cue.dataset:
            score += 3.0
        if skill.style_bucket and STYLE_TO_TAG.get(skill.style_bucket) == STYLE_TO_TAG.get(cue.style):
            score += 4.0
        if skill.canonical and cue.target_tokens:
            canon = parser.parse(skill.canonical, correct_typos=False)
            if canon.token_set == cue.target_tokens and (canon.side or None) == (cue.side or None):
                score += 6.0
        if any(_alias_tokens(alias, parser) <= cue.target_tokens for alias in skill.aliases
               if _alias_tokens(alias, parser)):
            score += 3.0
        if skill.vis_cue == cue.vis_cue:
            score += 2.0
        score += 0.4 * len(cue.words & _content_words(skill))
        score += 0.2 * skill.score_hint
        return score

    def retrieve(
        self, cue: RequestCue, parser: Parser, k: int = DEFAULT_TOP_K, min_score: float = DEFAULT_MIN_SCORE
    ) -> list[tuple[Skill, float]]:
        """Top-k skills scoring at least `min_score`, best first (ties by id), through the bank's index."""
        return self.index(parser).top(cue, k, min_score)

    def retrieve_scan(
        self, cue: RequestCue, parser: Parser, k: int = DEFAULT_TOP_K, min_score: float = DEFAULT_MIN_SCORE
    ) -> list[tuple[Skill, float]]:
        """The same ranking by scoring every skill with `score` (the reference's linear scan; tests and bench)."""
        scored = [(self.score(s, cue, parser), s) for s in self.skills.values()]
        scored.sort(key=lambda x: (-x[0], x[1].skill_id))
        return [(s, round(sc, 2)) for sc, s in scored[:k] if sc >= min_score]

    def index(self, parser: Parser) -> RetrievalIndex:
        """The retrieval index for `parser`'s vocabulary, built on first use (one per bank and label table)."""
        index = self._index
        if index is not None and index.parser is parser:
            return index
        with self._index_lock:
            if self._index is None or self._index.parser is not parser:
                self._index = RetrievalIndex(self, parser)
            return self._index

    def get(self, ids: Sequence[str]) -> list[Skill]:
        return [self.skills[i] for i in ids if i in self.skills]


def _digest(payload: bytes) -> str:
    return hashlib.sha1(payload).hexdigest()[:12]


def _alias_tokens(alias: str, parser: Parser) -> frozenset[str]:
    return parser.parse(alias, correct_typos=False).token_set


def _content_words(skill: Skill) -> set[str]:
    return words(skill.content + " " + skill.tag)


_WORD_IDS: dict[str, int] = {}  # every content word seen, numbered (shared by all banks' indexes)
_CONTENT_WORD_IDS: dict[str, tuple[int, ...]] = {}  # content + tag -> its word ids, cached across banks
_WORD_IDS_LOCK = threading.Lock()


def _content_word_ids(skill: Skill) -> tuple[int, ...]:
    text = skill.content + " " + skill.tag
    found = _CONTENT_WORD_IDS.get(text)
    if found is None:
        with _WORD_IDS_LOCK:  # two indexes built at once must not number two words alike
            if len(_CONTENT_WORD_IDS) > 200_000:
                _CONTENT_WORD_IDS.clear()
            found = _CONTENT_WORD_IDS[text] = tuple(
                _WORD_IDS.setdefault(w, len(_WORD_IDS)) for w in sorted(words(text))
            )
    return found


_UNKNOWN = "\x00unknown style"  # a style outside STYLE_TO_TAG: `score` compares it as None == None


class RetrievalIndex:
    """Scores every skill of a bank at once, exactly as `SkillBank.score` does, from precomputed columns.

    Static terms (dataset, style tag, visual cue, score_hint) are integer-coded numpy columns; the canonical target
    is a dict from (tokens, side) to rows; aliases are posted under each of their tokens and checked for
    containment; content words are an inverted index counted with numpy. Rows are in skill-id order, so a stable
    sort on score keeps the reference's tie-break (ties by id).
    """

    def __init__(self, bank: SkillBank, parser: Parser):
        self.parser = parser
        self.skills = [bank.skills[sid] for sid in sorted(bank.skills)]
        n = len(self.skills)
        self._codes: dict[str, int] = {}
        self.dataset = np.array([self._code(s.dataset) for s in self.skills], dtype=np.int64)
        self.tag = np.array([self._code(STYLE_TO_TAG.get(s.style_bucket, _UNKNOWN)) if s.style_bucket else -1
                             for s in self.skills], dtype=np.int64)
        self.cue_code = np.array([self._code(s.vis_cue) for s in self.skills], dtype=np.int64)
        self.hint = np.array([s.score_hint for s in self.skills], dtype=np.float64)
        self.canonical: dict[tuple, list[int]] = {}
        self.alias_postings: dict[str, list[tuple[int, frozenset[str]]]] = {}
        word_ids = []
        for row, skill in enumerate(self.skills):
            if skill.canonical:
                canon = parser.parse(skill.canonical, correct_typos=False)
                self.canonical.setdefault((canon.token_set, canon.side or None), []).append(row)
            for alias in skill.aliases:
                tokens = _alias_tokens(alias, parser)
                if tokens:
                    self.alias_postings.setdefault(min(tokens), []).append((row, tokens))
            word_ids.append(_content_word_ids(skill))
        # content words: (word id, row) pairs sorted by word id; a word's rows are one slice of `word_rows`
        counts = np.fromiter(map(len, word_ids), dtype=np.int64, count=n)
        flat = np.fromiter((w for ids in word_ids for w in ids), dtype=np.int64, count=int(counts.sum()))
        rows = np.repeat(np.arange(n, dtype=np.int64), counts)
        order = np.argsort(flat, kind="stable")
        flat, self.word_rows = flat[order], rows[order]
        unique, starts = np.unique(flat, return_index=True)
        ends = starts[1:].tolist() + [flat.size] if flat.size else []  # no skills (or no words): no slices
        self.word_slices = dict(zip(unique.tolist(), zip(starts.tolist(), ends, strict=True), strict=True))
        self.size = n

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def scores(self, cue: RequestCue) -> np.ndarray:
        """(n,) float64 scores, term for term the same floating-point sums as `SkillBank.score`."""
        n = self.size
        score = np.zeros(n, dtype=np.float64)
        code = self._codes.get(cue.dataset, -2) if cue.dataset else -2
        score += np.where(self.dataset == code, 3.0, 0.0)
        code = self._codes.get(STYLE_TO_TAG.get(cue.style, _UNKNOWN), -2)
        score += np.where(self.tag == code, 4.0, 0.0)
        if cue.target_tokens:
            rows = self.canonical.get((cue.target_tokens, cue.side or None))
            if rows:
                bonus = np.zeros(n)
                bonus[rows] = 6.0
                score += bonus
            hit = np.zeros(n)
            for token in cue.target_tokens:
                for row, tokens in self.alias_postings.get(token, ()):
                    if tokens <= cue.target_tokens:
                        hit[row] = 3.0
            score += hit
        score += np.where(self.cue_code == self._codes.get(cue.vis_cue, -2), 2.0, 0.0)
        shared = np.zeros(n, dtype=np.int64)
        for word in cue.words:
            span = self.word_slices.get(_WORD_IDS.get(word, -1))
            if span is not None:
                shared[self.word_rows[span[0] : span[1]]] += 1
        score += 0.4 * shared
        score += 0.2 * self.hint
        return score

    def top(self, cue: RequestCue, k: int, min_score: float) -> list[tuple[Skill, float]]:
        if not self.size:
            return []
        score = self.scores(cue)
        rows = np.flatnonzero(score >= min_score)
        if rows.size == 0:
            return []
        if rows.size > k:  # only rows that can still be in the top k: scores at least the k-th best
            kth = np.partition(score[rows], rows.size - k)[rows.size - k]
            rows = rows[score[rows] >= kth]
        order = rows[np.argsort(-score[rows], kind="stable")][:k]
        return [(self.skills[r], round(float(score[r]), 2)) for r in order]


# -- evolution (between rounds; the bank is frozen within a round) ---------------------------------------------------
_TRIGGER = {
    "ABBR_DISAMBIGUATE": "ABBR({alias})",
    "MESSY_INPUT_REPAIR": "MESSY_OR_MISSPELLED",
    "OUT_OF_REGION_REJECT": "CROSS_REGION_TERM",
    "CLINICAL_REQUEST_NORMALIZE": "QUICK_CLINICAL_REQUEST",
    "REPORT_STYLE_PARSE": "REPORT_STYLE",
    "VERBOSE_PRUNE": "VERBOSE_REQUEST",
    "PROMPT_NORMALIZE": "FORMAL",
}
_ACTIONS = {
    "ABBR_DISAMBIGUATE": "EXPAND_TO_CANONICAL, KEEP_MINIMAL",
    "MESSY_INPUT_REPAIR": "REPAIR_SURFACE_FORM, PRESERVE_TARGET, KEEP_MINIMAL",
    "OUT_OF_REGION_REJECT": "DROP_OUT_OF_REGION_DETAIL, PRESERVE_IN_REGION_TARGET",
    "CLINICAL_REQUEST_NORMALIZE": "NORMALIZE_TO_SEGMENT_COMMAND, KEEP_MINIMAL",
    "REPORT_STYLE_PARSE": "PARSE_REPORT_LANGUAGE, CONVERT_TO_SEGMENT_COMMAND",
    "VERBOSE_PRUNE": "REMOVE_UNSUPPORTED_CONTEXT, KEEP_EFFECTIVE_CONSTRAINTS, KEEP_MINIMAL",
    "PROMPT_NORMALIZE": "NORMALIZE_PROMPT",
}


@dataclass(frozen=True)
class EvolutionSettings:
    """The contract's evolution rules with every number a setting.

    penalty: weight of Dice drops in utility (contract default 2.0; its run scripts use 1.0);
    harvest_min_dice / harvest_min_gain: a trace becomes a skill at Dice >= 0.5 and gain >= 0.3 (format valid);
    merge_keep: skills kept per (dataset, tag, canonical); cap_fraction / cap_min: the bank keeps at most
    max(cap_min, int(cap_fraction x requests seen)) skills (the contract's floor is 1; see docs/annotation-loop.md);
    provenance_keep: newest provenance entries kept per skill besides the one that made it.
    """

    penalty: float = KEYS["skill_penalty"][1]  # the defaults are the settings' (seer.settings.KEYS)
    harvest_min_dice: float = KEYS["skill_harvest_dice"][1]
    harvest_min_gain: float = KEYS["skill_harvest_gain"][1]
    merge_keep: int = KEYS["skill_merge_keep"][1]
    cap_fraction: float = KEYS["skill_cap_fraction"][1]
    cap_min: int = KEYS["skill_cap_min"][1]
    provenance_keep: int = 20


@dataclass(frozen=True)
class RewardedTrace:
    """One rewarded proposal, as evolution reads it (see seer.loop.rewards): the request after hygiene, SEER's answer,
    the normalized target phrase ("right hip bone"), request style and image cue, and the two Dice values."""

    trace_id: str
    study: str
    request: str
    answer: str
    target: str
    style: str
    vis_cue: str
    format_valid: bool
    credited: tuple[str, ...]
    dice: float
    raw_dice: float
    dataset: str = ""
    withdrawn: bool = False  # its label was rejected after it taught: evolution leaves it out

    @property
    def gain(self) -> float:
        """dice - raw_dice to 6 decimals, as the reward row stores it (0.7 - 0.4 is 0.3, not 0.29999...)."""
        return round(self.dice - self.raw_dice, 6)


@dataclass
class RoundReport:
    """What one round close did. `round` is the round the new bank serves; it evolved from round - 1."""

    round: int
    rewards: int
    requests_seen: int
    credited: dict[str, int] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    harvested: list[str] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)  # dropped skill -> the skill that took its aliases
    capped: list[str] = field(default_factory=list)
    skills_before: int = 0
    skills_after: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def credited_skills(rationale: str, retrieved: Sequence[str], tags: dict[str, str]) -> list[str]:
    """The skills a rationale names, by the most specific naming found: skill ids; else "[rank]" markers; else
    tags; when it names none, the top retrieved skill. `retrieved`: skill ids in rank order; `tags`: id -> tag."""
    if not retrieved:
        return []
    text = rationale or ""
    for named in (
        [sid for sid in retrieved if sid in text],
        [sid for rank, sid in enumerate(retrieved, start=1) if f"[{rank}]" in text],
        [sid for sid in retrieved if tags.get(sid) and tags[sid] in text],
    ):
        if named:
            return named
    return [retrieved[0]]


def harvest_skill(trace: RewardedTrace, round_number: int, dataset: str = "") -> Skill:
    """A new skill written from a high-reward trace: the request as alias -> SEER's answer, its style as trigger,
    the image cue, the target as canonical."""
    style = trace.style if trace.style in STYLE_TO_TAG else "formal_task"
    tag = STYLE_TO_TAG[style]
    alias = " ".join(trace.request.split())[:80]
    ds = trace.dataset or dataset or "local"
    cue = trace.vis_cue or "GENERIC_MEDICAL_IMAGE"
    trigger = _TRIGGER[tag].format(alias=alias)
    content = f"{alias}->{trace.answer}; trig={{RAW:{trigger}, VIS:{cue}, DS:{ds}}}; act={{{_ACTIONS[tag]}}}"
    source_key = f"{ds}|{trace.study}|{trace.target}|{trace.request}"
    skill_id = skill_id_for(source_key, content)
    audit = (
        f"id={skill_id}; src={ds}/{trace.study}; style={style}; reward={{ft_dice:{trace.dice:.3f}, "
        f"gain:{trace.gain:.3f}}}; harvested in round {round_number} from trace {trace.trace_id}"
    )
    return Skill(
        skill_id=skill_id, source_key=source_key, tag=tag, content=content, audit=audit, dataset=ds,
        style_bucket=style, canonical=trace.target, aliases=[alias], vis_cue=cue, score_hint=round(trace.dice, 4),
        dice_gain=round(trace.gain, 4), created_round=round_number,
        provenance=[_provenance(trace, round_number, "harvested")],
    )


def _provenance(trace: RewardedTrace, round_number: int, how: str) -> dict:
    return {"round": round_number, "how": how, "study": trace.study, "request": trace.request[:200],
            "trace_id": trace.trace_id, "dice": round(trace.dice, 4), "gain": round(trace.gain, 4)}


def _group_key(skill: Skill) -> tuple:
    return (skill.dataset, skill.tag, skill.canonical)


def _rank_key(skill: Skill) -> tuple:
    """Best first: Dice gain, then score hint, then uses, then id (deterministic)."""
    return (-skill.dice_gain, -skill.score_hint, -skill.uses, skill.skill_id)


def evolve(
    bank: SkillBank,
    traces: Sequence[RewardedTrace],
    round_number: int,
    requests_seen: int,
    settings: EvolutionSettings | None = None,
    dataset: str = "",
) -> tuple[SkillBank, RoundReport]:
    """Close a round: credit and utility, retirement, harvest, merge and cap. Returns the next round's bank.

    `traces`: the round's rewarded proposals in log order; `requests_seen`: rewarded requests so far (for the cap).
    Pure and deterministic: the same inputs give the same bank. Skills left unchanged are shared with `bank`, never
    edited; changed ones are copies, so the input bank stays valid for requests still using it.
    """
    started = time.perf_counter()
    rules = settings or EvolutionSettings()
    skills = dict(bank.skills)
    groups = dict(bank.groups())
    report = RoundReport(round=round_number, rewards=len(traces), requests_seen=requests_seen,
                         skills_before=len(skills))
    copies: dict[str, Skill] = {}

    def writable(skill_id: str) -> Skill:
        if skill_id not in copies:
            old = skills[skill_id]
            copies[skill_id] = replace(old, aliases=list(old.aliases), provenance=list(old.provenance))
            skills[skill_id] = copies[skill_id]
        return copies[skill_id]

    def remove(skill_id: str) -> Skill:
        skill = skills.pop(skill_id)
        key = _group_key(skill)
        members = groups[key] - {skill_id}
        if members:
            groups[key] = members
        else:
            del groups[key]
        return skill

    # credit and utility: gains where a skill was used, minus penalty x drops; below zero it retires
    for trace in traces:
        for skill_id in dict.fromkeys(trace.credited):
            if skill_id not in skills:
                continue  # retired or merged away since the trace was made
            skill = writable(skill_id)
            skill.uses += 1
            gain = trace.gain
            if gain >= 0:
                skill.gain_sum = round(skill.gain_sum + gain, 6)
            else:
                skill.drop_sum = round(skill.drop_sum - gain, 6)
            skill.provenance = _keep_provenance(skill.provenance + [_provenance(trace, round_number, "used")],
                                                rules.provenance_keep)
            report.credited[skill_id] = report.credited.get(skill_id, 0) + 1
    for skill_id in report.credited:
        skill = skills[skill_id]
        skill.utility = round(skill.gain_sum - rules.penalty * skill.drop_sum, 6)
        if skill.utility < 0:
            remove(skill_id)
            report.retired.append(skill_id)
        else:
            skill.dice_gain = round(skill.utility / skill.uses, 6)

    # harvest: a high-reward, format-valid trace with a real gain becomes a skill
    for trace in traces:
        if not (trace.format_valid and trace.target and trace.request.strip()):
            continue
        if trace.dice < rules.harvest_min_dice or trace.gain < rules.harvest_min_gain:
            continue
        new = harvest_skill(trace, round_number, dataset)
        if new.skill_id in skills:
            old = writable(new.skill_id)
            old.provenance = _keep_provenance(old.provenance + new.provenance, rules.provenance_keep)
        elif new.skill_id not in report.retired:
            skills[new.skill_id] = copies[new.skill_id] = new
            key = _group_key(new)
            groups[key] = groups.get(key, frozenset()) | {new.skill_id}
            report.harvested.append(new.skill_id)

    # merge: per (dataset, tag, canonical) the best `merge_keep` stay; the others' aliases go to the best. A bank
    # that evolution made already respects the limit, so only the groups that grew this round are looked at.
    if bank.merged_keep == rules.merge_keep:
        keys = {_group_key(skills[i]) for i in report.harvested if i in skills}
    else:
        keys = set(groups)
    for key in sorted(keys):
        if len(groups.get(key, ())) <= rules.merge_keep:
            continue
        members = sorted((skills[i] for i in groups[key]), key=_rank_key)
        best = writable(members[0].skill_id)
        known = {a.lower() for a in best.aliases}
        for dropped in members[rules.merge_keep:]:
            for alias in dropped.aliases:
                if alias.lower() not in known:
                    best.aliases.append(alias)
                    known.add(alias.lower())
            remove(dropped.skill_id)
            report.merged[dropped.skill_id] = best.skill_id

    # cap: at most max(cap_min, int(cap_fraction x requests seen)) skills, best first
    limit = max(rules.cap_min, int(rules.cap_fraction * requests_seen), 1)
    if len(skills) > limit:
        for skill in sorted(heapq.nlargest(len(skills) - limit, skills.values(), key=_rank_key), key=_rank_key):
            remove(skill.skill_id)
            report.capped.append(skill.skill_id)

    report.skills_after = len(skills)
    report.seconds = round(time.perf_counter() - started, 6)
    return SkillBank._evolved(skills, groups, rules.merge_keep), report


def _keep_provenance(entries: list[dict], keep: int) -> list[dict]:
    """The entry that made the skill (harvested) plus the newest `keep` others."""
    made = [e for e in entries if e.get("how") == "harvested"][:1]
    others = [e for e in entries if e not in made]
    return made + others[-keep:]


def evolve_due(
    bank: SkillBank, rewards: Sequence[RewardedTrace], number: int, start: int, round_size: int,
    settings: EvolutionSettings | None = None, dataset: str = "",
) -> Iterator[tuple[int, SkillBank, RoundReport, dict]]:
    """The rounds that `rewards` (all so far, in log order) complete after round `number`, whose close used rewards
    up to `start`: (round number, its bank, its report, the record stored with it) for each, in order."""
    import logging

    while len(rewards) - start >= round_size:
        end = start + round_size
        number += 1
        taken = [r for r in rewards[start:end] if not r.withdrawn]
        bank, report = evolve(bank, taken, number, end, settings, dataset)
        record = report.to_dict() | {"reward_start": start, "reward_end": end,
                                     "trace_ids": [r.trace_id for r in taken],
                                     "withdrawn": [r.trace_id for r in rewards[start:end] if r.withdrawn]}
        logging.getLogger(__name__).info(
            "skill round %d closed: %d rewards, %d credited, %d retired, %d harvested, %d merged, %d capped; "
            "%d skills", number, report.rewards, len(report.credited), len(report.retired), len(report.harvested),
            len(report.merged), len(report.capped), report.skills_after)
        yield number, bank, report, record
        start = end
