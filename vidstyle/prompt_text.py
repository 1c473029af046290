"""The prompt text a frame is rendered with: the user's prompt plus `<lora:name:weight>` tags.

This is how the WebUI's Lora extension is told to apply a LoRA, so every WebUI backend sends
this text and the infotext of frames from other backends shows it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable


def lora_tag(name: str, weight: float) -> str:
    """`<lora:name:weight>`, the weight written as the WebUI writes it (0.75, 1, -0.5)."""
    return f"<lora:{name}:{weight:g}>"


def prompt_with_loras(prompt: str, loras: Iterable[tuple[str, float]]) -> str:
    """The prompt followed by one tag per LoRA, space-separated; an empty prompt adds no leading space."""
    return " ".join(part for part in [prompt, *(lora_tag(name, weight) for name, weight in loras)] if part)
