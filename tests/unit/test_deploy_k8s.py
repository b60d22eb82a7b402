"""deploy/k8s renders with `kubectl kustomize` into objects the Kubernetes API would accept, wired to what
the roles read: no cluster runs here, so each overlay is rendered, every object validated offline against
the Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors), and the probes, ports,
volumes, replicas and autoscaling checked against the configuration the pods mount.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from citywatch.cli import build_parser
from core.settings import BusKind, RelationalKind, Settings, StoreKind, load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("small-city", "large-city")
KUBERNETES_VERSION = "1.32"  # Debian's kubectl is 1.32: a cluster it can manage
CONFIG_DIR = "/etc/citywatch"
WORKLOADS = {"ingest": "Deployment", "process": "StatefulSet", "api": "Deployment"}


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: apt-get install -y kubectl (it renders deploy/k8s with kustomize)",
                    pytrace=False)
    rendered = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                              text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def objects(overlay: str) -> list[dict[str, Any]]:
    return render(overlay)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def workload(objects: list[dict[str, Any]], role: str) -> dict[str, Any]:
    return find(objects, WORKLOADS[role], f"citywatch-{role}")


def container(objects: list[dict[str, Any]], role: str) -> dict[str, Any]:
    (only,) = workload(objects, role)["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


@pytest.fixture(scope="module")
def settings(objects: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The configuration as the pods see it: the rendered ConfigMap's files in one directory."""
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    directory = tmp_path_factory.mktemp("etc-citywatch")
    for name, content in config_map["data"].items():
        (directory / name).write_text(content)
    return load_settings(directory / "citywatch.yaml")


