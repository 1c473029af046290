"""What a dataset's captions say about its subject, for sample prompts that ask for it.

A preset's [samples] prompts may use three placeholders, filled from the training captions:

    {trigger}  the trigger word
    {subject}  the subject tag the captions actually use (1boy, 1girl, 2girls, no humans, ...)
    {tags}     a few of the most frequent tags that are neither the character's own features
               (hair, eyes, ...: the trigger word learns those) nor framing or background
               (the preset's prompts choose those, for variety)

A male character captioned `1boy` must not be sampled as `1girl`; the frequent tags keep the
samples close to what the LoRA saw, while the preset's framing varies the shot.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .captions import GENERIC_TAGS

# Danbooru's subject-count tags, most specific first where a caption may hold several.
SUBJECT_TAGS = (
    "1girl", "1boy", "1other", "2girls", "2boys", "3girls", "3boys", "multiple girls", "multiple boys",
    "multiple others", "no humans",
)  # fmt: skip
# Body and head features a character LoRA's trigger word should carry, not the prompt.
_FEATURE = re.compile(
    r"\b(hair|hairs|haired|bangs|ahoge|twintails|ponytail|ponytails|braid|braids|sidelocks|hairband|eyes|eye|"
    r"pupils|eyebrows|eyelashes|ears|horns|tail|wings|skin|breasts|fang|fangs|freckles|mole|halo)\b"
)
_PLACEHOLDER_TAGS = 3  # how many frequent tags {tags} stands for
_MIN_SHARE = 0.2  # a tag in fewer captions than this is one image's detail, not the set's


@dataclass
class CaptionStats:
    captions: int
    subject: str | None = None
    subject_count: int = 0
    frequent: list[tuple[str, int]] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return [tag for tag, _ in self.frequent]


def is_feature(tag: str) -> bool:
    return bool(_FEATURE.search(tag.casefold()))


def caption_stats(captions: Sequence[Sequence[str]], trigger: str, features: Iterable[str] = ()) -> CaptionStats:
    """Subject tag and frequent non-feature tags of parsed captions (each a list of tags).

    `features` are tags known to be the character's own (prep's prune suggestions)."""
    counts: Counter = Counter()
    for tags in captions:
        counts.update({t.casefold() for t in tags})
    stats = CaptionStats(captions=len(captions))
    subjects = [(counts[s], -i, s) for i, s in enumerate(SUBJECT_TAGS) if counts[s]]
    if subjects:
        count, _, stats.subject = max(subjects)
        stats.subject_count = count
    skip = {trigger.casefold(), *SUBJECT_TAGS, *(t.casefold() for t in GENERIC_TAGS), *(f.casefold() for f in features)}
    floor = max(2, _MIN_SHARE * len(captions))
    ranked = sorted(((tag, n) for tag, n in counts.items() if tag not in skip and not is_feature(tag) and n >= floor),
                    key=lambda item: (-item[1], item[0]))  # fmt: skip
    stats.frequent = ranked[:_PLACEHOLDER_TAGS]
    return stats


def fill_prompt(template: str, trigger: str, stats: CaptionStats) -> str:
    """The template with its placeholders filled; an empty placeholder leaves no stray comma,
    and a tag the template already names is not repeated."""
    text = (
        template.replace("{trigger}", trigger)
        .replace("{subject}", stats.subject or "")
        .replace("{tags}", ", ".join(stats.tags))
    )
    seen, tags = set(), []
    for tag in (t.strip() for t in text.split(",")):
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    return ", ".join(tags)


def describe_fill(template: str, stats: CaptionStats) -> str:
    """Where a filled prompt's parts came from, for the comment above it in sample_prompts.txt."""
    parts = []
    if "{subject}" in template:
        parts.append(
            f"{{subject}} = {stats.subject} (in {stats.subject_count} of {stats.captions} training captions)"
            if stats.subject else "{subject} left out (no 1girl/1boy/... tag in the training captions)"
        )  # fmt: skip
    if "{tags}" in template:
        parts.append(
            "{tags} = "
            + ", ".join(f"{tag} ({n})" for tag, n in stats.frequent)
            + " (the most frequent tags that are not features or framing)"
            if stats.frequent
            else "{tags} left out (no tag beyond features and framing is frequent)"
        )
    return "; ".join(parts)
