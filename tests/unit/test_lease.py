"""The lease's pure state machine (coordinator/lease.py): when to create, renew, step down."""

from __future__ import annotations

from coordinator.lease import Action, Holder, Lease, Outcome, Role, ours

TTL = 3.0


def test_a_standby_creates_and_wins_with_the_revision_as_term() -> None:
    lease = Lease(ttl_s=TTL)
    assert lease.next_action(0.0) == Action.CREATE
    assert lease.result(Action.CREATE, 0.0, Outcome.OK, revision=7) == "elected"
    assert (lease.role, lease.term, lease.revision) == (Role.LEADER, 7, 7)
    assert lease.valid(0.5)
    assert lease.next_action(0.5) == Action.WAIT
    assert lease.next_action(1.0) == Action.RENEW  # every TTL/3


def test_a_failed_create_waits_a_third_of_the_ttl() -> None:
    lease = Lease(ttl_s=TTL)
    assert lease.result(Action.CREATE, 0.0, Outcome.TAKEN) is None
    assert lease.role == Role.STANDBY and not lease.valid(0.0)
    assert lease.next_action(0.5) == Action.WAIT
    assert lease.next_action(1.0) == Action.CREATE


def test_renewals_keep_the_term_and_move_the_revision() -> None:
    lease = Lease(ttl_s=TTL)
    lease.result(Action.CREATE, 0.0, Outcome.OK, revision=3)
    assert lease.result(Action.RENEW, 1.0, Outcome.OK, revision=4) is None
    assert (lease.term, lease.revision) == (3, 4)
    assert lease.valid(3.9) and not lease.valid(4.0)


def test_a_refused_renewal_steps_down_at_once() -> None:
    lease = Lease(ttl_s=TTL)
    lease.result(Action.CREATE, 0.0, Outcome.OK, revision=3)
    assert lease.result(Action.RENEW, 1.0, Outcome.TAKEN) == "stepped_down"
    assert lease.role == Role.STANDBY and lease.term == 0 and not lease.valid(1.0)
    assert lease.next_action(2.0) == Action.CREATE


def test_unreachable_within_the_ttl_keeps_leading_then_steps_down() -> None:
    lease = Lease(ttl_s=TTL)
    lease.result(Action.CREATE, 0.0, Outcome.OK, revision=3)
    assert lease.result(Action.RENEW, 1.0, Outcome.UNREACHABLE, now=2.0) is None
    assert lease.valid(2.0)
    assert lease.next_action(2.2) == Action.RENEW  # retried soon
    assert lease.result(Action.RENEW, 2.2, Outcome.UNREACHABLE, now=3.1) == "stepped_down"


def test_a_paused_leader_is_invalid_before_it_asks_and_an_ok_too_late_does_not_help() -> None:
    lease = Lease(ttl_s=TTL)
    lease.result(Action.CREATE, 0.0, Outcome.OK, revision=3)
    # woken at t=10 after a SIGSTOP: it may not decide, whatever the server says next
    assert not lease.valid(10.0) and lease.expired(10.0)
    assert lease.next_action(10.0) == Action.RENEW
    assert lease.result(Action.RENEW, 10.0, Outcome.OK, revision=9) == "stepped_down"
    assert lease.reclaim == 9  # nobody else won meanwhile: a reclaim may lead again, with a new term


def test_reclaiming_our_own_key() -> None:
    lease = Lease(ttl_s=TTL, reclaim=5)
    assert lease.next_action(0.0) == Action.RECLAIM
    assert lease.result(Action.RECLAIM, 0.0, Outcome.OK, revision=6) == "elected"
    assert lease.term == 6 and lease.reclaim == 0


def test_only_a_dead_run_of_ours_is_reclaimed() -> None:
    mine = Holder(id="coordinator", host="h", pid=1)
    assert not ours(Holder(id="coordinator-2", host="h", pid=999_999_999), mine)
    assert ours(Holder(id="coordinator", host="h", pid=999_999_999), mine)  # no such pid
    assert ours(Holder(id="coordinator", host="elsewhere", pid=5), mine)
    assert not ours(Holder(id="coordinator", host="h", pid=1), mine)  # ourselves


def test_losing_touch_keeps_a_claim_on_our_revision_but_a_refusal_does_not() -> None:
    lease = Lease(ttl_s=TTL)
    lease.result(Action.CREATE, 0.0, Outcome.OK, revision=3)
    lease.result(Action.RENEW, 1.0, Outcome.OK, revision=4)
    assert lease.result(Action.RENEW, 2.0, Outcome.UNREACHABLE, now=4.5) == "stepped_down"
    assert lease.next_action(4.5) == Action.RECLAIM and lease.reclaim == 4  # CAS on our own revision
    assert lease.result(Action.RECLAIM, 4.6, Outcome.TAKEN) is None  # someone else won it
    assert lease.next_action(6.0) == Action.CREATE
    other = Lease(ttl_s=TTL)
    other.result(Action.CREATE, 0.0, Outcome.OK, revision=3)
    other.result(Action.RENEW, 1.0, Outcome.TAKEN)
    assert other.reclaim == 0