def test_every_rendered_object_is_valid_for_kubernetes(objects):
    errors = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: no schema: {exc.message}")
    assert not errors
    assert {o["kind"] for o in objects} >= {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service",
                                           "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_everything_is_in_the_citywatch_namespace(objects):
    find(objects, "Namespace", "citywatch")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "citywatch", obj["metadata"]["name"]


def test_the_mounted_configuration_loads_with_its_city_files(settings):
    from ingest.geo import GeoTagger

    assert settings.bus.kind == BusKind.KAFKA
    assert settings.store.kind == StoreKind.INFLUXDB
    assert settings.devices and settings.vendor_maps
    GeoTagger.from_settings(settings.geo)  # raises if a polygon file is missing or invalid


def test_each_role_runs_its_command_with_the_mounted_configuration(objects):
    for role in WORKLOADS:
        spec = workload(objects, role)["spec"]["template"]["spec"]
        (main,) = spec["containers"]
        args = build_parser().parse_args(main["args"])
        assert args.command == role
        assert str(args.config) == f"{CONFIG_DIR}/citywatch.yaml"
        config_volume = next(m["name"] for m in main["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
        (volume,) = [v for v in spec["volumes"] if v["name"] == config_volume]
        config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
        assert "citywatch.yaml" in config_map["data"]


def test_probes_ask_each_role_on_the_port_it_listens_on(objects, settings):
    ports = {"ingest": settings.roles.status_port, "process": settings.roles.status_port,
             "api": settings.api.port}
    assert settings.roles.status_host == settings.api.host == "0.0.0.0"
    for role, port in ports.items():
        main = container(objects, role)
        named = {p["name"]: p["containerPort"] for p in main["ports"]}
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            check = main[probe]["httpGet"]
            assert check["path"] == path, f"{role} {probe}"
            assert named[check["port"]] == port, f"{role} {probe} asks port {check['port']}"


def test_no_volume_is_shared_between_pods(objects, settings):
    data_dir = str(settings.store.data_dir)
    # Each processor its own claim (its write spool); the api keeps nothing that outlives the pod.
    (claim,) = workload(objects, "process")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["mountPath"]: m["name"] for m in container(objects, "process")["volumeMounts"]}
    assert mounts[data_dir] == claim["metadata"]["name"], "process's data_dir is not its own volume"
    api_mounts = {m["mountPath"]: m["name"] for m in container(objects, "api")["volumeMounts"]}
    api_volumes = {v["name"]: v for v in workload(objects, "api")["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in api_volumes[api_mounts[data_dir]]
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            volumes = obj["spec"]["template"]["spec"].get("volumes", [])
            assert not [v for v in volumes if "persistentVolumeClaim" in v], obj["metadata"]["name"]
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]


def test_ingest_is_one_session_with_its_client_certificate(objects, settings):
    ingest = workload(objects, "ingest")
    assert ingest["spec"]["replicas"] == 1
    assert ingest["spec"]["strategy"]["type"] == "Recreate"
    spec = ingest["spec"]["template"]["spec"]
    tls = settings.mqtt.tls
    assert tls.enabled and tls.ca_file and tls.cert_file and tls.key_file
    assert tls.cert_file.stem == settings.mqtt.client_id
    mounts = {m["mountPath"]: m["name"] for m in container(objects, "ingest")["volumeMounts"]}
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        (volume,) = [v for v in spec["volumes"] if v["name"] == mounts[str(path.parent)]]
        assert volume["secret"]["secretName"] == "citywatch-mqtt-ingest"
    # No other pod mounts the ingest's key.
    for role in ("process", "api"):
        volumes = workload(objects, role)["spec"]["template"]["spec"]["volumes"]
        assert not [v for v in volumes if v.get("secret", {}).get("secretName") == "citywatch-mqtt-ingest"]


def test_api_replicas_share_their_relational_state_in_postgresql(objects, settings):
    relational = settings.relational
    assert relational.kind == RelationalKind.POSTGRESQL
    assert relational.postgresql.password is None  # never in the ConfigMap
    api = workload(objects, "api")
    assert api["spec"]["replicas"] >= 2
    env = {e["name"]: e["value"] for e in container(objects, "api")["env"]}
    password_file = Path(env["CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD_FILE"])
    mounts = {m["mountPath"]: m["name"] for m in container(objects, "api")["volumeMounts"]}
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[str(password_file.parent)]]["secret"]["secretName"] == "citywatch-postgres"
    pdb = find(objects, "PodDisruptionBudget", "citywatch-api")
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_processors_scale_on_consumer_lag_within_the_partitions(objects, settings):
    process = workload(objects, "process")
    hpa = find(objects, "HorizontalPodAutoscaler", "citywatch-process")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", process["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] <= process["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["maxReplicas"] == settings.bus.kafka.partitions
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "citywatch_kafka_consumer_lag"
    events_topic = settings.bus.kafka.topics.events
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"topic": events_topic}
    # No autoscaler for the roles that must stay at one replica.
    scaled = [o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert scaled == ["citywatch-process"]


def test_disruption_budgets_cover_the_replicated_processors(objects):
    pdb = find(objects, "PodDisruptionBudget", "citywatch-process")
    pod_labels = workload(objects, "process")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_pods_run_unprivileged(objects):
    for role in WORKLOADS:
        pod = workload(objects, role)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the citywatch user of deploy/Dockerfile
        main = container(objects, role)
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert main["resources"]["requests"]["cpu"] and main["resources"]["limits"]["memory"]


def test_every_mounted_secret_is_readable_by_the_unprivileged_user(objects):
    # Kubernetes writes secret files owned by root and by the pod's fsGroup: without the group (or with
    # a mode that gives the group nothing) a process running as 10001 cannot read its own key.
    for role in WORKLOADS:
        pod = workload(objects, role)["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" not in volume:
                continue
            mode = volume["secret"].get("defaultMode", 0o644)
            readable = bool(mode & 0o004) or (pod["securityContext"].get("fsGroup") == 10001 and mode & 0o040)
            assert readable, (role, volume["name"], oct(mode))


def test_the_large_city_gets_more_processors_and_more_of_everything_than_the_small_one():
    small, large = render("small-city"), render("large-city")

    def cpu(objects: list[dict[str, Any]], role: str) -> float:
        value = container(objects, role)["resources"]["requests"]["cpu"]
        return float(value[:-1]) / 1000 if value.endswith("m") else float(value)

    assert workload(large, "process")["spec"]["replicas"] > workload(small, "process")["spec"]["replicas"]
    for role in WORKLOADS:
        assert cpu(large, role) > cpu(small, role), role
    hpa = {name: find(objs, "HorizontalPodAutoscaler", "citywatch-process")["spec"]
           for name, objs in (("small", small), ("large", large))}
    assert hpa["large"]["maxReplicas"] > hpa["small"]["maxReplicas"]


def test_the_large_city_configuration_differs_from_the_base_only_in_partitions(tmp_path):
    base = load_beside_city_files(K8S / "base" / "citywatch.yaml", tmp_path / "base")
    large = load_beside_city_files(K8S / "overlays" / "large-city" / "citywatch.yaml", tmp_path / "large")
    assert large.bus.kafka.partitions > base.bus.kafka.partitions
    same = large.with_overrides(bus__kafka__partitions=base.bus.kafka.partitions)
    assert same.model_dump() == base.model_dump()


def load_beside_city_files(config: Path, directory: Path) -> Settings:
    """`config` loaded as the pods load it, with the city files beside it; file paths made relative."""
    shutil.copytree(K8S / "base" / "city", directory)
    shutil.copy(config, directory / "citywatch.yaml")
    loaded = load_settings(directory / "citywatch.yaml")
    geo = {name: Path(getattr(loaded.geo, name)).relative_to(directory)
           for name in ("grids_file", "districts_file")}
    return loaded.model_copy(update={"geo": loaded.geo.model_copy(update=geo)})


def test_the_example_city_files_are_the_repositorys_example():
    for name, source in (("devices.yaml", "devices.yaml"), ("vendor_maps.yaml", "vendor_maps.yaml"),
                         ("grids.geojson", "geo/grids.geojson"),
                         ("districts.geojson", "geo/districts.geojson")):
        assert (K8S / "base" / "city" / name).read_bytes() == (REPO / "configs" / source).read_bytes(), name
