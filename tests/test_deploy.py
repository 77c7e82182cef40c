"""The deployment files in docs/deploy/: the Dockerfile builds and its image serves, where a Docker daemon runs."""

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def docker_daemon() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_daemon(), reason="no Docker daemon here (a docker client without one is not enough)")
def test_the_dockerfile_builds_and_its_image_answers_health(tmp_path):
    subprocess.run(["docker", "build", "-f", "docs/deploy/Dockerfile", "-t", "medveil-test", "."], cwd=ROOT, check=True)
    container = subprocess.run(["docker", "run", "-d", "-p", "127.0.0.1:18000:8000", "medveil-test"],
                               capture_output=True, text=True, check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                assert httpx.get("http://127.0.0.1:18000/health").json() == {"status": "ok"}
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the container's server did not answer"
                time.sleep(1)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_the_systemd_unit_runs_what_the_cli_offers():
    unit = (ROOT / "docs" / "deploy" / "medveil.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert " serve " in exec_start and "--data" in exec_start
