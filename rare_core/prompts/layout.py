"""A prompt's text as fixed parts and named slots: one definition that writes the prompt and
reads it back, so that a change of wording changes the builder and the reader together.

In: ``Layout("<question>\\n", Slot("question"), "\\n</question>")``. Out: :meth:`Layout.render`
(slot values -> the text) and :meth:`Layout.read` (a text -> the slot values, or None when the
text is not one this layout writes: every fixed part must be there, in order, and nothing else).

A slot's value ends at the first occurrence of the fixed text that follows it (the fixed text
that closes the layout is matched at the text's end), so a value that itself contains the text
after its slot is read short: the prompt is then ambiguous to any reader, a model included.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """A named place for a value in a :class:`Layout`."""

    name: str


class Layout:
    """Fixed parts (``str``) and slots, in the order the text has them; no two slots in a row."""

    def __init__(self, *parts: str | Slot) -> None:
        merged: list[str | Slot] = []
        for part in parts:
            if isinstance(part, Slot) and merged and isinstance(merged[-1], Slot):
                raise ValueError(f"slots {merged[-1].name!r} and {part.name!r} touch: the text cannot tell them apart")
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part  # a slot ends where all the fixed text after it starts
            elif part != "":
                merged.append(part)
        self.parts = tuple(merged)

    def render(self, **values: str) -> str:
        """The text with each slot filled by ``values[slot.name]``."""
        return "".join(part if isinstance(part, str) else values[part.name] for part in self.parts)

    def read(self, text: str) -> dict[str, str] | None:
        """The slot values of ``text``, or None when ``text`` does not have this layout."""
        values: dict[str, str] = {}
        pos, last = 0, len(self.parts) - 1
        for i, part in enumerate(self.parts):
            if isinstance(part, str):
                if not text.startswith(part, pos):
                    return None
                pos += len(part)
                continue
            if i == last:
                end = len(text)
            elif i + 1 == last:  # the fixed part after this slot closes the text
                end = len(text) - len(self.parts[i + 1])
                if end < pos:
                    return None
            else:
                end = text.find(self.parts[i + 1], pos)
                if end < 0:
                    return None
            values[part.name] = text[pos:end]
            pos = end
        return values if pos == len(text) else None
