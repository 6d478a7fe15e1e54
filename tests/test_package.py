"""smsq installs one import package, so it lives beside an application's own modules."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "SMSQ_CONFIG": str(cwd / "none.toml")})


def test_an_application_with_its_own_tasks_and_worker_modules_keeps_them(tmp_path):
    # A typical Celery project: its own tasks.py and worker.py next to the code that sends.
    (tmp_path / "tasks.py").write_text("MINE = 'tasks'\n")
    (tmp_path / "worker.py").write_text("MINE = 'worker'\n")
    out = _run("""
        import tasks, worker
        from smsq import send_sms, batch_status, Receipt, BatchStatus, ContentError, UnknownAccountError
        import smsq.tasks.producer
        assert tasks.MINE == "tasks" and worker.MINE == "worker", (tasks, worker)
        assert send_sms is smsq.tasks.producer.send_sms
        assert issubclass(ContentError, ValueError)
        print("ok")
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_nothing_but_smsq_is_importable_from_the_install(tmp_path):
    out = _run("""
        import importlib.util
        print([m for m in ("tasks", "worker", "providers", "store", "scheduler", "simulator")
               if importlib.util.find_spec(m) is not None])
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_providers_import_without_celery_or_the_database(tmp_path):
    out = _run("""
        import sys
        import smsq.providers.dxt
        print(sorted(m for m in ("celery", "sqlalchemy", "kombu") if m in sys.modules))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_celery_dash_a_smsq_finds_the_app(tmp_path):
    out = _run("""
        from celery.app.utils import find_app
        app = find_app("smsq")
        print(app.main, app.conf.task_serializer, app.conf.accept_content)
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "smsq json ['json']"
