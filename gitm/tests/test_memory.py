"""Text memory (spec 2.6): first entry is the reference, summarise at N=5, atomic JSON, merging."""

import asyncio

import pytest

from gitm.actions import normalize_action
from gitm.errors import GitmError
from gitm.memory import Memory
from gitm.summarizer import deterministic_summary, offline_summarize


def plan(*names):
    return [normalize_action({"name": n, "args": {"object": "log"}}) for n in names]


def test_reference_is_first_and_summary_at_n():
    m = Memory(n=5)
    calls = []

    async def summ(key, plans):
        calls.append((key, len(plans)))
        return deterministic_summary(plans)

    for i in range(4):
        assert not asyncio.run(m.add("log", plan("explore", "mine") if i else plan("mine"), summ))
    assert [a.name for a in m.reference("log")] == ["mine"] and not calls
    assert asyncio.run(m.add("log", plan("explore", "approach", "mine"), summ))
    assert calls == [("log", 5)] and len(m.entries["log"]) == 1 and m.entries["log"][0].summary
    assert [a.name for a in m.reference("log")] == ["explore", "approach", "mine"]
    # the summary counts toward N (count_summary=True): 4 more runs trigger the next summary
    for _ in range(3):
        assert not asyncio.run(m.add("log", plan("mine"), summ))
    assert asyncio.run(m.add("log", plan("mine"), summ)) and calls[-1] == ("log", 5)


def test_count_summary_false_needs_n_fresh_runs():
    m = Memory(n=2, count_summary=False)
    asyncio.run(m.add("k", plan("explore"), offline_summarize))
    assert asyncio.run(m.add("k", plan("mine"), offline_summarize))
    assert not asyncio.run(m.add("k", plan("approach"), offline_summarize))  # summary not counted
    assert asyncio.run(m.add("k", plan("equip"), offline_summarize))


def test_deterministic_summary_keeps_needed_steps_once():
    s = deterministic_summary([plan("mine"), plan("explore", "approach", "mine"), plan("explore", "mine", "mine")])
    assert [a.name for a in s] == ["explore", "approach", "mine"]


def test_save_load_roundtrip_and_corrupt_file(tmp_path):
    m = Memory(n=5)
    asyncio.run(m.add("log", plan("explore", "mine"), None))
    p = m.save(tmp_path / "memory.json", extra={"progress": {"log": 1}})
    m2, extra = Memory.load(p)
    assert m2.to_dict() == m.to_dict() and extra == {"progress": {"log": 1}}
    assert not list(tmp_path.glob(".memory.json.*.tmp"))  # no temp file left behind
    (tmp_path / "bad.json").write_text('{"format": "gitm-memory-v1", "entr')
    with pytest.raises(GitmError, match=r"bad.json is not valid JSON"):
        Memory.load(tmp_path / "bad.json")
    with pytest.raises(GitmError, match="does not exist; run gitm-learn first"):
        Memory.load(tmp_path / "missing.json")


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    m = Memory()
    asyncio.run(m.add("log", plan("mine"), None))
    p = m.save(tmp_path / "memory.json")
    before = p.read_text()
    asyncio.run(m.add("log", plan("explore", "mine"), None))
    import gitm.memory as gm

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(gm.json, "dumps", boom)
    with pytest.raises(OSError):
        m.save(p)
    assert p.read_text() == before


def test_merge_from_workers():
    a, b = Memory(n=5), Memory(n=5)
    asyncio.run(a.add("log", plan("mine"), None))
    asyncio.run(b.add("log", plan("mine"), None))            # duplicate: skipped
    asyncio.run(b.add("log", plan("explore", "mine"), None))
    asyncio.run(b.add("sand", plan("mine"), None))
    a.merge(b)
    assert [len(a.entries[k]) for k in ("log", "sand")] == [2, 1]
    for _ in range(3):
        asyncio.run(b.add("log", plan("approach"), None))
    a.merge(b)
    assert asyncio.run(a.summarise_due(offline_summarize)) == 0  # 3 entries: approach once (deduplicated)
