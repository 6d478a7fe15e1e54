"""deploy/ as written: the compose file read statically (no Docker daemon here), the
secrets script run for real, and the trial's documented commands run natively
against a simulator with the simulators' password, PostgreSQL, Redis, a worker
and beat — what each container of the trial runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smsq.simulator.catalog import DEMO_PASSWORD, DEMO_USER
from smsq.simulator.dxt import DxtState, create_app
from smsq.simulator.server import serve
from smsq.worker.config import load_settings

from ..conftest import (
    REDIS_URL,
    ROOT,
    Stack,
    apply_env,
    fresh_postgres,
    fresh_redis,
    restore_env,
    start_worker,
    stop_worker,
    wait_until,
)
from .conftest import smsq

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
SMSQ_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image") == "smsq:local"}
LONG_RUNNING = {name for name, s in SMSQ_SERVICES.items() if s.get("restart") != "no"}


def test_every_long_running_service_has_a_healthcheck():
    assert {"worker", "beat", "flower", "metrics", "simulators"} <= LONG_RUNNING
    for name in LONG_RUNNING | {"redis", "postgres"}:
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert SERVICES["worker"]["healthcheck"]["test"] == ["CMD", "smsq", "health", "worker"]
    assert SERVICES["beat"]["healthcheck"]["test"] == ["CMD", "smsq", "health", "beat"]
    assert SERVICES["flower"]["healthcheck"]["test"][-1] == "http://127.0.0.1:5555/healthcheck"


def test_published_ports_are_on_the_hosts_loopback_only():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the loopback"
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert SERVICES["metrics"]["ports"] == ["127.0.0.1:9464:9464"]


def test_no_password_is_written_in_the_compose_file_or_its_environment():
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8").lower()
    assert "change-me" not in text and ":-" not in text  # no placeholder, no ${VAR:-fallback}
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|AUTH|_URL$", key) and key != "SMSQ_BROKER_URL":
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
    assert SERVICES["worker"]["environment"]["SMSQ_BROKER_URL"] == "redis://redis:6379/0"  # no password in it


def test_every_secret_is_a_file_from_deploy_secrets_and_reaches_its_reader():
    secrets = COMPOSE["secrets"]
    assert all(s["file"].startswith("./secrets/") for s in secrets.values())
    toml = (DEPLOY / "smsq.toml").read_text(encoding="utf-8")
    files = re.findall(r'^password_file = "/run/secrets/([^"]+)"', toml, re.M)
    assert files == ["shop_dxt_password"] and "\npassword_env" not in toml and "\npassword =" not in toml
    for name, service in SMSQ_SERVICES.items():
        if name != "simulators":
            assert {"database_url", *files} <= set(service["secrets"]), name
    assert "flower_auth" in SERVICES["flower"]["secrets"]
    assert "postgres_password" in SERVICES["postgres"]["secrets"]


def test_git_ignores_real_secret_files_but_keeps_the_examples():
    ignored = subprocess.run(
        [
            "git",
            "check-ignore",
            "deploy/secrets/shop_dxt_password",
            "deploy/secrets/flower_auth",
            "deploy/secrets/shop_dxt_password.example",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == ["deploy/secrets/shop_dxt_password", "deploy/secrets/flower_auth"]


@pytest.fixture
def deploy_copy(tmp_path):
    """deploy/'s script and examples, in a scratch directory (the real deploy/secrets is the user's)."""
    copy = tmp_path / "deploy"
    (copy / "secrets").mkdir(parents=True)
    shutil.copy(DEPLOY / "make-secrets", copy)
    for example in (DEPLOY / "secrets").glob("*.example"):
        shutil.copy(example, copy / "secrets")
    return copy


def make_secrets(copy, *args):
    return subprocess.run([str(copy / "make-secrets"), *args], capture_output=True, text=True, timeout=30)


def test_make_secrets_for_the_trial(deploy_copy):
    result = make_secrets(deploy_copy, "--trial")
    assert result.returncode == 0, result.stderr
    secrets = deploy_copy / "secrets"
    read = {p.name: p.read_text().strip() for p in secrets.iterdir()}
    assert read["shop_dxt_password"] == DEMO_PASSWORD  # what the simulators accept
    assert re.fullmatch(r"admin:[0-9a-f]{32}", read["flower_auth"])
    assert re.fullmatch(r"[0-9a-f]{32}", read["postgres_password"])
    assert read["database_url"] == f"postgresql+psycopg://smsq:{read['postgres_password']}@postgres:5432/smsq"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert read["flower_auth"].split(":")[1] not in result.stdout  # the script never prints one

    again = make_secrets(deploy_copy, "--trial")
    assert again.returncode == 0 and "created" not in again.stdout
    assert {p.name: p.read_text().strip() for p in secrets.iterdir()} == read  # nothing overwritten


def test_make_secrets_for_production_asks_for_the_vendor_password(deploy_copy):
    result = make_secrets(deploy_copy)
    assert result.returncode == 1
    assert "missing  secrets/shop_dxt_password" in result.stderr
    assert not (deploy_copy / "secrets" / "shop_dxt_password").exists()
    assert (deploy_copy / "secrets" / "database_url").exists()


def documented(command: str) -> list[str]:
    """The smsq command line deploy/README.md shows after `exec worker`."""
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if f"exec worker smsq {command}" in line)
    return shlex.split(line.split("exec worker smsq ", 1)[1])


@pytest.fixture
def trial(deploy_copy, tmp_path):
    """The trial's containers, natively: deploy/smsq.toml with the dxt simulator's
    address, secrets made by `make-secrets --trial`, PostgreSQL, Redis, migrate,
    a worker and beat."""
    assert make_secrets(deploy_copy, "--trial").returncode == 0
    secrets = deploy_copy / "secrets"
    state = DxtState({DEMO_USER: DEMO_PASSWORD}, balance=1_000_000)
    sim = serve(create_app(state), port=0)
    config = (DEPLOY / "smsq.toml").read_text(encoding="utf-8")
    config = config.replace('"http://simulators:8801/"', f'"{sim.url}"')
    config = config.replace('"/run/secrets/shop_dxt_password"', f'"{secrets / "shop_dxt_password"}"')
    (tmp_path / "smsq.toml").write_text(config, encoding="utf-8")
    # The database URL comes from a secret file, as in compose.
    (secrets / "database_url").write_text(fresh_postgres(f"smsq_deploy_{os.getpid()}") + "\n")
    env = {
        "SMSQ_CONFIG": str(tmp_path / "smsq.toml"),
        "SMSQ_DATABASE_URL_FILE": str(secrets / "database_url"),
        "SMSQ_DATABASE_URL": "",
        "SMSQ_BROKER_URL": fresh_redis(REDIS_URL),
    }
    saved = apply_env(env)
    stack = Stack("distributed", env, state, sim.url, tmp_path)
    beat = None
    try:
        migrate = smsq("db", "upgrade", env=env, cwd=tmp_path)
        assert migrate.returncode == 0, migrate.stderr
        stack.worker = start_worker(stack)
        beat = subprocess.Popen(
            [sys.executable, "-m", "smsq", "beat"],
            cwd=tmp_path,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=open(tmp_path / "beat.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        yield stack
    finally:
        if beat is not None:
            beat.terminate()
            beat.wait(20)
        stop_worker(stack.worker)
        sim.stop()
        restore_env(saved)


def test_the_documented_trial_send_is_delivered(trial):
    send = smsq(*documented("send"), env=trial.env, cwd=trial.tmp, timeout=120)
    assert send.returncode == 0, send.stdout + send.stderr
    batch_id = send.stdout.split()[0]
    assert "final" in send.stdout and "sent 2" in send.stderr  # the progress line
    assert {n for call in trial.sim.sends for n in call.numbers} == {"13800138000", "13900139000"}

    status_args = documented("status")
    assert status_args == ["status", "BATCH_ID"]
    # Beat polls the delivery reports (every 60 s for this account).
    wait_until(
        lambda: "delivered 2" in smsq("status", batch_id, env=trial.env, cwd=trial.tmp).stdout,
        150,
        3,
        "the delivery reports of the trial send",
    )

    # The compose healthchecks, run as the containers run them.
    for check in (["worker"], ["beat"]):
        result = smsq("health", *check, env=trial.env, cwd=trial.tmp)
        assert result.returncode == 0, result.stderr
    assert DEMO_PASSWORD not in (trial.tmp / "beat.log").read_text() + trial.worker_log()


# -- where the deployments let smsq write --------------------------------------------------

SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))


def unit(path) -> dict[str, list[str]]:
    """A unit file's settings, every value of a key in order (Environment= may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def env_file(path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here")
    smsq_bin = Path(sys.executable).parent / "smsq"
    copies = []
    for path in UNITS:  # a template is verified as one of its instances
        copy = tmp_path / path.name.replace("@.", "@all.")
        copy.write_text(path.read_text(encoding="utf-8").replace("/opt/smsq/venv/bin/smsq", str(smsq_bin)))
        copies.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_every_unit_is_hardened_alike_and_writes_only_in_its_state_directory():
    names = {path.name for path in UNITS}
    assert names == {"smsq-worker@.service", "smsq-beat.service", "smsq-flower.service", "smsq-metrics.service"}
    hardening = {
        key: values
        for key, values in unit(SYSTEMD / "smsq-worker@.service").items()
        if key.startswith(
            (
                "Protect",
                "Private",
                "Restrict",
                "NoNew",
                "ReadWrite",
                "StateDirectory",
                "Capability",
                "Lock",
                "SystemCall",
                "UMask",
            )
        )
    }
    assert hardening["ProtectSystem"] == ["strict"] and hardening["StateDirectory"] == ["smsq"]
    for path in UNITS:
        settings = unit(path)
        assert {key: settings.get(key) for key in hardening} == hardening, path.name
        assert settings["User"] == ["smsq"] and settings["WorkingDirectory"] == ["/var/lib/smsq"], path.name
    metrics = shlex.split(unit(SYSTEMD / "smsq-metrics.service")["ExecStart"][0])
    assert metrics[1:] == ["metrics", "--port", "9464", "--address", "127.0.0.1"]


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_under_systemd_the_spool_and_state_are_in_the_writable_state_directory(path, monkeypatch):
    """The settings as a unit's process reads them: /etc/smsq/smsq.env, the unit's Environment=,
    and $STATE_DIRECTORY that StateDirectory= sets. /etc/smsq (the config's directory) is
    read-only under ProtectSystem=strict."""
    settings = unit(path)
    state_directory = Path("/var/lib") / settings["StateDirectory"][0]
    writable = [state_directory, *(Path(p) for p in settings.get("ReadWritePaths", []))]
    for name in [n for n in os.environ if n.startswith("SMSQ_") or n == "STATE_DIRECTORY"]:
        monkeypatch.delenv(name)
    environment = dict(value.split("=", 1) for value in settings.get("Environment", []))
    assert settings["EnvironmentFile"][0] == "/etc/smsq/smsq.env"
    for name, value in {
        **environment,
        **env_file(DEPLOY / "smsq.env.example"),
        "STATE_DIRECTORY": str(state_directory),
    }.items():
        monkeypatch.setenv(name, value)
    conf = load_settings()
    assert not conf.embedded and conf.config_path == Path("/etc/smsq/smsq.toml")
    for place in (conf.spool_dir, conf.state_dir / "celerybeat-schedule"):
        assert any(place.is_relative_to(w) for w in writable), f"{place} is read-only under {path.name}"
    assert conf.spool_dir == Path("/var/lib/smsq/spool")


