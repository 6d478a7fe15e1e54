"""send_sms refuses what no vendor could send, before any vendor is involved.

These run embedded (a SQLite file per module) with no worker: nothing here
needs a send to happen, only the intake to be right.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from celery.signals import before_task_publish
from sqlalchemy import func, select

from smsq.providers import ContentError
from smsq.store.models import Chunk, Recipient
from smsq.tasks import batch_status, send_sms
from smsq.tasks.split import run_split
from smsq.worker.config import UnknownAccountError, settings
from smsq.worker.db import session_scope
from smsq.worker.kinds import KINDS

from ..conftest import PASSWORD, apply_env, mode_env, restore_env, write_config

SIGNED = "【某某科技】您的验证码是 345678"
# The tests here send the same text to the same numbers again and again, and check what is
# validated, not how often: the frequency caps and the duplicate guard are off (their own
# tests: test_caps.py, and tests/integration/test_send_policy.py).
POLICY_OFF = "".join(f'\n[kinds.{kind}]\nper_number = []\nduplicate_window = "0"\n' for kind in KINDS)


@pytest.fixture(scope="module", autouse=True)
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("intake")
    config = write_config(tmp / "smsq.toml", "http://127.0.0.1:9/", kinds=POLICY_OFF)  # never called here
    saved = apply_env(mode_env("embedded", tmp, config))
    yield
    restore_env(saved)


@pytest.mark.parametrize(
    "account, content, message",
    [
        ("slow-dxt", "您的验证码是 345678", "content has no signature in 【】"),
        ("shop-dxt", "【某某科技】验证码 345678 😀", "character '😀' (U+1F600) at position 17 cannot be sent in gbk"),
        (
            "shop-dxt",
            "【某某科技】" + "长" * 330,
            "content is 336 characters (signature included); dxt accepts at most 335",
        ),
        ("shop-dxt", "   ", "content is empty"),
    ],
)
def test_content_the_account_cannot_send_is_refused(account, content, message):
    with pytest.raises(ContentError) as exc:
        send_sms(account, ["13800000000"], content)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_signature_is_appended_from_the_account():
    receipt = send_sms("shop-dxt", ["13800000000"], "您的验证码是 345678")
    with session_scope(settings().database_url) as s:
        from smsq.store.models import Batch

        assert s.get(Batch, receipt.batch_id).content == "您的验证码是 345678【某某科技】"


def test_unknown_account():
    with pytest.raises(UnknownAccountError, match="unknown account 'nope'.*shop-dxt"):
        send_sms("nope", ["13800000000"], SIGNED)


def test_invalid_numbers_come_back_with_reasons():
    receipt = send_sms(
        "shop-dxt",
        ["138 0013 8000", "12800138000", "1380013800", "138001380001", "phone", "+44 20 7946 0958", "075580808080"],
        SIGNED,
    )
    assert receipt.accepted == 2  # a mobile, and a 小灵通 landline (dxt takes those)
    reasons = dict(receipt.rejected)
    assert reasons["12800138000"].startswith("not a mainland mobile")
    assert reasons["phone"].startswith("contains characters other than digits")
    assert set(reasons) == {"12800138000", "1380013800", "138001380001", "phone", "+44 20 7946 0958"}
    status = batch_status(receipt.batch_id)
    assert status.recipients == {"queued": 2, "rejected": 5}
    assert (status.accepted, status.rejected) == (2, 5)


def test_a_string_of_numbers_is_split_not_iterated():
    receipt = send_sms("shop-dxt", "13800000001, 13800000002;13800000003", SIGNED)
    assert (receipt.accepted, receipt.rejected) == (3, [])


def test_bad_send_at_and_idempotency_key():
    with pytest.raises(TypeError, match="send_at must be a datetime"):
        send_sms("shop-dxt", ["13800000000"], SIGNED, send_at="tomorrow")
    with pytest.raises(ValueError, match="idempotency_key"):
        send_sms("shop-dxt", ["13800000000"], SIGNED, idempotency_key="k" * 129)


def batch_count() -> int:
    from smsq.store.models import Batch

    with session_scope(settings().database_url, readonly=True) as s:
        return s.scalar(select(func.count()).select_from(Batch))


@pytest.mark.parametrize("to", [None, 13800000000, object()])
def test_a_to_that_holds_no_numbers_is_a_value_error(to):
    before = batch_count()
    with pytest.raises(ValueError, match="to must be the numbers to send to"):
        send_sms("shop-dxt", to, SIGNED)
    assert batch_count() == before


@pytest.mark.parametrize("count", [3, 12_000])  # a short list cut here, a long one staged for a worker
def test_an_idempotency_key_replays_only_the_same_request(count):
    import smsq

    def numbers(extra=()):  # a generator each time, as an application streams a file
        yield from (f"136{i:08d}" for i in range(count))
        yield from extra

    key = f"campaign-{count}"
    first = send_sms("shop-dxt", numbers(), SIGNED, idempotency_key=key)
    again = send_sms("shop-dxt", numbers(), SIGNED, idempotency_key=key)
    assert (again.batch_id, again.accepted, again.replayed) == (first.batch_id, count, True)
    before = batch_count()
    later = datetime(2099, 1, 1, 9, 0)
    for to, content, send_at in [
        (numbers(["13900000001"]), SIGNED, None),  # one number more
        (numbers(), SIGNED + "!", None),  # other content
        (numbers(), SIGNED, later),
    ]:  # another time
        with pytest.raises(smsq.IdempotencyConflictError) as exc:
            send_sms("shop-dxt", to, content, send_at=send_at, idempotency_key=key)
        assert isinstance(exc.value, ValueError)
        assert f"idempotency key {key!r} was used for batch {first.batch_id}" in str(exc.value)
    assert batch_count() == before  # nothing stored for the refused sends
    # The key belongs to the account: another account may use it for its own send.
    assert not send_sms("slow-dxt", numbers(), SIGNED, idempotency_key=key).replayed


def test_the_body_digest_does_not_depend_on_how_the_numbers_are_read():
    import itertools

    from smsq.tasks.idempotency import BodyDigest

    def digest(numbers, take):
        body = BodyDigest(SIGNED, None)
        stream = body.through(iter(numbers))
        list(itertools.islice(stream, take))  # the intake stops anywhere; the rest is read by finish
        return body.finish(stream)

    numbers = [f"137{i:08d}" for i in range(12_001)]
    assert len({digest(numbers, take) for take in (0, 101, 5000, 5001, 12_001)}) == 1
    assert digest(numbers[:-1], 0) != digest(numbers, 0)
    assert digest(["13700000001", "3"], 0) != digest(["1370000000", "13"], 0)


def test_a_long_list_is_hashed_in_bounded_memory():
    import tracemalloc

    from smsq.tasks.idempotency import BodyDigest

    body = BodyDigest(SIGNED, None)
    tracemalloc.start()
    try:
        body.finish(body.through(f"138{i:08d}" for i in range(300_000)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak  # a block of numbers, never the list (about 20 MB)


def test_a_database_that_cannot_be_reached_raises_smsqs_own_error(monkeypatch):
    import smsq

    monkeypatch.setenv("SMSQ_DATABASE_URL", "postgresql://app:Db-pw-73@127.0.0.1:1/app")
    settings.cache_clear()
    try:
        with pytest.raises(smsq.DatabaseUnreachableError) as exc:
            send_sms("shop-dxt", ["13800000000"], SIGNED)
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    message = str(exc.value)
    assert message.startswith("cannot reach the database (postgresql+psycopg://app:***@127.0.0.1:1/app)")
    assert "Db-pw-73" not in message and isinstance(exc.value, ConnectionError)


@pytest.mark.parametrize("count", [2, 250], ids=["short list", "split by a worker"])
def test_a_scheduled_send_publishes_nothing_until_the_relay_releases_it(count):
    # dxt takes a send_time of its own; smsq holds the chunks all the same, so that they
    # can be cancelled until their time and their status says "scheduled".
    seen = []

    def capture(sender=None, body=None, **_):
        seen.append(sender)

    at = datetime(2030, 1, 1, 9, 30)  # Beijing time: 01:30 UTC
    before_task_publish.connect(capture, weak=False)
    try:
        receipt = send_sms("shop-dxt", [f"139{i:08d}" for i in range(count)], SIGNED, send_at=at)
        if "smsq.split_batch" in seen:
            run_split(settings(), receipt.batch_id)
    finally:
        before_task_publish.disconnect(capture)
    assert "smsq.send_chunk" not in seen
    with session_scope(settings().database_url) as s:
        chunks = s.execute(
            select(Chunk.state, Chunk.next_attempt_at, Chunk.queued_at).where(Chunk.batch_id == receipt.batch_id)
        ).all()
    assert chunks and set(chunks) == {("pending", datetime(2030, 1, 1, 1, 30), None)}
    status = batch_status(receipt.batch_id)
    assert status.scheduled and status.send_at == datetime(2030, 1, 1, 1, 30)


def test_a_large_stream_is_chunked_at_the_vendor_limit():
    def numbers():  # a generator: send_sms must not need a list
        for i in range(25_000):
            yield f"135{i % 20_000:08d}"  # 5,000 repeats

    seen = []

    def capture(sender=None, body=None, headers=None, **_):
        seen.append((sender, body, headers))

    before_task_publish.connect(capture, weak=False)
    try:
        receipt = send_sms("shop-dxt", numbers(), SIGNED)
    finally:
        before_task_publish.disconnect(capture)
    assert receipt.accepted == 20_000 and receipt.lane == "bulk" and receipt.queued
    # One message for the whole batch, carrying its id only; a worker cuts the chunks.
    assert [(sender, body[0], headers["argsrepr"]) for sender, body, headers in seen] == [
        ("smsq.split_batch", [receipt.batch_id], f"batch {receipt.batch_id} (shop-dxt)")
    ]
    status = batch_status(receipt.batch_id)
    assert (status.to_split, status.chunks, status.recipients) == (200, {}, {"queued": 20_000})
    assert not status.final

    run_split(settings(), receipt.batch_id)  # what the worker does with the message
    with session_scope(settings().database_url) as s:
        sizes = s.execute(select(Chunk.size).where(Chunk.batch_id == receipt.batch_id)).scalars().all()
        unassigned = s.scalar(
            select(func.count())
            .select_from(Recipient)
            .where(Recipient.batch_id == receipt.batch_id, Recipient.chunk_seq.is_(None))
        )
    assert sorted(set(sizes)) == [100] and len(sizes) == 200 and unassigned == 0


def test_task_messages_carry_the_chunk_id_only():
    seen = []

    def capture(sender=None, body=None, headers=None, **_):
        seen.append((sender, body, headers))

    before_task_publish.connect(capture, weak=False)
    try:
        receipt = send_sms("shop-dxt", ["13912345678", "13912345679"], SIGNED)
    finally:
        before_task_publish.disconnect(capture)
    assert len(seen) == 1
    sender, body, headers = seen[0]
    assert sender == "smsq.send_chunk"
    args = body[0]
    # the chunk id; and the names of its account and lane, for the rate limiter and the way back to the queue
    assert len(args) == 1 and isinstance(args[0], int) and body[1] == {"account": "shop-dxt", "lane": receipt.lane}
    # Flower names the chunk, its batch and its account: ids and a configured name, no secret
    assert headers["argsrepr"] == f"chunk {args[0]} (batch {receipt.batch_id}, shop-dxt)"
    wire = json.dumps([body, headers], ensure_ascii=False)
    for secret in ("13912345678", "验证码", PASSWORD):
        assert secret not in wire
    assert receipt.accepted == 2


def test_no_long_broker_countdown_can_be_asked_for():
    """Redis redelivers long-delayed messages after its visibility timeout: long waits go to the relay."""
    from smsq.tasks.polls import publish_poll
    from smsq.tasks.publish import MAX_COUNTDOWN, publish_chunk

    seen = []

    def capture(sender=None, **_):
        seen.append(sender)

    before_task_publish.connect(capture, weak=False)
    try:
        with pytest.raises(ValueError, match="belong to the relay"):
            publish_chunk(1, "bulk", countdown=3600)
        publish_poll("shop-dxt", "balance", countdown=3600)  # a poll is clamped to the next window instead
    finally:
        before_task_publish.disconnect(capture)
    assert seen == ["smsq.poll_balance"] and MAX_COUNTDOWN == 60.0


SIGNATURE_ACCOUNTS = """
[accounts.shop-jx]
provider = "jinxin"
base_url = "http://127.0.0.1:9/"
username = "test"
password = "not-used-here"
signature = "【今信科技】"
userid = "12"
format = "json"

