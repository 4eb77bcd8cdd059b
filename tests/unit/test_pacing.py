"""The write pacer: at once when idle, held by what passes cost when busy (no server needed)."""

from __future__ import annotations

import pytest

from realtime.bus.pacing import (
    BEHIND_SHARE,
    BUSY_SHARE,
    MAX_BEHIND_HOLD,
    MAX_HOLD_FACTOR,
    WritePacer,
)


def test_an_idle_process_writes_at_once():
    pacer = WritePacer(0.02)
    assert pacer.delay(100.0) == 0.0
    pacer.started(100.0)
    pacer.finished(0.001)
    assert pacer.delay(100.05) == 0.0  # nothing for longer than the hold: no added latency


def test_cheap_passes_are_held_to_the_flush_interval():
    pacer = WritePacer(0.02)
    pacer.started(100.0)
    pacer.finished(0.001)
    assert pacer.hold == 0.02
    assert pacer.delay(100.005) == pytest.approx(0.015)


def test_costly_passes_hold_longer_up_to_the_bound():
    pacer = WritePacer(0.02)
    for _ in range(30):  # passes of 8 ms each, e.g. 250 connections at ~30 µs a write
        pacer.finished(0.008)
    assert pacer.hold == pytest.approx(0.008 / BUSY_SHARE, rel=0.01)
    pacer.started(100.0)
    # An event arriving 25 ms after a pass started, which the fixed 20 ms interval would
    # have written on its own, waits for the next pass with whatever follows it.
    assert pacer.delay(100.025) == pytest.approx(0.032 - 0.025, rel=0.05)
    for _ in range(30):
        pacer.finished(0.5)
    assert pacer.hold == 0.02 * MAX_HOLD_FACTOR
    for _ in range(30):  # load goes away: the hold comes back down
        pacer.finished(0.0001)
    assert pacer.hold == 0.02


def passes(pacer: WritePacer, lags: list[float], count: int = 20) -> None:
    """``count`` passes, each after events that arrived ``lags`` seconds after their publish."""
    for _ in range(count):
        for lag in lags:
            pacer.arrived(lag)
        pacer.started(100.0)
        pacer.finished(0.001)


def test_events_on_time_are_not_held_longer_whatever_the_clocks():
    pacer = WritePacer(0.02)
    passes(pacer, [0.004, 0.006, 0.005])
    assert pacer.behind < 0.002
    assert pacer.hold == 0.02
    ahead = WritePacer(0.02)  # the publisher's clock 2 s ahead: lags below zero
    passes(ahead, [-1.996, -1.994, -1.995])
    assert ahead.hold == 0.02


def test_a_process_falling_behind_holds_longer_until_it_catches_up():
    pacer = WritePacer(0.02)
    passes(pacer, [0.005])  # the usual: 5 ms from publish to arrival
    passes(pacer, [0.405])  # now 400 ms later than usual
    assert pacer.behind == pytest.approx(0.4, rel=0.01)
    assert pacer.hold == pytest.approx(0.4 * BEHIND_SHARE, rel=0.01)
    passes(pacer, [2.005])  # far behind: the hold stops at its bound
    assert pacer.hold == MAX_BEHIND_HOLD
    passes(pacer, [0.005])  # caught up: back to the flush interval
    assert pacer.hold == 0.02
