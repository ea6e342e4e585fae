"""The composition machinery with tiny stand-in stages: order, skips, report blocks, timings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.pipeline.stage import Outcomes, Skipped, Stage, StageResult, run_stages


@dataclass(frozen=True)
class Count:
    """A stand-in result: a number, reported under ``key``."""

    key: str
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {self.key: {"n": self.n}}


@dataclass(frozen=True)
class Word:
    word: str

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word}


def _count(key: str, n: int, log: list[str]) -> Stage:
    def run(done: Outcomes) -> StageResult | Skipped:
        log.append(key)
        return Count(key, n)

    return Stage(key, run)


def test_stages_run_in_list_order_and_each_reads_the_ones_before() -> None:
    log: list[str] = []

    def double(done: Outcomes) -> StageResult | Skipped:
        log.append("double")
        return Word(str(done.need(Count).n * 2))

    stages = [_count("a", 21, log), Stage("double", double, needs=("a",)), _count("z", 1, log)]
    done = run_stages(stages)

    assert log == ["a", "double", "z"]
    assert [o.stage for o in done.items] == ["a", "double", "z"]
    assert done.need(Word).word == "42"
    assert done.report()["stages"] == ["a", "double", "z"]


def test_a_skipped_stage_names_its_reason_and_the_rest_still_runs() -> None:
    log: list[str] = []
    called: list[str] = []

    def needs_skipped(done: Outcomes) -> StageResult | Skipped:
        called.append("downstream")  # must never happen: its input did not run
        return Word("no")

    stages = [
        _count("a", 1, log),
        Stage("serve", lambda done: Skipped("fastapi is not installed: pip install x")),
        Stage("downstream", needs_skipped, needs=("serve",)),
        _count("b", 2, log),
    ]
    done = run_stages(stages)
    report = done.report()

    assert log == ["a", "b"] and called == []
    assert report["stages"] == ["a", "b"]
    assert report["skipped"] == {
        "serve": "fastapi is not installed: pip install x",
        "downstream": "needs serve, which was skipped: fastapi is not installed: pip install x",
    }
    # The skipped stage's block says so under its own name, so the key is always there.
    assert report["serve"] == {"skipped": "fastapi is not installed: pip install x"}
    assert report["downstream"]["skipped"].startswith("needs serve")
    assert done.get(Word) is None


def test_each_stages_block_lands_in_the_report_and_dict_blocks_merge() -> None:
    def first(done: Outcomes) -> StageResult | Skipped:
        return Count("registry", 1)

    @dataclass(frozen=True)
    class Adds:
        def to_dict(self) -> dict[str, Any]:
            return {"registry": {"edge_ref": "m-edge:1"}, "word": "later wins"}

    stages = [
        Stage("register", first),
        Stage("word", lambda done: Word("first")),
        Stage("optimize", lambda done: Adds()),
    ]
    report = run_stages(stages).report()

    # register started the registry block; optimize added its ref to it (one level deep).
    assert report["registry"] == {"n": 1, "edge_ref": "m-edge:1"}
    assert report["word"] == "later wins"  # a non-dict value: the later stage's replaces it
    assert set(report) == {"stages", "registry", "word", "skipped", "stage_seconds"}


def test_stage_seconds_has_every_stage_that_ran_with_its_wall_time() -> None:
    def slow(done: Outcomes) -> StageResult | Skipped:
        time.sleep(0.05)
        return Word("slept")

    stages = [
        Stage("slow", slow),
        Stage("quick", lambda done: Count("quick", 0)),
        Stage("off", lambda done: Skipped("turned off")),
    ]
    seconds = run_stages(stages).report()["stage_seconds"]

    assert set(seconds) == {"slow", "quick"}  # the skipped stage did not run: no time for it
    assert seconds["slow"] >= 0.05
    assert 0 <= seconds["quick"] < seconds["slow"]


def test_progress_lines_are_said_before_each_stage_that_runs() -> None:
    lines: list[str] = []
    stages = [
        Stage("load", lambda done: Word("x"), says="load digits"),
        Stage("off", lambda done: Skipped("turned off")),
        Stage("clean", lambda done: Count("clean", 0)),
    ]
    run_stages(stages, on_stage=lines.append)

    assert lines == ["load digits", "off", "clean"]


def test_an_error_from_a_stage_stops_the_run_unchanged() -> None:
    log: list[str] = []

    def broken(done: Outcomes) -> StageResult | Skipped:
        raise DataError("split 'test' is empty", hint="give more samples")

    with pytest.raises(DataError, match="split 'test' is empty"):
        run_stages([_count("a", 1, log), Stage("broken", broken), _count("b", 2, log)])
    assert log == ["a"]


def test_needing_a_result_no_earlier_stage_made_names_what_ran() -> None:
    def wants_word(done: Outcomes) -> StageResult | Skipped:
        return Count("c", len(done.need(Word).word))

    with pytest.raises(ConfigError, match="no stage before this one produced a Word; ran: a"):
        run_stages([_count("a", 1, []), Stage("c", wants_word)])


def test_a_list_in_the_wrong_order_is_refused_before_anything_runs() -> None:
    log: list[str] = []
    with pytest.raises(ConfigError, match=r"stage 'train' needs \['split'\]"):
        run_stages([_count("a", 1, log), Stage("train", lambda d: Word("w"), needs=("split",))])
    with pytest.raises(ConfigError, match="two stages are named 'a'"):
        run_stages([_count("a", 1, log), _count("a", 2, log)])
    assert log == []


def test_a_skip_without_a_reason_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a reason"):
        Skipped("  ")