[accounts.shop-lk]
provider = "linkws"
base_url = "http://127.0.0.1:9/"
username = "test"
password = "not-used-here"
signature = "【凌凯】"
"""


@pytest.fixture
def signature_accounts(tmp_path):
    config = tmp_path / "signatures.toml"
    config.write_text(SIGNATURE_ACCOUNTS + POLICY_OFF, encoding="utf-8")
    saved = apply_env({"SMSQ_CONFIG": str(config)})
    yield
    restore_env(saved)


@pytest.mark.parametrize(
    "account, content, stored",
    [
        ("shop-jx", "您的验证码是345678,30分钟输入有效。", "【今信科技】您的验证码是345678,30分钟输入有效。"),
        ("shop-jx", "您的验证码是345678【今信科技】", "【今信科技】您的验证码是345678"),
        ("shop-lk", "您的验证码是345678", "您的验证码是345678【凌凯】"),
        ("shop-lk", "【凌凯】您的验证码是345678", "您的验证码是345678【凌凯】"),
    ],
)
def test_the_signature_is_put_where_the_vendor_wants_it(signature_accounts, account, content, stored):
    receipt = send_sms(account, ["13800000000"], content)
    with session_scope(settings().database_url) as s:
        from smsq.store.models import Batch

        assert s.get(Batch, receipt.batch_id).content == stored


@pytest.mark.parametrize(
    "account, content, message",
    [
        (
            "shop-jx",
            "您的验证码是345678【某品牌】",
            "jinxin wants the signature first, but the content has 【某品牌】 at its end and account 'shop-jx' "
            "signs with 【今信科技】",
        ),
        (
            "shop-lk",
            "【某品牌】您的验证码是345678",
            "linkws wants the signature last, but the content has 【某品牌】 at its start and account 'shop-lk' "
            "signs with 【凌凯】",
        ),
    ],
)
def test_a_signature_in_the_wrong_place_is_refused_at_intake(signature_accounts, account, content, message):
    with pytest.raises(ContentError) as exc:
        send_sms(account, ["13800000000"], content)
    assert message in str(exc.value)


def test_a_send_is_of_one_kind_kept_on_its_batch():
    from smsq.tasks.lookup import recent_batches

    notice = send_sms("shop-dxt", ["13800000000"], SIGNED)
    assert (notice.kind, batch_status(notice.batch_id).kind) == ("notice", "notice")
    # an OTP takes the priority lane whatever its size (150 is over SMSQ_PRIORITY_MAX)
    otp = send_sms("shop-dxt", [f"135{i:08d}" for i in range(150)], SIGNED, kind="otp")
    assert (otp.kind, otp.lane) == ("otp", "priority")
    assert send_sms("shop-dxt", ["13800000000"], SIGNED, kind="otp", priority=True).lane == "priority"
    marketing = send_sms("shop-dxt", [f"135{i:08d}" for i in range(150)], SIGNED, kind="marketing")
    assert (marketing.kind, marketing.lane) == ("marketing", "bulk")
    status = batch_status(otp.batch_id)
    assert status.kind == "otp" and status.as_dict()["kind"] == "otp"
    kinds = {b.batch_id: b.kind for b in recent_batches(10)}
    assert (kinds[notice.batch_id], kinds[otp.batch_id], kinds[marketing.batch_id]) == ("notice", "otp", "marketing")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"kind": "sms"}, r"^unknown kind 'sms'; the kinds are otp, notice, marketing$"),
        ({"kind": None}, r"^unknown kind None"),
        ({"kind": "otp", "priority": False}, r"^kind 'otp' always takes the priority lane"),
    ],
)
def test_a_kind_that_cannot_be_is_refused_and_nothing_stored(kw, message):
    before = batch_count()
    with pytest.raises(ValueError, match=message):
        send_sms("shop-dxt", ["13800000000"], SIGNED, **kw)
    assert batch_count() == before


def test_an_idempotency_key_replays_only_the_same_kind():
    import smsq
    from smsq.tasks.idempotency import BodyDigest

    first = send_sms("shop-dxt", ["13800000001"], SIGNED, idempotency_key="code-1", kind="otp")
    again = send_sms("shop-dxt", ["13800000001"], SIGNED, idempotency_key="code-1", kind="otp")
    assert (again.batch_id, again.replayed, again.kind, again.lane) == (first.batch_id, True, "otp", "priority")
    with pytest.raises(smsq.IdempotencyConflictError, match="another content, send time, kind or numbers"):
        send_sms("shop-dxt", ["13800000001"], SIGNED, idempotency_key="code-1")  # a notice now
    # A notice hashes as every send did before kinds: a batch stored then replays for its retry.
    hexes = [BodyDigest(SIGNED, None, *kind).finish(iter(())) for kind in [(), ("notice",), ("otp",), ("marketing",)]]
    assert hexes[0] == hexes[1] and len(set(hexes)) == 3
