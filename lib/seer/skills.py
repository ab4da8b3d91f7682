"""The SEER skill bank: schema (SEER-MODEL-CONTRACT.md), atomic storage, and request-time retrieval.

Retrieval uses only what a deployed system knows when a request arrives: the raw text (its style and the target
it names, as the lexicon reads it) and the image evidence (its visual cue). The reference scorer's weights are
kept (style +4, canonical +6, alias +3, cue +2, dataset +3, +0.4 per shared token, +0.2 x score_hint), but every
term is computed from request-time estimates instead of the evaluation row's ground truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from filelock import FileLock

from .errors import BadRequest
from .lexicon import ParsedText, Parser, coarse_region

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
    """One skill-bank row (contract schema)."""

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

    @classmethod
    def from_dict(cls, row: dict, where: str = "") -> Skill:
        missing = [k for k in ("skill_id", "tag", "content") if not row.get(k)]
        if missing:
            raise BadRequest(f"Skill bank row {where} lacks {', '.join(missing)}.")
        if row["tag"] not in TAGS:
            raise BadRequest(f"Skill bank row {where} has unknown tag {row['tag']!r}; tags are {', '.join(TAGS)}.")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in row.items() if k in known}
        values["aliases"] = [str(a) for a in values.get("aliases") or []]
        values["score_hint"] = float(values.get("score_hint") or 0.0)
        values["dice_gain"] = float(values.get("dice_gain", values["score_hint"]) or 0.0)
        for key in ("source_key", "audit", "dataset", "style_bucket", "canonical", "vis_cue"):
            values[key] = str(values.get(key) or "")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


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
    """Skills in memory plus their JSONL file. Saving is atomic (temp file + rename) under a file lock."""

    def __init__(self, skills: Iterable[Skill] = (), path: str | os.PathLike | None = None):
        self.skills: dict[str, Skill] = {}
        for skill in skills:
            self.skills.setdefault(skill.skill_id, skill)
        self.path = Path(path) if path else None
        self._parsed: dict[str, ParsedText] = {}
        self._version: str | None = None

    def __len__(self) -> int:
        return len(self.skills)

    @property
    def version(self) -> str:
        """Content hash of the bank, computed once; call `touch()` after editing `skills` in place."""
        if self._version is None:
            digest = hashlib.sha1()
            for sid in sorted(self.skills):
                digest.update(json.dumps(self.skills[sid].to_dict(), sort_keys=True).encode())
            self._version = digest.hexdigest()[:12]
        return self._version

    def touch(self) -> None:
        self._version = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SkillBank:
        path = Path(path)
        if not path.exists():
            raise BadRequest(f"Skill bank {path} does not exist.")
        skills = []
        with open(path, encoding="utf-8") as fp:
            for number, line in enumerate(fp, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadRequest(f"Skill bank {path} line {number} is not JSON ({exc.msg}).") from None
                skills.append(Skill.from_dict(row, f"{path.name}:{number}"))
        return cls(skills, path)

    @classmethod
    def starter(cls) -> SkillBank:
        """The bundled starter skills (data/starter_skills.jsonl)."""
        with resources.as_file(resources.files("seer").joinpath("data/starter_skills.jsonl")) as path:
            bank = cls.load(path)
        bank.path = None
        return bank

    @classmethod
    def open(cls, path: str | os.PathLike) -> SkillBank:
        """The bank at `path`, seeded from the starter set (and written) when the file does not exist yet."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        bank = cls(cls.starter().skills.values(), path)
        bank.save()
        return bank

    def save(self, path: str | os.PathLike | None = None) -> Path:
        target = Path(path or self.path or "")
        if not str(target):
            raise ValueError("no path to save the skill bank to")
        target.parent.mkdir(parents=True, exist_ok=True)
        rows = sorted(self.skills.values(), key=lambda s: (s.dataset, s.tag, s.skill_id))
        payload = "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in rows)
        with FileLock(str(target) + ".lock"):
            tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
            with open(tmp, "w", encoding="utf-8") as fp:
                fp.write(payload)
                fp.flush()
                os.fsync(fp.fileno())
            os.replace(tmp, target)
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
        score = 0.0
        if cue.dataset and skill.dataset == cue.dataset:
            score += 3.0
        if skill.style_bucket and STYLE_TO_TAG.get(skill.style_bucket) == STYLE_TO_TAG.get(cue.style):
            score += 4.0
        if skill.canonical and cue.target_tokens:
            canon = self._parse(skill.canonical, parser)
            if canon.token_set == cue.target_tokens and (canon.side or None) == (cue.side or None):
                score += 6.0
        if any(self._alias_hit(alias, cue, parser) for alias in skill.aliases):
            score += 3.0
        if skill.vis_cue == cue.vis_cue:
            score += 2.0
        score += 0.4 * len(cue.words & words(skill.content + " " + skill.tag))
        score += 0.2 * skill.score_hint
        return score

    def retrieve(
        self, cue: RequestCue, parser: Parser, k: int = DEFAULT_TOP_K, min_score: float = DEFAULT_MIN_SCORE
    ) -> list[tuple[Skill, float]]:
        """Top-k skills scoring at least `min_score`, best first (ties by id)."""
        scored = [(self.score(s, cue, parser), s) for s in self.skills.values()]
        scored.sort(key=lambda x: (-x[0], x[1].skill_id))
        return [(s, round(sc, 2)) for sc, s in scored[:k] if sc >= min_score]

    def _alias_hit(self, alias: str, cue: RequestCue, parser: Parser) -> bool:
        parsed = self._parse(alias, parser)
        return bool(parsed.token_set) and parsed.token_set <= cue.target_tokens

    def _parse(self, text: str, parser: Parser) -> ParsedText:
        key = f"{id(parser)}|{text}"
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = parser.parse(text, correct_typos=False)
            self._parsed[key] = parsed
        return parsed

    def get(self, ids: Sequence[str]) -> list[Skill]:
        return [self.skills[i] for i in ids if i in self.skills]
