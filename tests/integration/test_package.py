"""smsq installs one import package, so it lives beside an application's own modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SMSQ_CONFIG": str(cwd / "none.toml")},
    )


def test_an_application_with_its_own_tasks_and_worker_modules_keeps_them(tmp_path):
    # A typical Celery project: its own tasks.py and worker.py next to the code that sends.
    (tmp_path / "tasks.py").write_text("MINE = 'tasks'\n")
    (tmp_path / "worker.py").write_text("MINE = 'worker'\n")
    out = _run(
        """
        import tasks, worker
        from smsq import send_sms, batch_status, Receipt, BatchStatus, ContentError, UnknownAccountError
        import smsq.tasks.producer
        assert tasks.MINE == "tasks" and worker.MINE == "worker", (tasks, worker)
        assert send_sms is smsq.tasks.producer.send_sms
        assert issubclass(ContentError, ValueError)
        print("ok")
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_nothing_but_smsq_is_importable_from_the_install(tmp_path):
    out = _run(
        """
        import importlib.util
        print([m for m in ("tasks", "worker", "providers", "store", "scheduler", "simulator")
               if importlib.util.find_spec(m) is not None])
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_providers_import_without_celery_or_the_database(tmp_path):
    out = _run(
        """
        import sys
        import smsq.providers.dxt
        print(sorted(m for m in ("celery", "sqlalchemy", "kombu") if m in sys.modules))
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_celery_dash_a_smsq_finds_the_app(tmp_path):
    out = _run(
        """
        from celery.app.utils import find_app
        app = find_app("smsq")
        print(app.main, app.conf.task_serializer, app.conf.accept_content)
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "smsq json ['json']"


def test_the_app_has_the_workers_boot_steps_and_beats_schedule_however_it_was_first_built(tmp_path):
    """The runtime builds the app a producer needs; smsq.app (celery -A smsq, the smsq command)
    completes it with the relay timer, the warm-up and the beat schedule, also when a send built
    it first."""
    (tmp_path / "none.toml").write_text(
        '[accounts.shop-dxt]\nprovider = "dxt"\nbase_url = "http://127.0.0.1:9/"\n'
        'username = "u"\npassword = "p-secret"\n'
    )
    out = _run(
        """
        from smsq.worker.app import get_app, reset_app

        def steps(app):
            return sorted(step.label for step in app.steps["worker"])

        first = get_app()  # as send_sms builds it
        print(steps(first), sorted(first.conf.beat_schedule or {}))
        import smsq
        print(smsq.app is first, steps(first), sorted(smsq.app.conf.beat_schedule))
        reset_app()
        print(steps(get_app()), len(get_app().conf.beat_schedule))
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    schedule = ["smsq.poll_balance:shop-dxt", "smsq.poll_inbound:shop-dxt", "smsq.poll_reports:shop-dxt", "smsq.relay"]
    assert out.stdout.splitlines() == [
        "[] []",
        f"True ['smsq relay timer', 'smsq warm-up'] {schedule}",
        "['smsq relay timer', 'smsq warm-up'] 4",
    ], out.stdout


def test_an_applications_own_worker_children_are_left_as_they_are(tmp_path):
    """Celery's prefork pool announces each child to every receiver in the process: smsq's
    (which keeps a child alive through SIGTERM until its vendor call is recorded) acts only
    in a child of smsq's worker, not in one of the application's that merely imports smsq."""
    out = _run(
        """
        from celery import Celery
        from celery.signals import worker_process_init
        from smsq.worker import app as smsq_app, shutdown

        smsq_app.get_app()  # smsq in use in the application's worker
        theirs = Celery("myapp")  # the application's app, current in its worker's child
        worker_process_init.send(sender="celery@host")
        print("theirs", shutdown._pool_child)
        smsq_app.get_app().set_current()  # a child of smsq's worker
        worker_process_init.send(sender="smsq@host")
        print("ours", shutdown._pool_child)
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["theirs", "False", "ours", "True"]


# --- smsq is a guest in an application that has a Celery app of its own ---------------------

APP_INIT = """
from celery import Celery

# The everyday pattern (Django's celery.py): the application's app, current from here on.
app = Celery("myapp", broker={broker!r})
app.conf.task_default_queue = "myapp"
"""

APP_TASKS = """
from celery import shared_task


@shared_task(name="myapp.later")
def later(step):
    return step
"""

# Every public call of smsq, each followed by the same check: the application's app is
# still current (and the default app untouched), its shared task is its own app's, and
# the task's message lands in the application's broker, on its own queue.
APP_MAIN = """
import json
from datetime import timedelta

import celery
from celery import _state
from sqlalchemy import create_engine, text

import myapp
from myapp.tasks import later

db = create_engine({database_url!r})


def check(step):
    global default_app
    current = celery.current_app._get_current_object()
    assert current is myapp.app, f"after {{step}}: the current app is {{current.main!r}}"
    if step != "start":  # (the application's own first calls may set it: Celery's business)
        assert _state.default_app is default_app, f"after {{step}}: the default app changed"
    assert later.app is myapp.app, f"after {{step}}: myapp.later is bound to {{later.app.main!r}}"
    smsq_tasks = sorted(name for name in myapp.app.tasks if name.startswith("smsq."))
    assert not smsq_tasks, f"after {{step}}: smsq's tasks in the application's app: {{smsq_tasks}}"
    later.delay(step)
    with myapp.app.connection_for_read() as conn:
        message = conn.SimpleQueue("myapp").get(timeout=10)
        assert message.headers["task"] == "myapp.later", message.headers
        assert json.loads(message.body)[0] == [step], message.body
        message.ack()
    default_app = _state.default_app
    print("ok", step)


def fail_chunks(batch_id):
    with db.begin() as conn:
        conn.execute(text("UPDATE chunks SET state = 'failed' WHERE batch_id = :b"), {{"b": batch_id}})
        return conn.execute(text("SELECT min(id) FROM chunks WHERE batch_id = :b"), {{"b": batch_id}}).scalar()


check("start")
import smsq

receipt = smsq.send_sms("shop-dxt", ["13800138000", "13800138001"], "【某某科技】您的验证码是 345678")
check("send_sms")
smsq.send_sms("shop-dxt", ["13800138002"], "【某某科技】您的验证码是 345678", priority=True)
check("send_sms priority")
smsq.send_sms("shop-dxt", [f"1380013{{n:04d}}" for n in range(3000)], "【某某科技】会员日")
check("send_sms large")
batch = receipt.batch_id
smsq.batch_status(batch)
check("batch_status")
smsq.number_history("13800138000")
check("number_history")
list(smsq.export_batch(batch))
check("export_batch")
smsq.recent_batches()
check("recent_batches")
smsq.block_number("shop-dxt", "13900139000")
check("block_number")
list(smsq.blocked_numbers())
check("blocked_numbers")
smsq.unblock_number("shop-dxt", "13900139000")
check("unblock_number")
smsq.settle(fail_chunks(batch), "resend")
check("settle")
fail_chunks(batch)
smsq.settle_batch(batch, "failed", "resend")
check("settle_batch")
smsq.cancel_batch(batch)
check("cancel_batch")
smsq.purge(timedelta(days=90), dry_run=True)
check("purge")
assert smsq.app.main == "smsq"
check("smsq.app")
smsq.app.send_task("smsq.relay", queue="smsq.poll")
check("smsq.app.send_task")
"""


def test_an_application_keeps_its_own_celery_app_around_every_smsq_call(tmp_path):
    import os

    import redis

    from tests.conftest import REDIS_URL, ROOT, fresh_postgres, fresh_redis, write_config

    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text(APP_INIT.format(broker=f"sqla+sqlite:///{tmp_path / 'myapp-broker.db'}"))
    (package / "tasks.py").write_text(APP_TASKS)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "SMSQ_CONFIG": str(write_config(tmp_path / "smsq.toml", "http://127.0.0.1:9")),
        "SMSQ_TEST_DXT_PASSWORD": "not-used-here",
        "SMSQ_DATABASE_URL": fresh_postgres(f"smsq_guest_{os.getpid()}"),
        "SMSQ_BROKER_URL": fresh_redis(REDIS_URL),
    }
    upgrade = subprocess.run(
        [sys.executable, "-m", "smsq", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    (tmp_path / "main.py").write_text(APP_MAIN.format(database_url=env["SMSQ_DATABASE_URL"]))
    out = subprocess.run(
        [sys.executable, "main.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "ok smsq.app.send_task"
    # ... and nothing of the application's went to smsq's broker.
    broker = redis.Redis.from_url(REDIS_URL)
    lists = [key for key in broker.scan_iter() if broker.type(key) == b"list"]
    assert lists and not [key for key in lists if any(b"myapp.later" in m for m in broker.lrange(key, 0, -1))]


def test_an_applications_own_worker_and_beat_do_not_run_smsqs_start_up_work(tmp_path):
    """Celery sends worker_ready and beat_init for every app in the process: an application's
    worker or beat that imports smsq must not start smsq's spool replayer or queue its polls."""
    (tmp_path / "none.toml").write_text(
        '[accounts.shop-dxt]\nprovider = "dxt"\nbase_url = "http://127.0.0.1:9/"\n'
        'username = "u"\npassword = "p-secret"\n'
    )
    out = _run(
        """
        import threading
        from celery import Celery
        from celery.signals import beat_init, worker_ready
        import smsq.tasks.outcome_keeper, smsq.scheduler.schedule, smsq.tasks.polls as polls

        class Sender:  # a worker's consumer, beat's service: each has .app
            def __init__(self, app):
                self.app, self.scheduler = app, None

        sent = []
        polls.publish_poll = lambda account, kind, **kw: sent.append((account, kind))
        def replayers():
            return [t for t in threading.enumerate() if t.name == "smsq-spool-replay"]

        mine = Celery("myapp", set_as_current=False)
        worker_ready.send(sender=Sender(mine))
        beat_init.send(sender=Sender(mine))
        print("application:", len(replayers()), len(sent))

        import smsq
        ours = smsq.app  # smsq's own worker and beat do run it
        beat_init.send(sender=Sender(ours))
        print("smsq beat polls:", len(sent) > 0)
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["application: 0 0", "smsq beat polls: True"], out.stdout
