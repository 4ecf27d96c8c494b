"""The deployment files under deploy/ (decision 0034), checked as far as this machine can
without a container runtime or a cluster: every YAML file parses; the Kubernetes manifests
validate against the Kubernetes API's own schemas (kubernetes-validate, offline, strict);
the Dockerfile passes hadolint (the binary from PyPI) and is multi-stage, non-root, with a
health check on /healthz; and what the files say of Prism is true of Prism: every setting
they set is a real setting (or an OTEL_*/AWS_* variable the libraries read), every command
is a `prism` command, probe paths and ports are the app's, secrets come by reference,
selectors select the pods they mean. Images are not built and the stack is not started
here (no container runtime): deploy/README.md says so."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from prism.cli.main import main as prism_command
from prism.config import Settings
from prism.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# Variables read by the libraries Prism runs on, not by its settings.
LIBRARY_VARIABLES = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}
PRISM_SERVICES = ("migrate", "api", "worker")
SCRATCH = "/tmp"  # noqa: S108 - the containers' scratch directory, a volume of its own


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests() -> list[dict[str, Any]]:
    return [d for path in sorted(KUBERNETES.glob("*.yaml")) for d in _documents(path)]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] == kind]


def _workloads() -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] in ("Deployment", "Job")]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


def _configmap() -> dict[str, str]:
    (config,) = _of_kind("ConfigMap")
    data: dict[str, str] = config["data"]
    return data


def _compose() -> dict[str, Any]:
    (compose,) = _documents(DEPLOY / "compose.yaml")
    return compose


def _is_setting(name: str) -> bool:
    if name in LIBRARY_VARIABLES:
        return True
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return name.startswith(prefix) and name[len(prefix) :].lower() in Settings.model_fields


def _secret_settings() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {
        f"{prefix}{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {f.name for f in files} >= {"compose.yaml", "api.yaml", "worker.yaml", "migrate.yaml"}
    for path in files:
        assert _documents(path), path


def test_the_manifests_validate_against_the_kubernetes_schemas() -> None:
    version = kubernetes_validate.latest_version()
    kinds = set()
    for manifest in _manifests():
        kubernetes_validate.validate(manifest, version, strict=True)
        kinds.add(manifest["kind"])
    assert kinds >= {
        "Deployment",
        "Job",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "ServiceAccount",
    }
    # and the validator does reject what the API server would
    broken = copy.deepcopy(_workloads()[0])
    probe = _containers(broken)[0].setdefault("readinessProbe", {})
    probe["httpGett"] = probe.pop("httpGet", {"path": "/readyz", "port": 8000})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_every_command_is_a_prism_command() -> None:
    commands = set(prism_command.commands)
    ran = {_containers(w)[0]["args"][0] for w in _workloads()}
    compose = _compose()["services"]
    ran |= {compose[name]["command"][0] for name in PRISM_SERVICES}
    assert ran == {"serve", "worker", "migrate"}
    assert ran <= commands
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["prism"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile


def test_every_variable_set_is_a_setting_or_a_librarys() -> None:
    named = set(_configmap())
    for workload in _workloads():
        for container in _containers(workload):
            named |= {e["name"] for e in container.get("env", [])}
    compose = _compose()["services"]
    for name in PRISM_SERVICES:
        named |= set(compose[name]["environment"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    named |= set(re.findall(r"\b(PRISM_[A-Z0-9_]+)=", dockerfile))
    unknown = sorted(n for n in named if not _is_setting(n))
    assert not unknown, unknown
    assert {"PRISM_DATABASE_URL", "PRISM_JWT_SECRET", "PRISM_ENCRYPTION_KEY"} <= named


def test_secrets_come_by_reference() -> None:
    secrets = _secret_settings()
    assert {"PRISM_DATABASE_URL", "PRISM_JWT_SECRET", "PRISM_REDIS_URL"} <= secrets
    assert not secrets & set(_configmap()), "a secret setting in the ConfigMap"
    for workload in _workloads():
        for container in _containers(workload):
            env = {e["name"]: e for e in container.get("env", [])}
            for name in secrets & set(env):
                assert set(env[name]) == {"name", "valueFrom"}, (workload["metadata"], name)
                assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "prism"
            assert {"PRISM_DATABASE_URL", "PRISM_JWT_SECRET", "PRISM_ENCRYPTION_KEY"} <= set(env)
    # compose takes them from its .env file, never written in the file itself
    for name in PRISM_SERVICES:
        environment = _compose()["services"][name]["environment"]
        for secret in ("PRISM_JWT_SECRET", "PRISM_ENCRYPTION_KEY", "PRISM_DATABASE_URL"):
            assert "${" in environment[secret], (name, secret)


def test_probes_ports_and_selectors_match_the_app() -> None:
    settings = Settings(_env_file=None, jwt_secret=SecretStr("x" * 40))  # type: ignore[call-arg]
    app = create_app(settings, database_url="postgresql://unused/prism")
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/healthz", "/readyz"} <= paths
    config = _configmap()
    port = int(config["PRISM_PORT"])
    assert port == settings.port == 8000
    metrics_port = int(config["PRISM_METRICS_ADDRESS"].rsplit(":", 1)[1])

    (api,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "prism-api"]
    (container,) = _containers(api)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port, "metrics": metrics_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"] == labels

    (service,) = _of_kind("Service")
    assert service["spec"]["selector"] == labels
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    (hpa,) = _of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "prism-api",
    }
    budgets = {d["metadata"]["name"]: d for d in _of_kind("PodDisruptionBudget")}
    assert budgets["prism-api"]["spec"]["selector"]["matchLabels"] == labels
    (worker,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "prism-worker"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert budgets["prism-worker"]["spec"]["selector"]["matchLabels"] == worker_labels
    assert worker_labels != labels

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile
    assert f"http://127.0.0.1:{port}/healthz" in dockerfile
    compose = _compose()["services"]
    assert compose["api"]["ports"] == [f"{port}:{port}"]
    assert "/readyz" in " ".join(compose["api"]["healthcheck"]["test"])


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    data_dir = _configmap()["PRISM_DATA_DIR"]
    assert f"PRISM_DATA_DIR={data_dir}" in dockerfile
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
            int(user[0]),
            int(user[1]),
        )
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert "memory" in resources["limits"]
            # what Prism writes (PRISM_DATA_DIR, extraction scratch in /tmp) is a volume
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            assert {data_dir, SCRATCH} <= mounted
    compose = _compose()["services"]
    for name in PRISM_SERVICES:
        assert compose[name]["read_only"] is True
        assert {data_dir, SCRATCH} <= set(compose[name]["tmpfs"])


def test_the_image_is_multi_stage_non_root_and_passes_hadolint() -> None:
    dockerfile = DEPLOY / "Dockerfile"
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert stages == ["build", "runtime"]
    assert "COPY --from=build" in text
    assert "uv sync --frozen --no-dev" in text  # the lock, without the dev group
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert not user.startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # and hadolint does find faults: the same file run as root with an unpinned pip
    bad = text.replace("USER 10001:10001", "USER root").replace('"uv==${UV_VERSION}"', "uv")
    done = subprocess.run(
        [str(hadolint), "--no-color", "-"], input=bad, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "DL3002" in done.stdout  # last user should not be root


def test_compose_runs_the_whole_stack() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "migrate",
        "api",
        "worker",
        "postgres",
        "redis",
        "opensearch",
        "kafka",
        "minio",
    }
    for name in ("api", "worker"):
        after = services[name]["depends_on"]
        assert after["migrate"]["condition"] == "service_completed_successfully"
        assert after["bucket"]["condition"] == "service_completed_successfully"
    env = services["api"]["environment"]
    assert env["PRISM_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["PRISM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["PRISM_OPENSEARCH_URL"] == "http://opensearch:9200"
    assert env["PRISM_REDIS_URL"].startswith("redis://redis:")
    assert "@postgres:5432/" in env["PRISM_DATABASE_URL"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
