"""docker/Dockerfile, docker-compose.yml and the Grafana dashboard parse and say what the
deployment docs promise; every dashboard query names metrics that
care_serve/observability/metrics.py defines."""

from __future__ import annotations

import json
import re
from typing import Any

from dockerfile_parse import DockerfileParser
from prometheus_client import CollectorRegistry

from care_serve.observability.metrics import ServingMetrics
from tests.helpers.deploy import DOCKER, ROOT, load_yaml, unknown_settings

DASHBOARD = DOCKER / "grafana" / "dashboards" / "care-serve.json"
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "le", "model", "version", "outcome",
    "protocol", "avg", "max", "min", "without", "count", "irate", "on", "ignoring",
}  # fmt: skip


def _dockerfile() -> list[dict[str, Any]]:
    parser = DockerfileParser(path=str(DOCKER / "Dockerfile"))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def _instructions(name: str) -> list[str]:
    return [i["value"] for i in _dockerfile() if i["instruction"] == name]


def test_dockerfile_takes_the_base_image_as_an_argument() -> None:
    structure = _dockerfile()
    assert structure[0]["instruction"] == "ARG"
    assert structure[0]["value"].startswith("BASE_IMAGE=")
    assert _instructions("FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]


def test_torch_index_only_when_torch_is_asked_for() -> None:
    runs = [r for r in _instructions("RUN") if "pip install" in r]
    assert len(runs) == 1
    (run,) = runs
    assert "--extra-index-url" in run
    torch_case = re.search(r"\*,torch,\*\)([^;]*);;", run)
    assert torch_case and "TORCH_INDEX_URL" in torch_case.group(1)
    assert run.count("TORCH_INDEX_URL") == 1


def test_runtime_stage_copies_only_the_venv_and_models() -> None:
    structure = _dockerfile()
    runtime_start = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    copies = [ins["value"] for ins in structure[runtime_start:] if ins["instruction"] == "COPY"]
    assert copies == [
        "--from=build /opt/care-serve /opt/care-serve",
        "--chown=10001:10001 model_store /models",
    ]
    runtime = structure[runtime_start:]
    runtime_runs = [ins["value"] for ins in runtime if ins["instruction"] == "RUN"]
    assert not any("pip" in run for run in runtime_runs)  # nothing installed, nothing removed


def test_user_and_group_exist_with_a_home() -> None:
    (user_run,) = [r for r in _instructions("RUN") if "useradd" in r]
    assert "groupadd --system --gid 10001 care" in user_run
    assert "--uid 10001 --gid care" in user_run and "--create-home" in user_run
    assert _instructions("USER") == ["10001:10001"]
    env = " ".join(_instructions("ENV"))
    assert "HOME=/home/care" in env
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert "/health/ready" in healthcheck


def test_compose_file_parses_and_is_consistent() -> None:
    compose = load_yaml(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"care-serve", "prometheus", "grafana"}
    serve = services["care-serve"]
    assert serve["build"]["dockerfile"] == "docker/Dockerfile"
    assert serve["read_only"] is True and any(t.startswith("/tmp") for t in serve["tmpfs"])
    assert "/health/ready" in " ".join(serve["healthcheck"]["test"])
    assert unknown_settings(list(serve["environment"])) == []
    drain = float(serve["environment"]["CARE_SERVE_GRACEFUL_SHUTDOWN_S"])
    assert int(serve["stop_grace_period"].rstrip("s")) > drain + 1
    assert services["prometheus"]["depends_on"]["care-serve"]["condition"] == "service_healthy"
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    for path in mounted:
        assert (ROOT / path).exists(), f"compose mounts {path}, which does not exist"
    for port in (p for s in services.values() for p in s.get("ports", [])):
        assert port.startswith("127.0.0.1:"), f"{port} is published on every interface"


def test_prometheus_scrapes_the_compose_service() -> None:
    config = load_yaml(DOCKER / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["care-serve:8000"]


def test_the_tls_variant_mounts_its_files_and_checks_health_over_https() -> None:
    override = load_yaml(ROOT / "docker-compose.tls.yml")["services"]
    serve = override["care-serve"]
    env = serve["environment"]
    assert unknown_settings(list(env)) == []
    (mount,) = serve["volumes"]
    source, target, mode = mount.split(":")
    assert mode == "ro" and source == "./secrets"
    for name in ("CARE_SERVE_TLS_CERT", "CARE_SERVE_TLS_KEY", "CARE_SERVE_API_KEYS_FILE"):
        assert env[name].startswith(target + "/"), name
    check = " ".join(serve["healthcheck"]["test"])
    assert "https://127.0.0.1:8000/health/ready" in check and target in check
    prometheus = {v.split(":")[1]: v.split(":")[0] for v in override["prometheus"]["volumes"]}
    config = load_yaml(ROOT / prometheus["/etc/prometheus/prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job["scheme"] == "https" and job["static_configs"][0]["targets"] == ["care-serve:8000"]
    assert prometheus[job["tls_config"]["ca_file"]] == "./secrets/ca.pem"


def _metric_names() -> set[str]:
    """The series names Prometheus sees for every metric ServingMetrics registers."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        metric.name + suffix
        for metric in ServingMetrics(CollectorRegistry()).registry.collect()
        for suffix in suffixes[metric.type]
    }


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_queries_name_only_defined_metrics() -> None:
    defined = _metric_names()
    assert "care_inference_requests_total" in defined
    queries = _dashboard_queries()
    assert len(queries) >= 5
    for expr in queries:
        words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", re.sub(r"\{\{.*?\}\}|\$\w+", "", expr)))
        metrics = {w for w in words if w.startswith("care_")}
        assert metrics, f"no care-serve metric in {expr}"
        assert metrics <= defined, f"{expr} names {metrics - defined}"
        unexpected = words - metrics - PROMQL_WORDS
        assert not unexpected, f"{expr}: unexpected words {unexpected}"


def test_dashboard_covers_rate_latency_queue_and_batches() -> None:
    joined = "\n".join(_dashboard_queries())
    assert "sum by (outcome) (rate(care_inference_requests_total" in joined
    assert "histogram_quantile(0.50, " in joined and "histogram_quantile(0.99, " in joined
    assert "care_inference_queue_depth" in joined
    assert "care_inference_batch_size_bucket" in joined


def test_grafana_provisioning_points_at_the_compose_services() -> None:
    grafana = load_yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    (datasource,) = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yml")[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    uids = {t["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]
            for t in p["targets"]}  # fmt: skip
    assert uids == {datasource["uid"]}
    (provider,) = load_yaml(DOCKER / "grafana/provisioning/dashboards/care-serve.yml")["providers"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in grafana["volumes"])
    assert mounts["./docker/grafana/dashboards"] == provider["options"]["path"]
