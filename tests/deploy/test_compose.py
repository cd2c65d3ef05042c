"""Checks of the Docker deployment files, without a Docker engine.

* ``docker compose config`` validates docker-compose.yml when the compose CLI
  plugin is installed (client-only; no engine needed).
* Always: a hand-written structural check of docker-compose.yml (parsed with
  PyYAML), the infrastructure images and their settings, and that every service
  in ``services/*/app.py`` is deployed. The check is itself shown to catch
  broken compose files written to tmp_path.
* Light text checks of Dockerfile and .dockerignore.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_IMAGE = "threadline:dev"
INFRA_SERVICES = ("postgres", "kafka")
ONE_SHOT_SERVICES = ("migrate", "seed-demo")
VALID_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# The services that existed when this file was written; used only by the tests
# that prove the checker catches mistakes (independent of the repo's state).
KNOWN_APP_SERVICES = ("referrals", "consent", "notifications")


# --- helpers


def discover_app_services(root: Path = ROOT) -> list[str]:
    """Service names from services/<name>/app.py (folders starting with _ or . skipped)."""
    return sorted(
        p.parent.name
        for p in (root / "services").glob("*/app.py")
        if not p.parent.name.startswith(("_", "."))
    )


def load_compose(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def as_env(value: Any) -> dict[str, str]:
    """Compose `environment` (mapping or list of KEY=VALUE) as a dict of strings."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {
            str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        env: dict[str, str] = {}
        for item in value:
            key, _, val = str(item).partition("=")
            env[key] = val
        return env
    raise TypeError(f"environment must be a mapping or a list, not {type(value).__name__}")


def as_argv(command: Any) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return command.split()
    return [str(c) for c in command]


