"""The SEER message contract (SEER-MODEL-CONTRACT.md): system prompt, user text, skill-bank block, raw prompt.

These strings are an interface of the published weights; change nothing, not even the missing space after
"rationale." in the skill variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

SYSTEM_PROMPT = (
    "You are a medical image prompt-normalization assistant for text-guided 3D segmentation. "
    "Given multi-slice images and a raw segmentation request, produce three parts in this exact format: "
    "<evidence>...</evidence><rationale>...</rationale><answer>...</answer>. "
    "In <evidence>, describe only objective visual observations and imaging context. "
    "In <rationale>, explain briefly how the raw request is normalized based on the evidence. "
    "If a <skill_bank> is provided, explicitly choose the single most relevant skill and mention that choice in "
    "<rationale>. In <answer>, provide the final normalized segmentation prompt."
)

USER_TEXT = (
    "Review the provided medical image slices and the raw segmentation request. "
    "Return ONLY three parts (objective evidence, a short rationale, and the final normalized reprompt) in this "
    "exact format:\n<evidence>...</evidence>\n<rationale>...</rationale>\n<answer>...</answer>"
)

USER_TEXT_WITH_SKILLS = (
    "Review the provided medical image slices, the raw segmentation request, and the candidate skill bank. "
    "Choose the single most relevant skill, state the choice in the rationale."
    "Then return ONLY three parts (objective evidence, a short rationale, and the final normalized reprompt) in "
    "this exact format:\n<evidence>...</evidence>\n<rationale>...</rationale>\n<answer>...</answer>"
)


class SkillLike(Protocol):
    tag: str
    content: str
    audit: str


def skill_block(rank: int, skill: SkillLike) -> str:
    """One skill as the model reads it; rank counts from 1."""
    return f"[{rank}]\nTag: {skill.tag}\nContent: {skill.content}\nAudit: {skill.audit}"


def user_text(raw_request: str, skills: Sequence[SkillLike] = ()) -> str:
    """The text part of the user message: instructions, optional skill bank, then the raw request as data."""
    text = USER_TEXT_WITH_SKILLS if skills else USER_TEXT
    if skills:
        blocks = "\n".join(skill_block(i + 1, s) for i, s in enumerate(skills))
        text += "\n\n<skill_bank>\n" + blocks + "\n</skill_bank>"
    return text + "\n\n<raw_prompt>" + raw_request + "</raw_prompt>"


def build_messages(images: Sequence, raw_request: str, skills: Sequence[SkillLike] = ()) -> list[dict]:
    """Chat messages in the transformers / OpenAI layout: system, then one user turn of 8 images + text."""
    content: list[dict] = [{"type": "image", "image": image} for image in images]
    content.append({"type": "text", "text": user_text(raw_request, skills)})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": content},
    ]
