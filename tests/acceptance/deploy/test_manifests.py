"""deploy/kubernetes/: core kinds validate strictly (kubernetes-validate), custom resources
validate against the schemas in deploy/kubernetes/schemas/, and the Deployment keeps the
promises docs/deployment.md makes (probes, threads = CPU, drain < grace, non-root, read-only)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from referencing import Registry, Resource

from tests.helpers.deploy import K8S_VERSION, SCHEMAS, load_yaml, manifests, unknown_settings

RESOURCES = manifests()
CUSTOM = {
    "ServiceMonitor": "servicemonitor.yaml",
    "ServingRuntime": "servingruntime.yaml",
    "InferenceService": "inferenceservice.yaml",
}
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri"}


def test_every_expected_resource_is_there() -> None:
    kinds = {key.split("/")[0] for key in RESOURCES}
    assert kinds >= {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
        "PersistentVolumeClaim", "ServiceMonitor", "ServingRuntime", "InferenceService",
    }  # fmt: skip


@pytest.mark.parametrize("key", sorted(k for k, v in RESOURCES.items() if v["kind"] not in CUSTOM))
def test_core_resource_validates_strictly(key: str) -> None:
    kubernetes_validate.validate(RESOURCES[key], K8S_VERSION, strict=True)


def _validator(schema_file: str) -> jsonschema.protocols.Validator:
    registry: Registry = Registry()
    for path in SCHEMAS.glob("*.yaml"):
        registry = registry.with_resource(path.name, Resource.from_contents(load_yaml(path)))
    schema = load_yaml(SCHEMAS / schema_file)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def _as_pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
            "spec": {"containers": containers}}  # fmt: skip


@pytest.mark.parametrize("key", sorted(k for k, v in RESOURCES.items() if v["kind"] in CUSTOM))
def test_custom_resource_validates_against_its_schema(key: str) -> None:
    resource = RESOURCES[key]
    _validator(CUSTOM[resource["kind"]]).validate(resource)
    if resource["kind"] == "ServingRuntime":
        containers = resource["spec"]["containers"]
    elif resource["kind"] == "InferenceService":
        model = resource["spec"]["predictor"]["model"]
        container = {k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS}
        containers = [{"name": "kserve-container", "image": "x", **container}]
    else:
        return
    kubernetes_validate.validate(_as_pod(containers), K8S_VERSION, strict=True)


def test_schemas_reject_a_misspelt_field() -> None:
    monitor = copy.deepcopy(RESOURCES["ServiceMonitor/care-serve"])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        _validator("servicemonitor.yaml").validate(monitor)
    isvc = copy.deepcopy(RESOURCES["InferenceService/care-shapes"])
    isvc["spec"]["predictor"]["model"]["protocolVersion"] = "v3"
    with pytest.raises(jsonschema.ValidationError):
        _validator("inferenceservice.yaml").validate(isvc)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(RESOURCES["Deployment/care-serve"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _container() -> dict[str, Any]:
    return RESOURCES["Deployment/care-serve"]["spec"]["template"]["spec"]["containers"][0]


def _settings() -> dict[str, str]:
    return RESOURCES["ConfigMap/care-serve-settings"]["data"]


def test_probes_use_the_health_endpoints() -> None:
    container = _container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_tls_and_api_keys_come_from_secrets_and_probes_speak_https() -> None:
    pod = RESOURCES["Deployment/care-serve"]["spec"]["template"]["spec"]
    container = _container()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert unknown_settings(list(env)) == []
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "care-serve-tls", "api-keys": "care-serve-api-keys"}
    # kubernetes.io/tls Secrets hold tls.crt and tls.key
    assert env["CARE_SERVE_TLS_CERT"] == f"{mounts['tls']}/tls.crt"
    assert env["CARE_SERVE_TLS_KEY"] == f"{mounts['tls']}/tls.key"
    assert env["CARE_SERVE_API_KEYS_FILE"].startswith(mounts["api-keys"] + "/")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    monitor = RESOURCES["ServiceMonitor/care-serve"]["spec"]["endpoints"][0]
    assert monitor["scheme"] == "https"
    assert monitor["tlsConfig"]["ca"]["secret"]["name"] == "care-serve-tls"
    runtime = RESOURCES["ServingRuntime/care-serve"]["spec"]
    keys_env = {e["name"]: e["value"] for e in runtime["containers"][0]["env"]}
    runtime_mounts = {m["name"]: m["mountPath"] for m in runtime["containers"][0]["volumeMounts"]}
    assert keys_env["CARE_SERVE_API_KEYS_FILE"].startswith(runtime_mounts["api-keys"] + "/")
    assert runtime["volumes"][0]["secret"]["secretName"] == "care-serve-api-keys"


def test_cpu_request_matches_the_thread_settings() -> None:
    resources = _container()["resources"]
    cpu = int(resources["requests"]["cpu"])
    assert resources["limits"]["cpu"] == resources["requests"]["cpu"]  # Guaranteed QoS
    assert int(_settings()["CARE_SERVE_INTRA_OP_THREADS"]) == cpu
    assert int(_settings()["CARE_SERVE_PREPROCESS_THREADS"]) == cpu


def test_grace_period_outlasts_prestop_and_drain() -> None:
    pod = RESOURCES["Deployment/care-serve"]["spec"]["template"]["spec"]
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(_settings()["CARE_SERVE_GRACEFUL_SHUTDOWN_S"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain + 1


def test_non_root_read_only_with_writable_tmp() -> None:
    pod = RESOURCES["Deployment/care-serve"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    security = _container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    model_store = volumes[mounts[_settings()["CARE_SERVE_MODEL_STORE"]]]
    assert model_store["persistentVolumeClaim"]["claimName"] == "care-serve-models"


def test_every_setting_named_is_a_real_setting() -> None:
    names = list(_settings())
    runtime = RESOURCES["ServingRuntime/care-serve"]["spec"]["containers"][0]
    names += [env["name"] for env in runtime["env"]]
    assert unknown_settings(names) == []
    assert unknown_settings(["CARE_SERVE_NO_SUCH_THING"]) == ["CARE_SERVE_NO_SUCH_THING"]


def test_service_hpa_pdb_and_monitor_select_the_deployment() -> None:
    labels = RESOURCES["Deployment/care-serve"]["spec"]["template"]["metadata"]["labels"]
    service = RESOURCES["Service/care-serve"]
    for selector in (
        service["spec"]["selector"],
        RESOURCES["PodDisruptionBudget/care-serve"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    monitor = RESOURCES["ServiceMonitor/care-serve"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= port_names
    target = RESOURCES["HorizontalPodAutoscaler/care-serve"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "care-serve")


def test_kserve_serves_v2_from_the_runtime() -> None:
    runtime = RESOURCES["ServingRuntime/care-serve"]["spec"]
    assert {"v2", "grpc-v2"} <= set(runtime["protocolVersions"])
    ports = {p["containerPort"] for p in runtime["containers"][0]["ports"]}
    assert ports == {8000}
    assert runtime["containers"][0]["readinessProbe"]["httpGet"]["path"].startswith("/v2/")
    formats = {f["name"] for f in runtime["supportedModelFormats"]}
    for key in ("InferenceService/care-shapes", "InferenceService/care-shapes-grpc"):
        model = RESOURCES[key]["spec"]["predictor"]["model"]
        assert model["runtime"] == "care-serve"
        assert model["modelFormat"]["name"] in formats
    grpc_model = RESOURCES["InferenceService/care-shapes-grpc"]["spec"]["predictor"]["model"]
    assert grpc_model["protocolVersion"] == "grpc-v2"
    assert grpc_model["ports"] == [{"name": "h2c", "containerPort": 50051, "protocol": "TCP"}]
    assert (
        RESOURCES["InferenceService/care-shapes"]["spec"]["predictor"]["model"]["protocolVersion"]
        == "v2"
    )