def depends_on_map(value: Any) -> dict[str, str]:
    """depends_on as {service: condition} (list syntax means service_started)."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(name): "service_started" for name in value}
    if isinstance(value, Mapping):
        return {
            str(name): (spec or {}).get("condition", "service_started")
            if isinstance(spec, Mapping)
            else f"<not a mapping: {spec!r}>"
            for name, spec in value.items()
        }
    return {"<depends_on>": f"<not a list or mapping: {value!r}>"}


def healthcheck_text(service: Mapping[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(as_argv(test))


def port_bindings(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) for each entry of `ports`, short or long syntax."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            out.append(
                (
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry.get("target", "")),
                )
            )
            continue
        text = str(entry).split("/")[0]  # drop /tcp
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0].strip("[]"), parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


# --- checkers
# Each returns a list of human-readable problems; empty means OK.


def structure_problems(doc: Any) -> list[str]:
    if not isinstance(doc, Mapping):
        return [f"top level must be a mapping, got {type(doc).__name__}"]
    services = doc.get("services")
    if not isinstance(services, Mapping) or not services:
        return ["top-level `services` must be a non-empty mapping"]
    problems: list[str] = []
    declared_volumes = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        if not isinstance(svc, Mapping):
            problems.append(f"service {name!r} must be a mapping")
            continue
        if not svc.get("image") and not svc.get("build"):
            problems.append(f"service {name!r} has neither image nor build")
        for dep, condition in depends_on_map(svc.get("depends_on")).items():
            if dep not in services:
                problems.append(f"service {name!r} depends on unknown service {dep!r}")
            if condition not in VALID_CONDITIONS:
                problems.append(
                    f"service {name!r}: depends_on {dep!r} has invalid condition {condition!r}"
                )
            elif (
                condition == "service_healthy"
                and isinstance(services.get(dep), Mapping)
                and not services[dep].get("healthcheck")
            ):
                problems.append(
                    f"service {name!r} waits for {dep!r} to be healthy but it has no healthcheck"
                )
        hc = svc.get("healthcheck")
        if hc is not None:
            if not isinstance(hc, Mapping) or hc.get("disable") or not as_argv(hc.get("test")):
                problems.append(f"service {name!r} has an empty or disabled healthcheck")
            elif as_argv(hc.get("test"))[0] not in {"CMD", "CMD-SHELL"}:
                problems.append(
                    f"service {name!r}: healthcheck test must start with CMD or CMD-SHELL"
                )
        for host_ip, published, target in port_bindings(svc):
            if host_ip != "127.0.0.1":
                problems.append(
                    f"service {name!r}: port {published or '?'}->{target} must be bound to "
                    f"127.0.0.1, not {host_ip or 'all interfaces'}"
                )
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, Mapping) else str(vol).split(":")[0]
            if (
                source
                and not source.startswith((".", "/", "~", "$"))
                and source not in declared_volumes
            ):
                problems.append(
                    f"service {name!r} uses volume {source!r} not declared under top-level volumes"
                )
    for name in (*INFRA_SERVICES, *ONE_SHOT_SERVICES):
        if name not in services:
            problems.append(f"service {name!r} is missing")
    for name in INFRA_SERVICES:
        if isinstance(services.get(name), Mapping) and not services[name].get("healthcheck"):
            problems.append(f"service {name!r} has no healthcheck")
    return problems


def kafka_problems(doc: Mapping[str, Any]) -> list[str]:
    kafka = doc["services"].get("kafka")
    if not isinstance(kafka, Mapping):
        return ["no kafka service"]
    problems: list[str] = []
    image = str(kafka.get("image", ""))
    if not re.fullmatch(r"(docker\.io/)?apache/kafka:\d+\.\d+\.\d+", image):
        problems.append(f"kafka image must be the official apache/kafka:<x.y.z>, got {image!r}")
    env = as_env(kafka.get("environment"))
    required = [
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
        "KAFKA_HEAP_OPTS",
        "CLUSTER_ID",
    ]
    missing = [k for k in required if not env.get(k)]
    if missing:
        problems.append(f"kafka environment lacks {missing}")
        return problems
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    if roles != {"broker", "controller"}:
        problems.append(
            "KAFKA_PROCESS_ROLES must be broker,controller (combined KRaft), "
            f"got {env['KAFKA_PROCESS_ROLES']!r}"
        )
    node_id = env["KAFKA_NODE_ID"]
    if not env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@"):
        problems.append("KAFKA_CONTROLLER_QUORUM_VOTERS must name this node's KAFKA_NODE_ID")
    listeners = {x.split("://")[0] for x in env["KAFKA_LISTENERS"].split(",")}
    advertised = {
        x.split("://")[0]: x.split("://")[1] for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    protocol_map = dict(
        p.split(":", 1) for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    if controller not in listeners:
        problems.append(f"controller listener {controller!r} is not in KAFKA_LISTENERS")
    if controller in advertised:
        problems.append("the controller listener must not be advertised to clients")
    for name in listeners | set(advertised):
        if name not in protocol_map:
            problems.append(f"listener {name!r} missing from KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
    if env["KAFKA_INTER_BROKER_LISTENER_NAME"] not in listeners:
        problems.append("KAFKA_INTER_BROKER_LISTENER_NAME is not one of KAFKA_LISTENERS")
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    ):
        if env[key] != "1":
            problems.append(f"{key} must be 1 on a single node, got {env[key]!r}")
    if env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() != "false":
        problems.append("KAFKA_AUTO_CREATE_TOPICS_ENABLE must be false (migrate creates topics)")
    if "-Xmx" not in env["KAFKA_HEAP_OPTS"]:
        problems.append("KAFKA_HEAP_OPTS must cap the heap with -Xmx")
    # The apps' bootstrap address must be one the broker advertises.
    bootstraps = {
        as_env(s.get("environment")).get("THREADLINE_KAFKA_BOOTSTRAP_SERVERS")
        for s in doc["services"].values()
        if isinstance(s, Mapping) and s.get("image") == APP_IMAGE
    } - {None}
    for bootstrap in bootstraps:
        if bootstrap not in advertised.values():
            problems.append(
                f"THREADLINE_KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} is not an advertised listener"
            )
    hc = healthcheck_text(kafka)
    if not re.search(r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh", hc):
        problems.append(
            "kafka healthcheck must use /opt/kafka/bin/kafka-broker-api-versions.sh "
            "or kafka-topics.sh"
        )
    return problems


def postgres_problems(doc: Mapping[str, Any]) -> list[str]:
    pg = doc["services"].get("postgres")
    if not isinstance(pg, Mapping):
        return ["no postgres service"]
    problems: list[str] = []
    image = str(pg.get("image", ""))
    if not re.fullmatch(r"(docker\.io/(library/)?)?postgres:\d+(\.\d+)?", image):
        problems.append(f"postgres image must be the official postgres:<major>, got {image!r}")
    if "pg_isready" not in healthcheck_text(pg):
        problems.append("postgres healthcheck must use pg_isready")
    declared = set((doc.get("volumes") or {}).keys())
    mounts = [
        v.get("source") if isinstance(v, Mapping) else str(v).split(":")[0]
        for v in pg.get("volumes") or []
    ]
    if not any(m in declared for m in mounts):
        problems.append("postgres must keep its data in a named volume")
    env = as_env(pg.get("environment"))
    for s_name, svc in doc["services"].items():
        if not isinstance(svc, Mapping) or svc.get("image") != APP_IMAGE:
            continue
        url = as_env(svc.get("environment")).get("THREADLINE_DATABASE_URL")
        if not url:
            problems.append(f"service {s_name!r} lacks THREADLINE_DATABASE_URL")
            continue
        parts = urlsplit(url)
        if (parts.hostname, parts.username, parts.password, parts.path.lstrip("/")) != (
            "postgres",
            env.get("POSTGRES_USER"),
            env.get("POSTGRES_PASSWORD"),
            env.get("POSTGRES_DB"),
        ):
            problems.append(
                f"service {s_name!r}: THREADLINE_DATABASE_URL does not match the postgres service"
            )
    return problems


def app_problems(doc: Mapping[str, Any], app_services: Iterable[str]) -> list[str]:
    services = doc["services"]
    problems: list[str] = []
    app_services = list(app_services)

    builders = [n for n, s in services.items() if isinstance(s, Mapping) and s.get("build")]
    if len(builders) != 1:
        problems.append(f"exactly one service should build the app image, found {builders}")
    elif services[builders[0]].get("image") != APP_IMAGE:
        problems.append(f"the building service {builders[0]!r} must tag the image {APP_IMAGE!r}")

    migrate = services.get("migrate")
    if isinstance(migrate, Mapping):
        if as_argv(migrate.get("command")) != ["migrate"]:
            problems.append("migrate must run `threadline migrate`")
        deps = depends_on_map(migrate.get("depends_on"))
        for infra in INFRA_SERVICES:
            if deps.get(infra) != "service_healthy":
                problems.append(f"migrate must wait for {infra} to be healthy")
        if migrate.get("restart") not in (None, "no"):
            problems.append("migrate is one-shot: restart must be 'no'")

    for name in app_services:
        svc = services.get(name)
        if not isinstance(svc, Mapping):
            problems.append(
                f"app service {name!r} (services/{name}/app.py) is not in docker-compose.yml"
            )
            continue
        if svc.get("image") != APP_IMAGE:
            problems.append(f"{name!r} must run the shared image {APP_IMAGE!r}")
        if as_argv(svc.get("command")) != ["serve", name]:
            problems.append(f"{name!r} must run `serve {name}`, runs {as_argv(svc.get('command'))}")
        if svc.get("restart") != "unless-stopped":
            problems.append(f"{name!r} must have restart: unless-stopped")
        if depends_on_map(svc.get("depends_on")).get("migrate") != "service_completed_successfully":
            problems.append(f"{name!r} must depend on migrate completing successfully")
        env = as_env(svc.get("environment"))
        port = env.get(f"THREADLINE_{name.upper()}_PORT")
        if not port:
            problems.append(f"{name!r}: THREADLINE_{name.upper()}_PORT is not set")
            continue
        hc = healthcheck_text(svc)
        if f":{port}/readyz" not in hc:
            problems.append(f"{name!r}: healthcheck must GET /readyz on port {port}, has {hc!r}")
        if "urllib" not in hc:
            problems.append(
                f"{name!r}: healthcheck should use python urllib (slim images lack curl)"
            )
        if (("127.0.0.1", port, port)) not in port_bindings(svc):
            problems.append(f"{name!r} must publish 127.0.0.1:{port}:{port}")
        if env.get("THREADLINE_HOST") != "0.0.0.0":
            problems.append(f"{name!r}: THREADLINE_HOST must be 0.0.0.0 in a container")

    seed = services.get("seed-demo")
    if isinstance(seed, Mapping):
        if as_argv(seed.get("command")) != ["seed-demo"]:
            problems.append("seed-demo must run `threadline seed-demo`")
        if seed.get("restart") not in (None, "no"):
            problems.append("seed-demo is one-shot: restart must be 'no'")
        deps = depends_on_map(seed.get("depends_on"))
        env = as_env(seed.get("environment"))
        for name in app_services:
            if deps.get(name) != "service_healthy":
                problems.append(f"seed-demo must wait for {name!r} to be healthy")
            port = env.get(f"THREADLINE_{name.upper()}_PORT")
            if env.get(f"THREADLINE_{name.upper()}_URL") != f"http://{name}:{port}":
                problems.append(
                    f"seed-demo: THREADLINE_{name.upper()}_URL must be http://{name}:{port}"
                )

    for s_name, svc in services.items():
        if isinstance(svc, Mapping) and svc.get("image") == APP_IMAGE:
            env = as_env(svc.get("environment"))
            if env.get("THREADLINE_ENVIRONMENT") != "development":
                problems.append(
                    f"{s_name!r}: THREADLINE_ENVIRONMENT must be development in this file"
                )
    return problems


def compose_problems(doc: Any, app_services: Iterable[str]) -> list[str]:
    """Every check; structural problems first (the others assume a sane structure)."""
    problems = structure_problems(doc)
    if (
        not isinstance(doc, Mapping)
        or not isinstance(doc.get("services"), Mapping)
        or not all(isinstance(s, Mapping) for s in doc["services"].values())
    ):
        return problems
    return problems + kafka_problems(doc) + postgres_problems(doc) + app_problems(doc, app_services)


def fmt(problems: list[str]) -> str:
    return "\n  - " + "\n  - ".join(problems)


# --- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def app_services() -> list[str]:
    names = discover_app_services()
    assert names, (
        f"no services/*/app.py found under {ROOT}: the compose test derives the list of "
        "services to deploy from them, so it cannot check anything without them"
    )
    return names


# --- tests on the real files


def _docker_compose_available() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "docker CLI not on PATH"
    try:
        r = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`docker compose version` failed: {exc}"
    if r.returncode != 0:
        return False, f"docker compose plugin unavailable: {r.stderr.strip() or r.stdout.strip()}"
    return True, r.stdout.strip()


def test_docker_compose_config_accepts_the_file() -> None:
    ok, why = _docker_compose_available()
    if not ok:
        pytest.skip(f"client-side `docker compose config` not run: {why}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    r = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert r.returncode == 0, f"docker compose config failed ({r.returncode}):\n{r.stderr}"
    normalized = json.loads(r.stdout)
    assert set(normalized["services"]) == set(load_compose(COMPOSE_FILE)["services"])


def test_compose_structure(compose: dict[str, Any]) -> None:
    problems = structure_problems(compose)
    assert not problems, fmt(problems)


def test_kafka_is_official_image_in_kraft_mode(compose: dict[str, Any]) -> None:
    problems = kafka_problems(compose)
    assert not problems, fmt(problems)


def test_postgres_is_official_image(compose: dict[str, Any]) -> None:
    problems = postgres_problems(compose)
    assert not problems, fmt(problems)


def test_every_service_in_services_dir_is_deployed(
    compose: dict[str, Any], app_services: list[str]
) -> None:
    problems = app_problems(compose, app_services)
    assert not problems, fmt(problems)


def test_no_stray_threadline_services(compose: dict[str, Any], app_services: list[str]) -> None:
    """Every service on the app image is an app service or a known one-shot."""
    expected = set(app_services) | set(ONE_SHOT_SERVICES)
    on_app_image = {n for n, s in compose["services"].items() if s.get("image") == APP_IMAGE}
    assert on_app_image == expected, (
        f"services on {APP_IMAGE}: {sorted(on_app_image)}; expected {sorted(expected)} "
        "(a service removed from services/ should leave docker-compose.yml too)"
    )


def test_compose_marks_credentials_as_development_only() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "DEVELOPMENT ONLY" in text
    assert re.search(r"[Pp]roduction must NOT use these credentials", text)


def test_calendar_file_is_shipped_in_the_image(compose: dict[str, Any]) -> None:
    """A THREADLINE_CALENDAR_FILE given to the containers must be a repo file the image copies."""
    copies_config = re.search(r"^COPY config /app/config$", DOCKERFILE.read_text("utf-8"), re.M)
    for name, svc in compose["services"].items():
        path = as_env(svc.get("environment")).get("THREADLINE_CALENDAR_FILE")
        if path is None:
            continue
        assert path.startswith("/app/config/"), f"{name}: {path} is not under /app/config/"
        assert copies_config, "Dockerfile must COPY config /app/config"
        assert (ROOT / path.removeprefix("/app/")).is_file(), (
            f"{name}: {path} has no file in config/"
        )


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:3\.11-slim$|^FROM python:3\.11-slim\b", text, re.M
    ), "base image must be python:3.11-slim"
    assert "pip install --no-cache-dir ." in text
    assert not re.search(r"pip install[^\n]*\[(dev|test)", text), "no dev extras in the image"
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, (
        "the image must end as a non-root user"
    )
    entry = [i for i in instructions if i.startswith("ENTRYPOINT ")]
    assert entry and json.loads(entry[-1][len("ENTRYPOINT ") :]) == ["threadline"]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", "var", "tests"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    assert "bench" in patterns or "bench/results" in patterns, (
        ".dockerignore must exclude bench/results"
    )
    for kept in ("shared", "services", "deploy", "config", "pyproject.toml"):
        assert kept not in patterns, (
            f".dockerignore must not exclude {kept} (pip install . needs it)"
        )


# --- the checker catches mistakes

# (replace this, with that, expect a problem containing ...), applied to the real file's text.
MUTATIONS = [
    pytest.param(
        '"127.0.0.1:8101:8101"',
        '"8101:8101"',
        "must be bound to 127.0.0.1",
        id="port-on-all-interfaces",
    ),
    pytest.param(
        "condition: service_completed_successfully",
        "condition: service_finished",
        "invalid condition",
        id="bad-depends-on-condition",
    ),
    pytest.param(
        "image: apache/kafka:4.1.1",
        "image: bitnami/kafka:4.1",
        "official apache/kafka",
        id="kafka-image",
    ),
    pytest.param(
        "KAFKA_PROCESS_ROLES: broker,controller",
        "KAFKA_PROCESS_ROLES: broker",
        "combined KRaft",
        id="kafka-not-kraft-combined",
    ),
    pytest.param(
        'KAFKA_AUTO_CREATE_TOPICS_ENABLE: "false"',
        'KAFKA_AUTO_CREATE_TOPICS_ENABLE: "true"',
        "AUTO_CREATE_TOPICS_ENABLE must be false",
        id="kafka-auto-create",
    ),
    pytest.param(
        "image: postgres:17",
        "image: bitnami/postgresql:17",
        "official postgres",
        id="postgres-image",
    ),
    pytest.param(
        'command: ["serve", "consent"]',
        'command: ["serve", "referrals"]',
        "must run `serve consent`",
        id="wrong-serve-command",
    ),
    pytest.param(
        "/readyz", "/healthz", "healthcheck must GET /readyz", id="liveness-instead-of-readiness"
    ),
    pytest.param(
        "  notifications:\n",
        "  notification-service:\n",
        "'notifications' (services/notifications/app.py) is not in docker-compose.yml",
        id="app-service-missing",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), MUTATIONS)
def test_checker_catches_mutated_compose(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert old in text, f"mutation target {old!r} not found: update this test with the compose file"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    problems = compose_problems(load_compose(broken), KNOWN_APP_SERVICES)
    assert any(expected in p for p in problems), (
        f"expected a problem with {expected!r}, got:{fmt(problems) if problems else ' none'}"
    )


def test_checker_catches_broken_structure(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        """
services:
  postgres:
    image: postgres:17
    ports: ["5432:5432"]
  kafka:
    environment: {KAFKA_NODE_ID: 1}
    depends_on:
      zookeeper: {condition: service_healthy}
  referrals:
    image: threadline:dev
    depends_on:
      postgres: {condition: service_healthy}
    healthcheck: {disable: true}
