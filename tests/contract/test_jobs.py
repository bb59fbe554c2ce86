from __future__ import annotations

import itertools

import pytest

from contract.errors import ContractError
from contract.jobs import TERMINAL, JobState, allowed, check_transition

HAPPY = ["QUEUED", "DOWNLOADING", "VERIFYING", "INSTALLING", "SELF_TEST", "SHADOW", "READY", "ACTIVATING",
         "PROBATION", "SUCCEEDED"]


def test_happy_path_is_allowed() -> None:
    for a, b in itertools.pairwise(HAPPY):
        assert allowed(JobState(a), JobState(b))
    assert allowed(JobState.SELF_TEST, JobState.ACTIVATING)  # shadow is optional
    assert allowed(JobState.SELF_TEST, JobState.READY) and allowed(JobState.SHADOW, JobState.ACTIVATING)  # READY too
    assert not allowed(JobState.READY, JobState.PROBATION)  # activation is never skipped
    assert not allowed(JobState.READY, JobState.ROLLED_BACK)  # nothing was activated yet


def test_failures() -> None:
    for state in JobState:
        assert allowed(state, JobState.FAILED) == (state not in TERMINAL)
    assert allowed(JobState.PROBATION, JobState.ROLLED_BACK)
    assert not allowed(JobState.DOWNLOADING, JobState.ROLLED_BACK)  # nothing was activated yet


def test_no_skipping_verification() -> None:
    with pytest.raises(ContractError, match="DOWNLOADING to INSTALLING"):
        check_transition(JobState.DOWNLOADING, JobState.INSTALLING)
    assert not allowed(JobState.SUCCEEDED, JobState.QUEUED)
