"""An account added to the accounts file while `smsq worker` runs: the worker reads the
file again and sends; when it cannot (its copy does not validate for it), the chunk
waits pending and `smsq send --wait` and `smsq status` say which worker lacks which
account. Real worker, real simulator, the real `smsq` command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from ..conftest import PASSWORD, ROOT, stack_fixture, wait_final, wait_until
from .conftest import smsq

stack = stack_fixture("embedded", "distributed")

CONTENT = "【某某科技】您的验证码是 4321"


def rewrite(stack, change) -> None:
    """The accounts file changed as an editor saves it: whole, in one rename."""
    config = stack.tmp / "smsq.toml"
    staged = config.with_suffix(".new")
    staged.write_text(change(config.read_text(encoding="utf-8")), encoding="utf-8")
    os.replace(staged, config)


def add_account(stack, name: str, credential: str) -> None:
    rewrite(
        stack,
        lambda text: (
            text
            + f"""
[accounts.{name}]
provider = "dxt"
base_url = "{stack.sim_url}"
username = "test"
{credential}
signature = "【某某科技】"
"""
        ),
    )


def send_wait(stack, account: str, number: str, **env: str) -> subprocess.Popen:
    """`smsq send --wait` running; its output is read as it comes, as a script would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **stack.env, **env}
    full_env.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen(
        [sys.executable, "-m", "smsq", "send", "--account", account, "--to", number, "--content", CONTENT, "--wait"],
        env=full_env,
        cwd=stack.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Lines:
    """A process's stderr, read as it comes."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def test_an_account_added_while_the_worker_runs_is_sent_after_a_reload(stack, sim):
    add_account(stack, "late-dxt", 'password_env = "SMSQ_TEST_DXT_PASSWORD"')
    result = smsq(
        "send",
        "--account",
        "late-dxt",
        "--to",
        "13800138001",
        "--content",
        CONTENT,
        "--wait",
        env=stack.env,
        cwd=stack.tmp,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 1" in result.stderr and "does not know" not in result.stderr
    assert [s.numbers for s in sim.sends] == [["13800138001"]]
    log = stack.worker_log()
    assert "accounts and routes read again; added: late-dxt" in log
    assert "Traceback" not in log and "UnknownAccountError" not in log
    if stack.mode == "distributed":  # the embedded broker carries no broadcast
        health = smsq("health", "worker", env=stack.env, cwd=stack.tmp)
        assert health.returncode == 0 and "answered (accounts file version" in health.stdout, health.stderr


def test_an_account_the_worker_cannot_read_waits_visibly_until_it_can(stack, sim):
    # The sender has the password's variable, the worker does not: the worker's copy of
    # the file does not validate, so it keeps the accounts it has and cannot send.
    add_account(stack, "other-dxt", 'password_env = "SMSQ_TEST_OTHER_PASSWORD"')
    waiting = send_wait(stack, "other-dxt", "13800138002", SMSQ_TEST_OTHER_PASSWORD="anything")
    err = Lines(waiting.stderr)
    try:
        wait_until(lambda: "does not know account other-dxt" in err.text(), 60, 0.2, "--wait to say why")
        said = err.text()
        assert "waiting: " in said and f"{stack.tmp / 'smsq.toml'}" in said, said
        assert "SMSQ_TEST_OTHER_PASSWORD, which is not set" in said, said  # why the worker cannot
        batch_id = int(waiting.stdout.readline())
        status = smsq("status", str(batch_id), env={**stack.env, "SMSQ_TEST_OTHER_PASSWORD": "anything"}, cwd=stack.tmp)
        assert status.returncode == 0 and "in progress" in status.stdout
        assert "waiting:" in status.stdout and "does not know account other-dxt" in status.stdout, status.stdout
        assert sim.sends == []
        if stack.mode == "distributed":  # the embedded broker carries no broadcast
            health = smsq("health", "worker", env={**stack.env, "SMSQ_TEST_OTHER_PASSWORD": "anything"}, cwd=stack.tmp)
            assert health.returncode == 3, health.stdout + health.stderr
            assert "lacks account(s) other-dxt" in health.stderr
            assert "SMSQ_TEST_OTHER_PASSWORD, which is not set" in health.stderr

        # A credential the worker can read: the worker reads the file again and sends.
        secret = stack.tmp / "other.secret"
        secret.write_text(PASSWORD + "\n", encoding="utf-8")
        rewrite(
            stack, lambda text: text.replace('password_env = "SMSQ_TEST_OTHER_PASSWORD"', f'password_file = "{secret}"')
        )
        assert waiting.wait(90) == 0, err.text()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert "sent 1" in err.text()
    assert [s.numbers for s in sim.sends] == [["13800138002"]]
    log = stack.worker_log()
    assert log.count("changed but cannot be used") == 1, log[-3000:]
    assert "SMSQ_TEST_OTHER_PASSWORD, which is not set" in log
    assert "Traceback" not in log and "UnknownAccountError" not in log


def test_a_poll_for_an_account_the_worker_does_not_know_is_one_line_not_a_traceback(stack):
    from smsq.tasks.polls import publish_poll

    publish_poll("ghost-dxt", "balance")  # as a beat whose accounts file names it sends it
    wait_until(lambda: "poll ghost-dxt balance: not polled" in stack.worker_log(), 60, 0.2, "the poll's line")
    log = stack.worker_log()
    assert "does not know account ghost-dxt" in log
    assert "Traceback" not in log and "UnknownAccountError" not in log


def test_an_application_sends_to_an_account_added_since_it_read_the_file(stack, sim):
    from smsq import send_sms
    from smsq.worker.config import settings

    assert "app-dxt" not in settings().accounts  # this process read the file before
    add_account(stack, "app-dxt", 'password_env = "SMSQ_TEST_DXT_PASSWORD"')
    receipt = send_sms("app-dxt", ["13800138004"], CONTENT)
    status = wait_final(receipt.batch_id, 60)
    assert status.recipients.get("sent") == 1
    assert [s.numbers for s in sim.sends] == [["13800138004"]]
