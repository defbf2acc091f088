"""Review of ``--loops`` (289325d), finding 2: the default loop count is the CPUs krait may
run on, but anything above 64 is refused (supervisor.loop_count raises StartupError), so on a
machine with more than 64 CPUs krait does not start unless --loops, config.loops or
$KRAIT_LOOPS is given. The default should be capped at 64, not refused."""

from __future__ import annotations

import pytest

from krait import supervisor


def test_default_loop_count_on_a_machine_with_many_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KRAIT_LOOPS", raising=False)
    monkeypatch.setattr(supervisor.config, "loops", None)
    monkeypatch.setattr(supervisor.os, "sched_getaffinity", lambda _pid: set(range(96)),
                        raising=False)
    assert supervisor.loop_count(None) == 64  # not StartupError: krait must start by default


def test_explicit_loop_counts_are_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KRAIT_LOOPS", raising=False)
    assert supervisor.loop_count(3) == 3
    with pytest.raises(supervisor.StartupError):
        supervisor.loop_count(65)