def test_the_worker_unit_and_the_compose_worker_run_the_advised_layout():
    """`smsq worker` without --queues or --concurrency: bulk processes plus the priority lane's
    process (worker/lanes.py), not one process of 64 threads on every queue."""
    settings = unit(SYSTEMD / "smsq-worker@.service")
    argv = shlex.split(settings["ExecStart"][0])
    assert argv[:2] == ["/opt/smsq/venv/bin/smsq", "worker"]
    assert argv[2:] == ["--hostname", "%i@%H", "$SMSQ_WORKER_OPTIONS"]
    assert "SMSQ_WORKER_OPTIONS=" in settings["Environment"]  # empty unless worker-%i.env says otherwise
    assert settings["EnvironmentFile"][-1] == "-/etc/smsq/worker-%i.env"
    assert SERVICES["worker"]["command"] == ["smsq", "worker"]
    assert "replicas" not in SERVICES["worker"].get("deploy", {})  # one per host; --scale for more
    for name, service in SMSQ_SERVICES.items():
        assert "--queues" not in service.get("command", []), name


def test_in_compose_the_state_directory_is_a_named_volume_of_the_smsq_user():
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    state = re.search(r"SMSQ_STATE_DIR=(\S+)", dockerfile).group(1)
    assert state == "/var/lib/smsq"
    # The user's home, made by useradd and owned by it: a new named volume takes its owner.
    assert f"--home-dir {state} --create-home" in dockerfile and "USER smsq" in dockerfile
    for name, service in SMSQ_SERVICES.items():
        assert "SMSQ_STATE_DIR" not in (service.get("environment") or {}), name
        volumes = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert volumes.get(state) in COMPOSE["volumes"], f"{name}: {state} is not a named volume"


