"""The Kubernetes base, rendered by kustomize and held to what a cluster needs (make k8s-check):
valid against the schemas offline, and the properties that made the earlier manifests serve
nothing (loopback binds, no probes, optional secrets, ...) asserted so they cannot return."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CLUSTER_SCOPED = ("Namespace",)
MODELS_LABEL = "playbach.example.org/models-volume"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render k8s/ (kubectl kustomize)"
    out = subprocess.run([kubectl, "kustomize", str(REPO / "k8s")], capture_output=True,
                         text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def containers(obj: dict, init: bool = True) -> list[dict]:
    spec = pod(obj)
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def name(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_against_the_schemas(objects, version):
    assert len(objects) >= 15
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_namespace_labels_and_selectors(objects):
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == "playbach", name(obj)
            assert all(k in labels for k in LABELS), (name(obj), labels)
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] in WORKLOADS]
    for obj in of(objects, "Service") + of(objects, "PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert set(selector) >= {"app.kubernetes.io/name", "app.kubernetes.io/component"}
        assert sum(p.items() >= selector.items() for p in pods) == 1, name(obj)


def test_images_come_from_a_registry_with_a_tag(objects):
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            for c in containers(obj):
                image = c["image"]
                assert ":" in image and not image.endswith(":latest"), image
                if "playbach/" in image:
                    assert image.startswith("registry.example.org/playbach/"), image


def test_nothing_binds_loopback(objects):
    [config] = of(objects, "ConfigMap")
    assert config["data"]["HOST"] == "0.0.0.0" and config["data"]["UI_HOST"] == "0.0.0.0"
    text = yaml.safe_dump(objects)
    assert "127.0.0.1" not in text and "localhost" not in text
    for obj in of(objects, "Deployment"):
        for c in containers(obj, init=False):
            assert {"configMapRef": {"name": "playbach-config"}} in c["envFrom"], name(obj)


def test_probes_limits_and_security_everywhere(objects):
    for obj in [o for o in objects if o["kind"] in WORKLOADS]:
        spec = pod(obj)
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["runAsUser"] > 0 and ctx["fsGroup"] > 0, name(obj)
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for c in containers(obj):
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, (name(obj), c["name"])
            sec = c["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False and sec["readOnlyRootFilesystem"]
            assert sec["capabilities"]["drop"] == ["ALL"], (name(obj), c["name"])
        if obj["kind"] != "Job":
            for c in containers(obj, init=False):
                assert "readinessProbe" in c and "livenessProbe" in c, (name(obj), c["name"])


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_secrets_are_required_and_redis_needs_its_password(objects):
    for obj in [o for o in objects if o["kind"] in WORKLOADS]:
        for c in containers(obj):
            for source in c.get("envFrom", []):
                assert "secretRef" not in source, name(obj)  # each secret by name, least use
            env = env_of(c)
            if "REDIS_URL" in env:
                names = list(env)
                assert env["REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
                assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # expanded
            if "REDIS_PASSWORD" in env:
                ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "playbach-secrets" and not ref.get("optional"), name(obj)
    [redis] = of(objects, "StatefulSet")
    [c] = containers(redis)
    assert "--requirepass" in c["args"] and "--appendonly" in c["args"]
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert not of(objects, "Secret")  # made by the operator, never in the repository


def test_the_models_volume_is_seeded_shared_and_works_read_write_once(objects):
    [pvc] = of(objects, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in pvc["spec"]
    mounting = [o for o in objects if o["kind"] in WORKLOADS and any(
        v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]
        for v in pod(o).get("volumes", []))]
    assert {o["metadata"]["name"] for o in mounting} == {
        "playbach-gateway", "playbach-inference", "playbach-train", "playbach-trainer-worker"}
    writers = {"playbach-train", "playbach-trainer-worker"}  # they publish models
    for obj in mounting:  # a node at a time for ReadWriteOnce: all beside each other
        assert obj["spec"]["template"]["metadata"]["labels"][MODELS_LABEL] == "mounted"
        affinity = pod(obj)["affinity"]["podAffinity"]
        [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["labelSelector"]["matchLabels"] == {MODELS_LABEL: "mounted"}
        assert term["topologyKey"] == "kubernetes.io/hostname"
        first = pod(obj)["initContainers"][0]
        if obj["kind"] == "Deployment":  # the shipped models put in place before start
            assert first["command"] == ["python", "-m", "playbach.seed"], name(obj)
        for c in containers(obj, init=False):
            [mount] = [m for m in c["volumeMounts"] if m["name"] == "models"]
            writes = obj["metadata"]["name"] in writers
            assert mount.get("readOnly", False) is not writes, name(obj)


def make_train_commands() -> list[list[str]]:
    """`make train`'s trainer invocations, with the Makefile's variables filled in."""
    text = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+) :?= (.*)$", text, re.MULTILINE))
    recipe = re.search(r"^train: .*\n((?:\t.*\n)+)", text, re.MULTILINE).group(1)
    commands = []
    for line in recipe.splitlines():
        for _ in range(5):  # a variable may name another (a config built of others)
            line = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)),
                          line)
        assert "$(" not in line, f"a Makefile variable left unfilled: {line}"
        words = shlex.split(line)
        commands.append(words[words.index("trainer") + 1:])
    return commands


def test_the_training_job_runs_what_make_train_runs(objects):
    [job] = of(objects, "Job")
    steps = pod(job)["initContainers"] + pod(job)["containers"]
    in_job = [[a.replace("/opt/playbach/data/", "data/") for a in c["args"] if a != "--no-progress"]
              for c in steps]
    assert in_job == make_train_commands() and len(in_job) == 4
    env = env_of(steps[0])
    assert {"MODELS_DIR", "RUNS_DIR", "CACHE_DIR"} <= set(env)
    mounts = {m["mountPath"] for m in steps[0]["volumeMounts"]}
    assert {env[v]["value"] for v in ("MODELS_DIR", "RUNS_DIR", "CACHE_DIR")} <= mounts


def test_scaling_disruption_ingress_and_network_policy(objects):
    [hpa] = of(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "playbach-inference"
    assert hpa["spec"]["minReplicas"] >= 2
    budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for p in of(objects, "PodDisruptionBudget")}
    assert budgets == {"playbach-gateway", "playbach-inference", "playbach-synth"}
    [ingress] = of(objects, "Ingress")
    notes = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):  # a stream outlives 60 s
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"]
                for p in r["http"]["paths"]}
    assert backends == {"playbach-gateway", "playbach-ui"}
    [policy] = of(objects, "NetworkPolicy")
    guarded = policy["spec"]["podSelector"]["matchLabels"]
    assert guarded["app.kubernetes.io/name"] == "playbach-redis"
    [rule] = policy["spec"]["ingress"]
    [allowed] = rule["from"][0]["podSelector"]["matchExpressions"]
    assert sorted(allowed["values"]) == ["gateway", "inference", "synth", "trainer-worker"]
    # a training upload (UPLOAD_MAX_MB, 20 by default) passes the Ingress
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "25m"


def test_the_keda_example_targets_the_inference_deployment(objects):
    docs = list(yaml.safe_load_all((REPO / "k8s/examples/keda-inference.yaml").read_text()))
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert target in {o["metadata"]["name"] for o in of(objects, "Deployment")}
    assert scaled["metadata"]["namespace"] == "playbach"
