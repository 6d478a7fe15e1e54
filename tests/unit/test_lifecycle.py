"""The chunk and recipient transition tables (store/lifecycle.py): pure, no services."""

from __future__ import annotations

import pytest

from smsq.store.lifecycle import (
    CHUNK_TRANSITIONS,
    RECIPIENT_TRANSITIONS,
    ChunkState,
    IllegalTransition,
    RecipientState,
    check_chunk,
    check_recipient,
    chunks_from,
    recipients_from,
)

C, R = ChunkState, RecipientState


def test_every_state_has_an_entry_and_moves_only_to_known_states():
    assert set(CHUNK_TRANSITIONS) == set(ChunkState)
    assert set(RECIPIENT_TRANSITIONS) == set(RecipientState)
    for table, states in ((CHUNK_TRANSITIONS, set(ChunkState)), (RECIPIENT_TRANSITIONS, set(RecipientState))):
        for targets in table.values():
            assert set(targets) <= states and all(isinstance(who, str) and who for who in targets.values())


@pytest.mark.parametrize(
    "move",
    [
        (C.PENDING, C.SENDING),
        (C.PENDING, C.PENDING),
        (C.PENDING, C.CANCELLED),
        (C.PENDING, C.MOVED),
        (C.SENDING, C.ACCEPTED),
        (C.SENDING, C.FAILED),
        (C.SENDING, C.UNKNOWN),
        (C.SENDING, C.PENDING),
        (C.SENDING, C.MOVED),
        (C.SENDING, C.NARROWED),
        (C.UNKNOWN, C.ACCEPTED),
        (C.UNKNOWN, C.FAILED),
        (C.UNKNOWN, C.PENDING),
        (C.FAILED, C.PENDING),
        (C.FAILED, C.FAILED),
        (C.PENDING, C.EXPIRED),
        (C.SENDING, C.EXPIRED),
    ],
    ids=lambda m: f"{m[0]}->{m[1]}",
)
def test_the_chunk_moves_smsq_makes_are_allowed(move):
    check_chunk(*move)


@pytest.mark.parametrize(
    "move",
    [
        (C.ACCEPTED, C.PENDING),
        (C.CANCELLED, C.PENDING),
        (C.MOVED, C.PENDING),
        (C.PENDING, C.ACCEPTED),
        (C.SENDING, C.CANCELLED),
        (C.UNKNOWN, C.SENDING),
        (C.FAILED, C.ACCEPTED),
        (C.UNKNOWN, C.MOVED),
        (C.NARROWED, C.PENDING),
        (C.PENDING, C.NARROWED),
        (C.UNKNOWN, C.NARROWED),
        (C.EXPIRED, C.PENDING),
        (C.EXPIRED, C.SENDING),
        (C.UNKNOWN, C.EXPIRED),
        (C.FAILED, C.EXPIRED),
    ],
    ids=lambda m: f"{m[0]}->{m[1]}",
)
def test_a_chunk_never_leaves_a_final_state_nor_skips_its_claim(move):
    with pytest.raises(IllegalTransition) as raised:
        check_chunk(*move, chunk_id=42)
    assert str(raised.value) == f"chunk 42: {move[0]} -> {move[1]} is not an allowed transition"
    assert (raised.value.from_state, raised.value.to_state, raised.value.row_id) == (move[0], move[1], 42)


def test_final_states_have_no_way_out():
    assert {s for s, targets in CHUNK_TRANSITIONS.items() if not targets} == {
        C.ACCEPTED,
        C.CANCELLED,
        C.MOVED,
        C.NARROWED,
        C.EXPIRED,
    }
    assert {s for s, targets in RECIPIENT_TRANSITIONS.items() if not targets} == {
        R.REJECTED,
        R.CANCELLED,
        R.EXPIRED,
    }


def test_recipient_moves():
    for move in (
        (R.QUEUED, R.SENT),
        (R.QUEUED, R.CANCELLED),
        (R.SENT, R.DELIVERED),
        (R.UNKNOWN, R.QUEUED),
        (R.FAILED, R.QUEUED),
        (R.DELIVERED, R.FAILED),
    ):
        check_recipient(*move)
    for move in ((R.REJECTED, R.SENT), (R.CANCELLED, R.QUEUED), (R.SENT, R.QUEUED), (R.DELIVERED, R.CANCELLED)):
        with pytest.raises(IllegalTransition, match="recipient 7: "):
            check_recipient(*move, recipient_id=7)


def test_a_state_that_is_not_one_is_refused_not_looked_up():
    with pytest.raises(IllegalTransition, match="chunk 1: lost -> pending"):
        check_chunk("lost", "pending", 1)
    check_chunk("pending", "sending")  # the stored strings are the states


def test_a_bulk_update_selects_only_from_states_the_table_allows():
    assert chunks_from(C.UNKNOWN, (C.SENDING,)) == (C.SENDING,)
    assert recipients_from(R.SENT, (R.QUEUED, R.UNKNOWN)) == (R.QUEUED, R.UNKNOWN)
    with pytest.raises(IllegalTransition, match="accepted -> pending"):
        chunks_from(C.PENDING, (C.SENDING, C.ACCEPTED))


def test_an_illegal_transition_is_a_value_error_for_callers_that_report_those():
    assert issubclass(IllegalTransition, ValueError)
