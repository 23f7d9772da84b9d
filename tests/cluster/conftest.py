"""Fixtures for the cluster tests: the Docker engine, the images, the proxy, the reports.

Outside CI, no engine (or no images) skips these tests with the reason. With ``CI=true`` or
``BEANROUTER_DOCKER=1`` they must run: a missing engine or image (or an image without
``beanrouter proxy``) is a failure.

Each scenario's report is printed at the end of the run, and written into docs/cluster.md
(between its report markers) when ``BEANROUTER_CLUSTER_REPORT`` names that file
(``make cluster-test`` does).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from .docker_cluster import DockerCluster, remove_leftovers
from .workload import Check, Report

IMAGE = os.environ.get("BEANROUTER_IMAGE", "beanrouter:local")
BEANSTALKD_IMAGE = os.environ.get("BEANROUTER_BEANSTALKD_IMAGE", "beanrouter-beanstalkd:local")
REPORTS: list[Report] = []
NOTES: list[str] = []
BEGIN, END = "<!-- cluster-report:begin -->", "<!-- cluster-report:end -->"


def required() -> bool:
    """Cluster tests must run (never skip for a missing engine) in CI or when asked to."""
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return ci or os.environ.get("BEANROUTER_DOCKER", "") == "1"


def unavailable(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} (CI / BEANROUTER_DOCKER=1 require the cluster tests to run)")
    pytest.skip(
        f"{reason}; `make cluster-test` builds and runs them (BEANROUTER_DOCKER=1 requires)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # the SDK raises several kinds when no engine is there
        unavailable(f"no Docker engine answers ({type(exc).__name__}: {exc})")
    remove_leftovers(client)
    try:
        yield client
    finally:
        client.close()


def _image(client: docker.DockerClient, name: str) -> str:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        unavailable(f"image {name} is missing: run compose/build-images.sh")
    return name


@pytest.fixture(scope="session")
def image(docker_client: docker.DockerClient) -> str:
    return _image(docker_client, IMAGE)


@pytest.fixture(scope="session")
def beanstalkd_image(docker_client: docker.DockerClient) -> str:
    return _image(docker_client, BEANSTALKD_IMAGE)


@pytest.fixture(scope="session")
def proxy_available(docker_client: docker.DockerClient, image: str) -> str | None:
    """None when the image has ``beanrouter proxy``, else why not."""
    try:
        docker_client.containers.run(
            image, ["beanrouter", "proxy", "--help"], remove=True, stdout=True, stderr=True
        )
    except docker.errors.ContainerError as exc:
        raw: bytes | str = exc.stderr or b""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        err = text.strip().splitlines()
        return f"`beanrouter proxy --help` fails in {image}: {err[-1] if err else exc}"
    return None


@pytest.fixture
def require_proxy(proxy_available: str | None) -> None:
    if proxy_available is not None:
        note = f"proxy scenarios not run: {proxy_available}"
        if note not in NOTES:
            NOTES.append(note)
        unavailable(note)


def make_cluster(
    client: docker.DockerClient, image: str, backend: str, *, proxy: bool
) -> Iterator[DockerCluster]:
    cluster = DockerCluster(client, image, backend)
    try:
        cluster.start_shards(3)
        if proxy:
            cluster.start_proxy()
        yield cluster
    finally:
        cluster.remove()


def record(result: Check) -> None:
    """Keep the report, then fail with every problem found."""
    REPORTS.append(result.report)
    print("\n" + Report.HEADER + "\n" + result.report.row())
    if result.problems:
        pytest.fail(
            f"{result.report.scenario} via {result.report.via}: " + "; ".join(result.problems)
        )


def _report_text(config: pytest.Config) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Run of {when} on {machine}.", "", Report.HEADER]
    lines += [r.row() for r in REPORTS]
    extras = [f"- {r.scenario} via {r.via}: {r.extra}" for r in REPORTS if r.extra]
    if extras:
        lines += ["", *extras]
    if NOTES:
        lines += ["", *(f"- {n}" for n in NOTES)]
    return "\n".join(lines)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not REPORTS and not NOTES:
        return
    text = _report_text(config)
    terminalreporter.section("cluster fault scenarios")
    terminalreporter.write_line(text)
    target = os.environ.get("BEANROUTER_CLUSTER_REPORT")
    if target and REPORTS:
        path = Path(target)
        doc = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
        block = f"{BEGIN}\n{text}\n{END}"
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
        path.write_text(new)
        terminalreporter.write_line(f"report written to {path}")
