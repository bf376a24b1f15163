"""Issue 2's acceptance on the full zoos (minutes to build on 2 cores the first time): run with -m slow."""

import pytest

from evomerge.zoo.report import acceptance, zoo_report


@pytest.mark.slow
def test_full_zoo_is_mergeable(full_zoo):
    rows = zoo_report(full_zoo)
    verdict = acceptance(rows)
    assert verdict.passed, verdict.message


@pytest.mark.slow
def test_second_full_zoo_is_mergeable(full2_zoo):
    rows = zoo_report(full2_zoo)
    verdict = acceptance(rows)
    assert verdict.passed, verdict.message
