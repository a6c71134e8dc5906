"""The job state machine: every allowed transition, and everything else refused."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yungu.domain.errors import InvalidInput, InvalidTransition
from yungu.domain.job import TERMINAL, TRANSITIONS, Event, Job, JobSpec, JobState, Resources, next_state

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def job(state: JobState = JobState.PENDING) -> Job:
    return Job("j1", "p", "t", JobSpec("n", "true"), state, T0, T0)


HAPPY = [
    (JobState.PENDING, Event.ADMIT, JobState.QUEUED),
    (JobState.QUEUED, Event.PLACE, JobState.SCHEDULED),
    (JobState.SCHEDULED, Event.DISPATCH, JobState.DISPATCHED),
    (JobState.DISPATCHED, Event.START, JobState.RUNNING),
    (JobState.RUNNING, Event.SUCCEED, JobState.SUCCEEDED),
    (JobState.RUNNING, Event.FAIL, JobState.FAILED),
    (JobState.RUNNING, Event.PREEMPT, JobState.PREEMPTED),
    (JobState.PREEMPTED, Event.REQUEUE, JobState.QUEUED),
    (JobState.RUNNING, Event.CANCEL, JobState.CANCELLED),
    (JobState.QUEUED, Event.CANCEL, JobState.CANCELLED),
    (JobState.PENDING, Event.REJECT, JobState.FAILED),
]


@pytest.mark.parametrize(("state", "event", "after"), HAPPY)
def test_allowed_transitions(state: JobState, event: Event, after: JobState) -> None:
    assert next_state(state, event) is after


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("event", list(Event))
def test_terminal_states_never_move(terminal: JobState, event: Event) -> None:
    with pytest.raises(InvalidTransition):
        next_state(terminal, event)


@given(st.sampled_from(list(JobState)), st.sampled_from(list(Event)))
def test_transition_table_is_the_only_truth(state: JobState, event: Event) -> None:
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            next_state(state, event)


def test_requeue_starts_a_new_attempt_with_a_new_request_id() -> None:
    j = job(JobState.RUNNING)
    again = j.apply(Event.REQUEUE, T0 + timedelta(seconds=5))
    assert again.state is JobState.QUEUED
    assert again.attempt == 1 and again.request_id != j.request_id
    assert again.allocation is None


def test_start_and_finish_times_are_recorded_once() -> None:
    j = job(JobState.DISPATCHED).apply(Event.START, T0 + timedelta(seconds=1))
    assert j.started_at == T0 + timedelta(seconds=1)
    done = j.apply(Event.SUCCEED, T0 + timedelta(seconds=3))
    assert done.finished_at == T0 + timedelta(seconds=3) and done.started_at == j.started_at


@pytest.mark.parametrize(("spec", "message"), [
    (JobSpec("n", "  "), "command"),
    (JobSpec("", "true"), "name"),
    (JobSpec("n", "true", resources=Resources(cpus=0)), "cpus"),
    (JobSpec("n", "true", resources=Resources(accelerators=65)), "accelerators"),
    (JobSpec("n", "true", resources=Resources(memory_gb=-1)), "memory_gb"),
    (JobSpec("n", "true", replicas=0), "replicas"),
    (JobSpec("n", "true", replicas=5000), "replicas"),
    (JobSpec("n", "true", estimated_duration_s=-5), "estimated_duration_s"),
    (JobSpec("n", "true", env={"YUNGU_DEVICES": "x"}), "environment"),
    (JobSpec("n", "true", deadline=T0, earliest_start=T0 + timedelta(hours=1)), "deadline"),
])
def test_absurd_specs_are_rejected_with_the_field_named(spec: JobSpec, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        spec.validate()
