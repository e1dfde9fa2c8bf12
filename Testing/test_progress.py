"""The one progress protocol: stages share the bar by cost, steps count inside a stage, cancel raises Cancelled."""

import pytest

from brainxai.errors import Cancelled
from brainxai.progress import Tracker, check


def test_stages_fill_the_bar_in_proportion_to_their_shares():
    seen = []
    t = Tracker(lambda stage, f: seen.append((stage, round(f, 6))), None, {"a": 1, "b": 3})
    t.stage("a")
    t.report(0.5)
    t.stage("b", steps=3)
    for _ in range(3):
        t.step()
    assert seen == [("a", 0.0), ("a", 0.125), ("b", 0.25), ("b", 0.5), ("b", 0.75), ("b", 1.0)]


def test_the_bar_never_passes_one_and_silence_is_allowed():
    seen = []
    t = Tracker(lambda s, f: seen.append(f), None, {"only": 1.0})
    t.stage("only", steps=2)
    for _ in range(5):  # more steps than announced (a failed probe retried): the bar stops at 1
        t.step()
    assert max(seen) == 1.0
    Tracker(None, None, {"x": 1}).stage("x")  # no callback: nothing to tell, nothing raised


def test_cancel_is_checked_at_every_stage_and_step():
    stop = {"now": False}
    t = Tracker(None, lambda: stop["now"], {"a": 1, "b": 1})
    t.stage("a", steps=2)
    t.step()
    stop["now"] = True
    with pytest.raises(Cancelled):
        t.step()
    with pytest.raises(Cancelled):
        t.stage("b")
    with pytest.raises(Cancelled):
        check(lambda: True)
    check(None)
    check(lambda: False)
