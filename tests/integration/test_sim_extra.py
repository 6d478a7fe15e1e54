"""The simulators are the optional extra smsq[sim]: the core installs no web server,
the command line starts without one, and `smsq simulate` / `smsq demo` without the
extra say how to get it in one line (exit 2). No service needed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from ..conftest import ROOT

SMSQ = str(Path(sys.executable).with_name("smsq"))
WEB_SERVERS = {"starlette", "uvicorn", "fastapi", "flask", "aiohttp", "gunicorn", "hypercorn", "tornado"}
MISSING = "smsq: error: the simulators are not installed: pip install 'smsq[sim]'"

# Put on PYTHONPATH, this makes the interpreter behave as if the extra were not
# installed: importing starlette or uvicorn (or any of their modules) fails.
WITHOUT_THE_EXTRA = textwrap.dedent("""
    import sys

    class WithoutTheSimExtra:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("starlette", "uvicorn"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, WithoutTheSimExtra())
""")


def project_name(requirement: str) -> str:
    for stop in "[<>=!~ ;":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def test_the_core_dependencies_name_no_web_server_and_the_sim_extra_brings_the_simulators_own():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {project_name(r) for r in project["dependencies"]}
    assert core & WEB_SERVERS == set(), core & WEB_SERVERS
    sim = {project_name(r) for r in project["optional-dependencies"]["sim"]}
    assert {"starlette", "uvicorn"} <= sim
    # The simulators still ship in the wheel; only their dependencies are optional.
    assert (
        "smsq.simulator"
        in (tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    )


def test_the_command_line_loads_neither_the_simulators_nor_a_web_server():
    code = textwrap.dedent("""
        import sys
        import smsq.cli
        from smsq.cli.commands import accounts, batches, common, demo, health, metrics, operators, processes
        smsq.cli.build_parser().parse_args(["simulate"])
        smsq.cli.build_parser().parse_args(["demo"])
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("starlette", "uvicorn")
                     or m == "smsq.simulator" or m.startswith("smsq.simulator.")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture
def without_the_extra(tmp_path) -> dict:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(WITHOUT_THE_EXTRA, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))
    env["SMSQ_CONFIG"] = str(tmp_path / "none.toml")
    for name in ("SMSQ_DATABASE_URL", "SMSQ_BROKER_URL"):
        env.pop(name, None)
    # The blocker works: starlette cannot be imported in that environment.
    check = subprocess.run(
        [sys.executable, "-c", "import starlette"], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode != 0 and "starlette" in check.stderr
    return env


@pytest.mark.parametrize("command", [["simulate"], ["simulate", "--only", "dxt"], ["demo", "--any-port"]])
def test_without_the_extra_simulate_and_demo_say_how_to_get_it(command, without_the_extra, tmp_path):
    demo_dir = tmp_path / "demo-run"
    done = subprocess.run(
        [SMSQ, *command, *(["--dir", str(demo_dir)] if command[0] == "demo" else [])],
        env=without_the_extra,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, MISSING, "")
    assert not demo_dir.exists()  # nothing started, nothing written


def test_without_the_extra_the_rest_of_the_command_line_works(without_the_extra, tmp_path):
    done = subprocess.run(
        [SMSQ, "send", "--help"], env=without_the_extra, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0 and "--account" in done.stdout, done.stderr


def test_the_image_the_trial_runs_its_simulators_from_has_the_extra():
    import yaml

    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8"))
    assert any(service.get("command", [])[:2] == ["smsq", "simulate"] for service in compose["services"].values())
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "pip wheel --wheel-dir /wheels '.[sim]'" in dockerfile
    assert "pip install --no-index --find-links /wheels 'smsq[sim]'" in dockerfile
