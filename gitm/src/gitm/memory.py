"""Text memory (paper 3.2 and App. A.4, spec 2.6): store, retrieve, summarise, persist, merge.

``memory[key]`` is a list of action lists for the sub-goal ``key`` (the object name; the count is not in
the key). A success appends its executed actions; the reference plan is the **first** entry. When the
list reaches ``n`` entries (paper: N=5) they are summarised by the LLM into one plan that replaces them.
Whether an existing summary counts toward ``n`` is not stated; ``count_summary=True`` (ours, default)
counts it, so a summary is re-summarised together with ``n-1`` new runs.

The file is JSON, written atomically (``repro_shared.fsio``): a kill leaves either the old or the new
file, never a truncated one. A corrupt file is refused with an error that names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from repro_shared.fsio import atomic_write_text

from .actions import Action, normalize_action
from .errors import GitmError

Summarise = Callable[[str, list[list[Action]]], Awaitable[list[Action]]]
FORMAT = "gitm-memory-v1"


@dataclass
class Entry:
    actions: list[Action]
    summary: bool = False

    def to_dict(self) -> dict:
        return {"summary": self.summary, "actions": [a.to_dict() for a in self.actions]}


@dataclass
class Memory:
    """Sub-goal key -> list of :class:`Entry` (element 0 is the reference plan)."""

    n: int = 5
    count_summary: bool = True
    entries: dict[str, list[Entry]] = field(default_factory=dict)
    summaries: int = 0

    def reference(self, key: str) -> list[Action] | None:
        lst = self.entries.get(key)
        return list(lst[0].actions) if lst else None

    def _due(self, key: str) -> bool:
        lst = self.entries.get(key, [])
        counted = [e for e in lst if self.count_summary or not e.summary]
        return len(counted) >= self.n

    async def add(self, key: str, actions: list[Action], summarise: Summarise | None) -> bool:
        """Append a successful action list; summarise when ``n`` entries are reached.

        Returns:
            True when a summarisation happened. Without ``summarise`` the list just grows.
        """
        self.entries.setdefault(key, []).append(Entry(list(actions)))
        if summarise is not None and self._due(key):
            lst = self.entries[key]
            plans = [e.actions for e in lst]
            summary = await summarise(key, plans)
            self.entries[key] = [Entry(list(summary), summary=True)]
            self.summaries += 1
            return True
        return False

    # ------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"format": FORMAT, "n": self.n, "count_summary": self.count_summary, "summaries": self.summaries,
                "entries": {k: [e.to_dict() for e in v] for k, v in sorted(self.entries.items())}}

    @classmethod
    def from_dict(cls, d: dict, source: str = "memory") -> "Memory":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise GitmError(f"{source} is not a gitm memory file (expected format {FORMAT!r})")
        try:
            entries = {k: [Entry([normalize_action(a) for a in e["actions"]], bool(e.get("summary")))
                           for e in v] for k, v in d["entries"].items()}
        except (KeyError, TypeError, GitmError) as e:
            raise GitmError(f"{source} holds an invalid entry: {e}") from e
        return cls(int(d.get("n", 5)), bool(d.get("count_summary", True)), entries, int(d.get("summaries", 0)))

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write atomically; ``extra`` (e.g. the learning progress) is stored beside the entries."""
        d = self.to_dict()
        if extra:
            d["extra"] = extra
        return atomic_write_text(path, json.dumps(d, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> tuple["Memory", dict]:
        """Read a memory file; returns (memory, extra).

        Raises:
            GitmError: the file does not exist, is not JSON, or is not a memory file (names the path).
        """
        p = Path(path)
        if not p.is_file():
            raise GitmError(f"memory file {p} does not exist; run gitm-learn first or set memory.path=null")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GitmError(f"memory file {p} is not valid JSON ({e}); it was not written by gitm "
                            f"(gitm writes it atomically), restore it or delete it") from e
        return cls.from_dict(d, str(p)), d.get("extra", {})

    def merge(self, other: "Memory") -> None:
        """Add ``other``'s entries (from a parallel worker) after ours, key by key, skipping duplicates.

        Summarisation is not run here; call :meth:`summarise_due` afterwards.
        """
        for key, lst in other.entries.items():
            mine = self.entries.setdefault(key, [])
            seen = [e.to_dict() for e in mine]
            for e in lst:
                if e.to_dict() not in seen:
                    mine.append(e)
                    seen.append(e.to_dict())
            if any(e.summary for e in mine):  # a summary stays the reference (index 0)
                mine.sort(key=lambda e: not e.summary)

    async def summarise_due(self, summarise: Summarise) -> int:
        """Summarise every key that holds ``n`` or more entries; returns how many were summarised."""
        done = 0
        for key in sorted(self.entries):
            if self._due(key):
                plans = [e.actions for e in self.entries[key]]
                self.entries[key] = [Entry(list(await summarise(key, plans)), summary=True)]
                self.summaries += 1
                done += 1
        return done
