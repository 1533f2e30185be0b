"""k8s/, checked offline.

Every Kubernetes object is validated with kubernetes-validate (strict: an
unknown field is an error), which ships the API's schemas. The
RabbitmqCluster, a custom resource of the RabbitMQ Cluster Operator, has no
schema there: it is checked against a subset of the operator's CRD written
here, and its Kubernetes-typed parts (resources, affinity) against the core
schemas. Then: every Deployment has its probes, resources, autoscaler and
disruption budget; the probes ask for routes the gateway serves and
services that exist; every setting is one config.yml reads.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from deploy_support import (
    GATEWAY_PORT, HEALTH_ROUTES, K8S, RABBITMQ, ROOT, class_exists, config_settings, gateway_routes,
    load_yaml, load_yaml_all, service_classes, service_of_class, string_constant, yaml_documents,
)

# The oldest Kubernetes these manifests target (autoscaling/v2 and policy/v1
# are GA since 1.23 and 1.21), and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
CUSTOM_GROUPS = ("rabbitmq.com/",)
PLACEHOLDER = "REPLACE_ME"

_resources = {
    "type": "object", "additionalProperties": False,
    "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}, "claims": {"type": "array"}},
}
# The fields of the RabbitMQ Cluster Operator's RabbitmqCluster (v1beta1)
# spec, with the parts these manifests use spelled out.
RABBITMQ_CLUSTER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "rabbitmq.com/v1beta1"},
        "kind": {"const": "RabbitmqCluster"},
        "metadata": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 52},
                           "namespace": {"type": "string"}, "labels": {"type": "object"},
                           "annotations": {"type": "object"}},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "image": {"type": "string"},
                "imagePullSecrets": {"type": "array"},
                "service": {"type": "object"},
                "persistence": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"storageClassName": {"type": "string"},
                                   "storage": {"type": ["string", "integer"]}},
                },
                "resources": _resources,
                "affinity": {"type": "object"},
                "tolerations": {"type": "array"},
                "rabbitmq": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "additionalPlugins": {"type": "array", "items": {"type": "string"}},
                        "additionalConfig": {"type": "string", "maxLength": 100000},
                        "advancedConfig": {"type": "string", "maxLength": 100000},
                        "envConfig": {"type": "string", "maxLength": 100000},
                        "erlangInetConfig": {"type": "string", "maxLength": 2000},
                    },
                },
                "tls": {"type": "object"},
                "override": {"type": "object"},
                "skipPostDeployActions": {"type": "boolean"},
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                "secretBackend": {"type": "object"},
                "delayStartSeconds": {"type": "integer", "minimum": 0},
                "autoEnableAllFeatureFlags": {"type": "boolean"},
            },
        },
    },
}


def manifest_files():
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def kustomization():
    return load_yaml((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def objects():
    return [doc for path in manifest_files() for doc in yaml_documents(path)]


def of_kind(objects, kind):
    return [obj for obj in objects if obj["kind"] == kind]


@pytest.fixture(scope="module")
def deployments(objects):
    return {obj["metadata"]["name"]: obj for obj in of_kind(objects, "Deployment")}


def containers(deployment):
    return deployment["spec"]["template"]["spec"]["containers"]


def matches(selector, labels):
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


# -- structure -------------------------------------------------------------

def test_kustomization_lists_every_manifest(kustomization):
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == "bookrental"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(path.name for path in manifest_files())
    images = {image["name"] for image in kustomization.get("images", [])}
    for path in manifest_files():
        for obj in yaml_documents(path):
            if obj["kind"] == "Deployment":
                for container in containers(obj):
                    assert container["image"] in images, f"{path.name}: image {container['image']} not set"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_follows_the_kubernetes_api(objects, version):
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
        checked += 1
    assert checked >= 17


def test_the_validator_catches_mistakes(deployments):
    broken = json.loads(json.dumps(deployments["product"]))
    containers(broken)[0]["livenessProbe"]["exec"]["cmd"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    broken = json.loads(json.dumps(deployments["product"]))
    containers(broken)[0]["resources"]["limits"]["memory"] = ["512Mi"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_every_object_lives_in_the_namespace(objects, kustomization):
    for obj in objects:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == kustomization["namespace"]
        else:
            assert obj["metadata"].get("namespace") == kustomization["namespace"], obj["metadata"]["name"]


# -- the services ------------------------------------------------------------

def test_every_service_of_the_repository_is_deployed(deployments):
    assert set(service_classes()) <= set(deployments)
    for name, deployment in deployments.items():
        container = containers(deployment)[0]
        args = container["args"]
        assert args[:4] == ["nameko", "run", "--config", "config.yml"], name
        assert class_exists(args[4]), f"{name}: {args[4]} is not a class in the repository"
        assert service_of_class(args[4]) == name
        assert "command" not in container, "keep the image's entrypoint (deploy/entrypoint.py)"


def test_selectors_select_their_own_pods(deployments):
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(selector, labels), name
        assert selector["matchLabels"]["app.kubernetes.io/name"] == name
        for other_name, other in deployments.items():
            if other_name != name:
                assert not matches(selector, other["spec"]["template"]["metadata"]["labels"])


def test_every_container_has_probes_and_resources(deployments):
    for name, deployment in deployments.items():
        for container in containers(deployment):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in container, f"{name}: no {probe}"
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{name}: resources.{kind}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0


def test_every_deployment_has_an_autoscaler_and_a_disruption_budget(objects, deployments):
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler")
    budgets = of_kind(objects, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns the replica count"
        targeting = [hpa for hpa in autoscalers if hpa["apiVersion"] == "autoscaling/v2"
                     and hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}]
        assert len(targeting) == 1, f"{name}: {len(targeting)} autoscalers"
        hpa = targeting[0]["spec"]
        assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        assert any(metric["type"] == "Resource" and metric["resource"]["name"] == "cpu" for metric in hpa["metrics"])
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [pdb for pdb in budgets if pdb["apiVersion"] == "policy/v1" and matches(pdb["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
        budget = covering[0]["spec"]
        # A budget that allows no eviction at the minimum replica count blocks node drains.
        assert budget["minAvailable"] < hpa["minReplicas"]
        for other_name, other in deployments.items():
            if other_name != name:
                assert not matches(covering[0]["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"])


def _port(container, port):
    if isinstance(port, int):
        return port
    named = {item["name"]: item["containerPort"] for item in container.get("ports", [])}
    assert port in named, f"no container port named {port}"
    return named[port]


def test_http_probes_ask_for_the_gateway_health_routes(deployments, objects):
    served = gateway_routes()
    for name, deployment in deployments.items():
        for container in containers(deployment):
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container[kind]
                if "httpGet" not in probe:
                    continue
                assert name == "gateway", f"{name} serves no HTTP"
                assert probe["httpGet"]["path"] in HEALTH_ROUTES
                if served:
                    assert probe["httpGet"]["path"] in served, f"the gateway does not serve {probe['httpGet']['path']}"
                assert _port(container, probe["httpGet"]["port"]) == GATEWAY_PORT
    gateway = containers(deployments["gateway"])[0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/live"
    config = of_kind(objects, "ConfigMap")[0]["data"]
    assert config["GATEWAY_ADDRESS"].rsplit(":", 1)[1] == str(GATEWAY_PORT)


def test_exec_probes_probe_the_service_the_pod_runs(deployments):
    assert (ROOT / "common" / "probe.py").is_file()
    for name, deployment in deployments.items():
        if name == "gateway":
            continue
        container = containers(deployment)[0]
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = container[kind]["exec"]["command"]
            assert command[:4] == ["python", "-m", "common.probe", name], f"{name} {kind}: {command}"
            assert name in service_classes()
            timeout = float(command[command.index("--timeout") + 1])
            assert container[kind]["timeoutSeconds"] >= timeout + 2, "the probe needs time to give up by itself"


def test_the_gateway_service_reaches_the_gateway_pods(objects, deployments):
    services = of_kind(objects, "Service")
    assert [service["metadata"]["name"] for service in services] == ["gateway"]
    service = services[0]["spec"]
    pod_labels = deployments["gateway"]["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(key) == value for key, value in service["selector"].items())
    container = containers(deployments["gateway"])[0]
    for port in service["ports"]:
        assert _port(container, port["targetPort"]) == GATEWAY_PORT


# -- settings and secrets -------------------------------------------------------

def test_containers_set_only_settings_config_yml_reads(objects, deployments):
    known = config_settings()
    config_maps = {obj["metadata"]["name"]: obj for obj in of_kind(objects, "ConfigMap")}
    secrets = {obj["metadata"]["name"]: obj for obj in of_kind(objects, "Secret")}
    for config_map in config_maps.values():
        assert set(config_map["data"]) <= known, sorted(set(config_map["data"]) - known)
    for name, deployment in deployments.items():
        container = containers(deployment)[0]
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
        env = container["env"]
        names = [item["name"] for item in env]
        for position, item in enumerate(env):
            referenced = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", item.get("value", "")))
            assert referenced <= set(names[:position]), f"{name}: {item['name']} refers to a later variable"
        used_in_values = {ref for item in env for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", item.get("value", ""))}
        for item in env:
            assert item["name"] in known or item["name"] in used_in_values, f"{name}: config.yml does not read {item['name']}"
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] in secrets:
                assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: no key {ref['key']}"
            elif ref:
                assert ref["name"] == "bookrental-rabbitmq-default-user" and ref["key"] in ("username", "password")
        db_uris = [key for key in names if key.endswith("_DB_URI")]
        assert db_uris == [f"{name.upper()}_DB_URI"], f"{name} must reach its own database only"


def test_the_broker_uri_points_at_the_cluster_and_its_vhost(objects, deployments):
    cluster = of_kind(objects, "RabbitmqCluster")[0]
    config = cluster["spec"]["rabbitmq"]["additionalConfig"]
    vhost = re.search(r"^default_vhost\s*=\s*(\S+)$", config, re.M).group(1)
    for name, deployment in deployments.items():
        env = {item["name"]: item for item in containers(deployment)[0]["env"]}
        uri = urlsplit(env["AMQP_URI"]["value"])
        assert uri.scheme == "pyamqp" and uri.port == 5672
        assert uri.hostname == cluster["metadata"]["name"], "the operator's Service has the cluster's name"
        assert uri.path == f"/{vhost}"
        assert (uri.username, uri.password) == ("$(RABBITMQ_USERNAME)", "$(RABBITMQ_PASSWORD)")
        for variable in ("RABBITMQ_USERNAME", "RABBITMQ_PASSWORD"):
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == f"{cluster['metadata']['name']}-default-user"


def test_the_secret_holds_only_marked_placeholders(objects):
    for secret in of_kind(objects, "Secret"):
        assert "data" not in secret, "base64 hides what is a placeholder"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, f"{key} looks like a real value"


def test_no_well_known_account():
    for path in K8S.rglob("*"):
        if path.is_file():
            assert "guest" not in path.read_text().lower(), path


# -- RabbitMQ -------------------------------------------------------------------

def test_rabbitmq_is_a_three_node_cluster_with_quorum_queues(objects):
    clusters = of_kind(objects, "RabbitmqCluster")
    assert len(clusters) == 1
    cluster = clusters[0]
    jsonschema.validate(cluster, RABBITMQ_CLUSTER_SCHEMA)
    spec = cluster["spec"]
    assert spec["replicas"] == 3
    image, _, tag = spec["image"].partition(":")
    assert image == "rabbitmq" and tag and tag != "latest"
    settings = {}
    for line in spec["rabbitmq"]["additionalConfig"].splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, line
            settings[key.strip()] = value.strip()
    # The services declare their queues' type (common/queues.py); no node default is relied on.
    assert "default_queue_type" not in settings
    config = next(doc for doc in objects if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "bookrental-config")
    assert config["data"]["QUEUE_TYPE"] == "quorum"
    assert "default_user" not in settings and "default_pass" not in settings
    # The Kubernetes-typed parts, against the core schemas.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
           "spec": {"affinity": spec["affinity"],
                    "containers": [{"name": "rabbitmq", "image": spec["image"], "resources": spec["resources"]}]}}
    kubernetes_validate.validate(pod, K8S_VERSIONS[0], strict=True)
    assert spec["resources"]["limits"]["memory"] == spec["resources"]["requests"]["memory"], \
        "RabbitMQ sizes its memory alarm from the limit; a lower request invites eviction"


def test_optional_topology_matches_the_compose_definitions():
    documents = yaml_documents(K8S / "optional" / "rabbitmq-topology.yaml")
    definitions = json.loads((RABBITMQ / "definitions.json").read_text())
    policy = next(doc for doc in documents if doc["kind"] == "Policy")["spec"]
    compose_policy = next(p for p in definitions["policies"] if p["name"] == policy["name"])
    assert (policy["pattern"], policy["applyTo"], policy["priority"], policy["definition"]) == \
        (compose_policy["pattern"], compose_policy["apply-to"], compose_policy["priority"], compose_policy["definition"])
    exchange = next(doc for doc in documents if doc["kind"] == "Exchange")["spec"]
    assert exchange["name"] == string_constant(ROOT / "common" / "handlers.py", "DEAD_LETTER_EXCHANGE")
    for doc in documents:
        assert doc["apiVersion"] == "rabbitmq.com/v1beta1"
        assert doc["spec"]["rabbitmqClusterReference"]["name"] == "bookrental-rabbitmq"


# -- kustomize ------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("kubectl") is None and shutil.which("kustomize") is None,
                    reason="neither kubectl nor kustomize is installed")
def test_kustomize_builds_valid_objects():
    command = ["kubectl", "kustomize", str(K8S)] if shutil.which("kubectl") else ["kustomize", "build", str(K8S)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = load_yaml_all(result.stdout)
    assert len(built) == sum(len(yaml_documents(path)) for path in manifest_files())
    for obj in built:
        if obj["kind"] == "Deployment":
            for container in containers(obj):
                assert "/" in container["image"] and ":" in container["image"], container["image"]
        if not obj["apiVersion"].startswith(CUSTOM_GROUPS):
            kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)


def test_the_event_log_is_a_stream_bound_to_every_producer():
    from common import eventlog

    documents = yaml_documents(K8S / "optional" / "rabbitmq-topology.yaml")
    queue = next(doc["spec"] for doc in documents if doc["kind"] == "Queue" and doc["spec"]["name"] == eventlog.LOG_QUEUE)
    configmap = next(doc for doc in yaml_documents(K8S / "configmap.yaml") if doc["kind"] == "ConfigMap")["data"]
    declared = eventlog.arguments(configmap)  # what the services declare, under the ConfigMap's settings
    assert queue["type"] == declared.pop("x-queue-type") == "stream"
    assert queue["durable"] is True and queue["autoDelete"] is False
    assert queue["arguments"] == declared
    defaults = eventlog.arguments({})  # the ConfigMap keeps config.yml's defaults
    assert declared == {key: value for key, value in defaults.items() if key != "x-queue-type"}
    bindings = {doc["spec"]["source"]: doc["spec"] for doc in documents if doc["kind"] == "Binding"}
    exchanges = {doc["spec"]["name"] for doc in documents if doc["kind"] == "Exchange"}
    for producer in eventlog.producers():
        binding = bindings[f"{producer}.events"]
        assert (binding["destination"], binding["destinationType"], binding["routingKey"]) == \
            (eventlog.LOG_QUEUE, "queue", "#")
        assert f"{producer}.events" in exchanges