# -- monitoring ------------------------------------------------------------------------------

PROMETHEUS = DEPLOY / "prometheus"


def alert_rules() -> list[dict]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["smsq-alerts.yml"]  # relative to prometheus.yml
    rules = yaml.safe_load((PROMETHEUS / config["rule_files"][0]).read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_the_alert_rules_are_the_ones_the_operator_guide_lists():
    rules = alert_rules()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Smsq[A-Za-z]+", rule["alert"]) and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert len({rule["alert"] for rule in rules}) == len(rules)
    guide = (ROOT / "docs" / "operator.md").read_text(encoding="utf-8")
    listed = re.search(r"^Alerts worth having: (.*?)\n\n", guide, re.M | re.S).group(1)
    expressions = [e.split(" < ...")[0] for e in re.findall(r"`([^`]+)`", listed) if "smsq_" in e]
    assert len(expressions) == 6
    for expression in expressions:
        assert any(rule["expr"].startswith(expression) for rule in rules), f"no rule for {expression}"


def test_the_grafana_board_shows_each_accounts_circuit():
    board = json.loads((DEPLOY / "grafana" / "smsq-dashboard.json").read_text(encoding="utf-8"))
    [panel] = [p for p in board["panels"] if "smsq_account_circuit" in json.dumps(p["targets"])]
    assert panel["type"] == "state-timeline" and 'account=~"$account"' in panel["targets"][0]["expr"]
    names = {
        option["text"]
        for mapping in panel["fieldConfig"]["defaults"]["mappings"]
        for option in mapping["options"].values()
    }
    assert names == {"closed", "half open", "OPEN"}
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
