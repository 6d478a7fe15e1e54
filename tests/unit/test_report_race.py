"""A vendor may report a number delivered before the worker has recorded its send:
that report must not be lost, it settles the number once the send is recorded."""

from __future__ import annotations

import pytest

from smsq.providers import Outcome, SendResult
from smsq.providers.base import Report

from ..conftest import PASSWORD, apply_env, restore_env, write_config

CONTENT = "【某某科技】您的验证码是 345678"


@pytest.fixture
def embedded(tmp_path):
    config = write_config(tmp_path / "smsq.toml", "http://127.0.0.1:9/")
    saved = apply_env(
        {
            "SMSQ_CONFIG": str(config),
            "SMSQ_TEST_DXT_PASSWORD": PASSWORD,
            "SMSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'smsq.db'}",
            "SMSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        }
    )
    yield
    restore_env(saved)


def test_a_report_that_beats_the_send_record_settles_the_number_at_the_next_poll(embedded):
    from sqlalchemy import select

    from smsq.store.ledger import claim
    from smsq.store.models import Chunk, Recipient, StatusReport
    from smsq.tasks import batch_status, send_sms
    from smsq.tasks.outcomes import decided, record
    from smsq.tasks.polls import _store_reports
    from smsq.worker.config import settings
    from smsq.worker.db import session_scope

    conf = settings()
    receipt = send_sms("shop-dxt", ["13800000401", "13800000402"], CONTENT)
    with session_scope(conf.database_url) as session:
        chunk_id = session.scalar(select(Chunk.id).where(Chunk.batch_id == receipt.batch_id))
    work = claim(conf, chunk_id)  # the vendor call is under way...

    # ...and the vendor's report poll already hands out a report for the first number.
    with session_scope(conf.database_url) as session:
        stored, changed = _store_reports(session, "shop-dxt", 1, [Report("9001", "13800000401", True, "10")])
    assert (stored, changed) == (1, [])

    accepted = SendResult(Outcome.OK, code="1", vendor_ids=["9001", "9002"])
    record(conf, work, accepted, decided(conf, work, accepted))
    assert batch_status(receipt.batch_id).recipients == {"sent": 2}

    # The next poll (nothing new in it) applies the report it kept.
    with session_scope(conf.database_url) as session:
        stored, changed = _store_reports(session, "shop-dxt", 2, [])
    assert stored == 0 and len(changed) == 1
    assert batch_status(receipt.batch_id).recipients == {"delivered": 1, "sent": 1}
    with session_scope(conf.database_url) as session:
        report = session.scalars(select(StatusReport)).one()
        delivered = session.scalars(select(Recipient).where(Recipient.state == "delivered")).one()
        assert report.recipient_id == delivered.id and delivered.mobile == "13800000401"
    # Applied once: a later poll changes nothing.
    with session_scope(conf.database_url) as session:
        assert _store_reports(session, "shop-dxt", 3, []) == (0, [])