""",
        encoding="utf-8",
    )
    problems = compose_problems(load_compose(broken), KNOWN_APP_SERVICES)
    for expected in (
        "'kafka' has neither image nor build",
        "depends on unknown service 'zookeeper'",
        "'referrals' waits for 'postgres' to be healthy but it has no healthcheck",
        "'referrals' has an empty or disabled healthcheck",
        "port 5432->5432 must be bound to 127.0.0.1",
        "service 'migrate' is missing",
        "service 'postgres' has no healthcheck",
    ):
        assert any(expected in p for p in problems), f"missing {expected!r} in:{fmt(problems)}"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("services:\n  - postgres\n  - kafka\n", id="services-as-list"),
        pytest.param("version: '3.9'\n", id="no-services"),
        pytest.param("- just\n- a list\n", id="top-level-list"),
    ],
)
def test_checker_rejects_non_compose_documents(tmp_path: Path, text: str) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text, encoding="utf-8")
    assert compose_problems(load_compose(broken), KNOWN_APP_SERVICES)


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  kafka:\n    image: [unclosed\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError):
        load_compose(broken)


def test_discovery_of_app_services(tmp_path: Path) -> None:
    for name in ("referrals", "consent", "_template"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "app.py").write_text("", encoding="utf-8")
    (tmp_path / "services" / "shared_lib").mkdir()
    assert discover_app_services(tmp_path) == ["consent", "referrals"]
