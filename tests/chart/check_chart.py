#!/usr/bin/env python3
"""Checks the Helm chart, the Dockerfile, compose.yaml and the scripts without a cluster.

- `helm lint --strict` with every ci/*-values.yaml, the kind values and the demo (kind + demo);
- `helm template` of each (with the optional API versions) through `kubernetes-validate --strict`;
- assertions on the rendered objects: replicas knob, autoscaling, KEDA, the retry worker, security
  contexts, labels and selectors, probes, the test hook, dashboards, the rules, the schema refusing
  typos, checksums, the NetworkPolicy, the Secret, name lengths, references between objects;
- scale-out: the Redis Cluster's seeds and the partition settings reach every pipeline pod, KEDA
  gets one trigger per partition stream, named as `fulfillment partitions --json` (a binary of
  TARGET_DIR) names them, and files/partition-tags.json is what `fulfillment partitions
  --chart-table 64` prints;
- the kind scripts run against stub docker, kind, kubectl and helm commands;
- hadolint on the Dockerfile, shellcheck on every script, compose.yaml against the Compose
  Specification's JSON schema, the chart README generated from values.yaml.

Usage: check_chart.py [TARGET_DIR]  (where the binaries are built; default target/debug). Run with
the tools of scripts/install-test-tools first on the PATH (helm, kubernetes-validate, hadolint,
shellcheck, and a python with PyYAML and jsonschema). Prints one line per check and
`N passed, N failed`.
"""

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chartlib import (API_VERSIONS, CHART, DEMO_VALUES, KIND_VALUES, REGISTRY, ROOT,  # noqa: E402
                      VALUE_SETS, Resolver, helm_template, named, of_kind, pod_specs, pod_template,
                      run, values_args)

DEFAULT_VALUES = os.path.join(CHART, "ci", "default-values.yaml")
CLUSTER_VALUES = os.path.join(CHART, "ci", "cluster-values.yaml")
# Mailpit for kind (deploy/kind/up.sh adds it unless --no-mail): not in chartlib's VALUE_SETS, whose
# every Deployment the boot test starts as a binary of this workspace.
KIND_MAIL_VALUES = os.path.join(ROOT, "deploy", "kind", "values-mail.yaml")
# A relay that asks for a login (STARTTLS on 587), as mail.smtpUrl.
RELAY = "smtp://orders@smtp.example.com:587?tls=required"
# What only the notification service is given.
MAIL_ENV = {"SMTP_URL", "SMTP_PASSWORD", "MAIL_FROM", "SMTP_SEND_LEASE_MS"}
TARGET = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug")
SERVICES = ["order", "inventory", "payment", "shipping", "notification"]
REQUIRED_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                   "app.kubernetes.io/part-of", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "helm.sh/chart"]
IMAGES = ["order-service", "inventory-service", "payment-service", "shipping-service",
          "notification-service", "retry-worker", "fulfillment-e2e"]
# What KEDA's redis-streams scaler reads (kedacore/keda pkg/scalers/redis_streams_scaler.go and
# redis_scaler.go, KEDA 2.21): trigger metadata keys, and TriggerAuthentication parameters.
KEDA_METADATA = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
                 "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
                 "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl",
                 "databaseIndex"}
KEDA_AUTH_PARAMETERS = {"username", "password", "tls", "ca", "cert", "key", "keyPassword"}
# What its redis-cluster-streams variant reads (the same scaler on a cluster client; the metadata
# of KEDA's docs, scalers/redis-cluster-streams): seeds as `addresses`, no database index.
KEDA_CLUSTER_METADATA = {"addresses", "hosts", "ports", "usernameFromEnv", "passwordFromEnv", "stream",
                         "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
                         "enableTLS", "unsafeSsl"}

results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"PASS {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            results.append((name, e))
            print(f"FAIL {name}: {e}")
        return fn
    return wrap


def render(*args, release="fulfillment", api_versions=True, registry=True):
    """The rendered objects; the default values file (the registry) first unless registry=False."""
    base = ["-f", DEFAULT_VALUES] if registry else []
    code, out = helm_template(*(base + list(args)), release=release, api_versions=api_versions)
    if code != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed: {out.strip()}")
    return out


def render_fails(*args, api_versions=True, registry=True):
    base = ["-f", DEFAULT_VALUES] if registry else []
    code, out = helm_template(*(base + list(args)), api_versions=api_versions)
    assert code != 0, f"helm template {' '.join(args)} rendered"
    return out


def notes(*args):
    """NOTES.txt as `helm install --dry-run` prints it."""
    out = run(["helm", "install", "f", CHART, "--namespace", "shop", "--dry-run=client"] + list(args))
    assert out.returncode == 0, out.stderr
    return out.stdout.split("NOTES:", 1)[1]


def values_file(data):
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    yaml.safe_dump(data, f)
    f.close()
    return f.name


def container(o):
    return pod_template(o)["spec"]["containers"][0]


def config_of(objects):
    return next(cm["data"] for cm in of_kind(objects, "ConfigMap") if "RETRY_MIN_IDLE_MS" in cm.get("data", {}))


def matches(selector, labels):
    """Whether a label selector (matchLabels or matchExpressions with In) selects these labels."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        for e in selector.get("matchExpressions", []):
            assert e["operator"] == "In", e
            ok = ok and labels.get(e["key"]) in e["values"]
        return ok
    return all(labels.get(k) == v for k, v in selector.items())


def check_references(objects):
    """Everything an object names exists in the release (or is declared external)."""
    kinds = {}
    for o in objects:
        kinds.setdefault(o["kind"], set()).add(o["metadata"]["name"])
    services = of_kind(objects, "Service")
    templates = [pod_template(o)["metadata"]["labels"] for o in objects
                 if o["kind"] in ("Deployment", "StatefulSet", "CronJob")]
    for s in services:
        assert any(matches(s["spec"]["selector"], t) for t in templates), f"Service {s['metadata']['name']} selects nothing"
    for sts in of_kind(objects, "StatefulSet"):
        assert sts["spec"]["serviceName"] in kinds["Service"], sts["spec"]["serviceName"]
    for owner, spec in pod_specs(objects):
        assert spec["serviceAccountName"] in kinds.get("ServiceAccount", set()), spec["serviceAccountName"]
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                assert src["configMapRef"]["name"] in kinds["ConfigMap"], src
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in kinds.get("Secret", set()), ref
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in kinds["ConfigMap"], v
    for kind, field in (("HorizontalPodAutoscaler", "scaleTargetRef"), ("ScaledObject", "scaleTargetRef")):
        for o in of_kind(objects, kind):
            assert o["spec"][field]["name"] in kinds["Deployment"], o["spec"][field]
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        assert any(matches(pdb["spec"]["selector"], t) for t in templates), pdb["metadata"]["name"]


# ---------------------------------------------------------------------------------------------
# Every rendered combination: lint, schema validation. Besides chartlib's (which the boot test also
# runs), the combinations with mail: kind with Mailpit (up.sh, and up.sh --demo), a relay whose
# password is in the chart's Secret, and one whose password is in an existingSecret, Mailpit on too.

MAIL_SETS = [
    ("deploy/kind/values-kind.yaml + values-mail.yaml (up.sh, Mailpit)", [KIND_VALUES, KIND_MAIL_VALUES]),
    ("deploy/kind/values-kind.yaml + values-mail.yaml + values-demo.yaml (up.sh --demo, Mailpit)",
     [KIND_VALUES, KIND_MAIL_VALUES, DEMO_VALUES]),
    ("a mail relay, its password in the chart's Secret",
     [DEFAULT_VALUES, values_file({"mail": {"smtpUrl": RELAY, "smtpPassword": "p@ss w:rd/#%"}})]),
    ("a mail relay, its password in existingSecret, Mailpit on too",
     [DEFAULT_VALUES, values_file({"existingSecret": "shop-secrets", "mail": {"smtpUrl": RELAY},
                                   "mailpit": {"enabled": True}})]),
]

for label, files in VALUE_SETS + MAIL_SETS:
    @check(f"helm lint --strict: {label}")
    def _lint(files=files):
        out = run(["helm", "lint", "--strict", CHART] + values_args(files))
        assert out.returncode == 0, out.stdout + out.stderr

    @check(f"kubernetes-validate --strict: {label}")
    def _validate(files=files):
        out = run(["helm", "template", "fulfillment", CHART] + values_args(files) + API_VERSIONS)
        assert out.returncode == 0, out.stderr
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(out.stdout)
        try:
            v = run(["kubernetes-validate", "--strict", "--quiet", f.name])
        finally:
            os.unlink(f.name)
        errors = [line for line in (v.stdout + v.stderr).splitlines() if not line.startswith("WARN")]
        assert v.returncode == 0 and not errors, "\n".join(errors)
        # Objects of CRDs have no offline schema: they are asserted below instead.
        for line in (v.stdout + v.stderr).splitlines():
            assert any(api in line for api in ("monitoring.coreos.com", "keda.sh", "gateway.networking.k8s.io")), line


default = render()


# ---------------------------------------------------------------------------------------------
# What the chart always did.

@check("every service has a Deployment whose replicas come from its knob")
def _replicas():
    deployments = {d["metadata"]["name"]: d for d in of_kind(default, "Deployment")}
    assert sorted(deployments) == sorted(f"fulfillment-{s}" for s in SERVICES), sorted(deployments)
    assert deployments["fulfillment-inventory"]["spec"]["replicas"] == 3
    assert deployments["fulfillment-payment"]["spec"]["replicas"] == 2
    scaled = render("--set", "services.inventory.replicaCount=5", "--set", "serviceDefaults.replicaCount=4")
    assert named(scaled, "Deployment", "fulfillment-inventory")["spec"]["replicas"] == 5
    assert named(scaled, "Deployment", "fulfillment-shipping")["spec"]["replicas"] == 4
    off = render("--set", "services.notification.enabled=false")
    assert not [d for d in of_kind(off, "Deployment") if d["metadata"]["name"].endswith("notification")]


@check("every numeric setting reaches the ConfigMap as plain digits, however large")
def _config_numbers():
    big = render("--set", "config.orderRetentionMs=2592000000", "--set", "config.streamRetentionMs=3600000",
                 "--set", "config.shutdownGraceMs=1200000", "--set", "serviceDefaults.terminationGracePeriodSeconds=1300",
                 "--set", "retryWorker.terminationGracePeriodSeconds=1300")
    env = config_of(big)
    assert env["ORDER_RETENTION_MS"] == "2592000000", env["ORDER_RETENTION_MS"]
    assert env["STREAM_RETENTION_MS"] == "3600000", env["STREAM_RETENTION_MS"]
    assert env["SHUTDOWN_GRACE_MS"] == "1200000", env["SHUTDOWN_GRACE_MS"]
    for name in ("BATCH_SIZE", "BLOCK_MS", "READ_LINGER_US", "MAX_IN_FLIGHT", "RETRY_MIN_IDLE_MS", "RETRY_MAX_RETRIES",
                 "RETRY_BATCH_SIZE", "RETRY_INTERVAL_MS", "CONSUMER_GONE_AFTER_MS", "PAYMENT_MAX_ATTEMPTS",
                 "HTTP_REQUEST_TIMEOUT_MS", "HTTP_MAX_IN_FLIGHT"):
        assert env[name].isdigit(), f"{name}={env[name]!r}"


@check("autoscaling drops replicas and adds an HPA; KEDA scales consumers on group lag")
def _autoscaling():
    hpa = render("--set", "services.order.autoscaling.enabled=true")
    assert "replicas" not in named(hpa, "Deployment", "fulfillment-order")["spec"]
    h = named(hpa, "HorizontalPodAutoscaler", "fulfillment-order")
    assert h["spec"]["scaleTargetRef"]["name"] == "fulfillment-order"
    keda = render("--set", "services.inventory.keda.enabled=true")
    so = named(keda, "ScaledObject", "fulfillment-inventory")
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == "order_events"
    assert trigger["metadata"]["consumerGroup"] == "inventory_group"
    assert {"lagCount", "activationLagCount"} <= set(trigger["metadata"])
    assert so["spec"]["scaleTargetRef"]["name"] == "fulfillment-inventory"
    assert "replicas" not in named(keda, "Deployment", "fulfillment-inventory")["spec"]


@check("the retry worker is a CronJob by default: every minute, Forbid, deadlines, history, 60 s idle,"
       " 3 retries; one consumer name across passes, each service replica its own")
def _cronjob():
    cj = of_kind(default, "CronJob")[0]
    spec = cj["spec"]
    assert spec["schedule"] == "* * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and 0 < job["activeDeadlineSeconds"] < 60
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    config = config_of(default)
    assert config["RETRY_MIN_IDLE_MS"] == "60000" and config["RETRY_MAX_RETRIES"] == "3"
    tuned = render("--set", "retryWorker.schedule=*/5 * * * *", "--set", "retryWorker.minIdleMs=30000",
                   "--set", "retryWorker.maxRetries=5")
    assert of_kind(tuned, "CronJob")[0]["spec"]["schedule"] == "*/5 * * * *"
    data = config_of(tuned)
    assert data["RETRY_MIN_IDLE_MS"] == "30000" and data["RETRY_MAX_RETRIES"] == "5"
    env = {e["name"]: e for e in job["template"]["spec"]["containers"][0]["env"]}
    assert env["CONSUMER_NAME"]["value"] == "retry-worker", "one consumer name across passes"
    for d in of_kind(default, "Deployment"):
        env = {e["name"]: e for e in container(d)["env"]}
        assert env["CONSUMER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    loop = render("--set", "retryWorker.mode=loop", "--set", "retryWorker.intervalMs=1500")
    assert not of_kind(loop, "CronJob")
    worker = named(loop, "Deployment", "fulfillment-retry-worker")
    assert worker["spec"]["replicas"] == 1 and worker["spec"]["strategy"]["type"] == "Recreate"
    assert container(worker)["args"] == ["--loop"]
    assert config_of(loop)["RETRY_INTERVAL_MS"] == "1500"


@check("every pod and container is locked down")
def _security():
    objects = render("-f", os.path.join(CHART, "ci", "monitoring-values.yaml"))
    count = 0
    for owner, spec in pod_specs(objects):
        who = f"{owner['kind']}/{owner['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, who
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", who
        assert spec["automountServiceAccountToken"] is False, who
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, who
            assert sc["allowPrivilegeEscalation"] is False, who
            assert sc["capabilities"]["drop"] == ["ALL"], who
            assert "resources" in c and c["resources"]["limits"]["memory"], who
            count += 1
    assert count >= 8, count


@check("labels on every object; selectors use name, instance and component only")
def _labels():
    for o in default:
        labels = o["metadata"].get("labels", {})
        missing = [k for k in REQUIRED_LABELS if k not in labels]
        assert not missing, f"{o['kind']}/{o['metadata']['name']} lacks {missing}"
    for d in of_kind(default, "Deployment") + of_kind(default, "StatefulSet"):
        selector = d["spec"]["selector"]["matchLabels"]
        assert sorted(selector) == ["app.kubernetes.io/component", "app.kubernetes.io/instance",
                                    "app.kubernetes.io/name"], selector
        template = d["spec"]["template"]["metadata"]["labels"]
        assert all(template.get(k) == v for k, v in selector.items()), d["metadata"]["name"]
    api = named(default, "Service", "fulfillment-api")
    order = named(default, "Deployment", "fulfillment-order")
    assert api["spec"]["selector"] == order["spec"]["selector"]["matchLabels"]
    redis = named(default, "Service", "fulfillment-redis")
    assert redis["spec"]["selector"]["app.kubernetes.io/component"] == "redis"


@check("probes on /healthz and /readyz behind a startup probe, rolling config checksum")
def _probes():
    for d in of_kind(default, "Deployment"):
        c = container(d)
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, d["metadata"]["name"]
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 30
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, d["metadata"]["name"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, d["metadata"]["name"]
        assert c["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    sts = container(named(default, "StatefulSet", "fulfillment-redis"))
    assert "startupProbe" in sts, "Redis loading a large append-only file must not be killed by liveness"
    before = named(default, "Deployment", "fulfillment-payment")["spec"]["template"]["metadata"]["annotations"]
    changed = render("--set", "config.paymentFailureRate=0.2")
    after = named(changed, "Deployment", "fulfillment-payment")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"], "a config change must roll the pods"


@check("the e2e suite is the helm test hook")
def _test_hook():
    pods = of_kind(default, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    assert c["image"].endswith("/fulfillment-e2e:0.1.0"), c["image"]
    assert "http://fulfillment-api:8080" in c["args"]
    names = [e["name"] for e in c["env"]]
    assert {"REDIS_URL", "ADMIN_TOKEN"} <= set(names)


@check("dashboards are ConfigMaps of valid JSON for Grafana's sidecar")
def _dashboards():
    maps = [m for m in of_kind(default, "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    assert maps, "no dashboard ConfigMap"
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        for key, text in m["data"].items():
            dashboard = json.loads(text)
            assert dashboard["panels"], key
    off = render("--set", "metrics.dashboards.enabled=false")
    assert not [m for m in of_kind(off, "ConfigMap") if "dashboard" in m["metadata"]["name"]]


@check("monitors and rules only when enabled and their API is served; rules match the rules file")
def _monitoring():
    values = os.path.join(CHART, "ci", "monitoring-values.yaml")
    objects = render("-f", values)
    sm = of_kind(objects, "ServiceMonitor")[0]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert of_kind(objects, "PodMonitor")
    rule = of_kind(objects, "PrometheusRule")[0]
    with open(os.path.join(CHART, "files", "alerts", "fulfillment-rules.yml")) as f:
        expected = yaml.safe_load(f)["groups"]
    assert rule["spec"]["groups"] == expected
    assert "{{ $labels.group }}" in json.dumps(rule["spec"]), "annotations keep Prometheus templates"
    bare = render("-f", values, api_versions=False)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"):
        assert not of_kind(bare, kind), f"{kind} rendered without its API"


@check("values.schema.json refuses typos and bad values")
def _schema():
    for args, needle in [
        (["--set", "services.inventroy.replicaCount=3"], "inventroy"),
        (["--set", "serviceDefaults.replicaCont=3"], "replicaCont"),
        (["--set", "config.logFormat=xml"], "logFormat"),
        (["--set", "config.inventoryFailureRate=1.5"], "inventoryFailureRate"),
        (["--set", "retryWorker.concurrencyPolicy=Sometimes"], "concurrencyPolicy"),
        (["--set", "retryWorker.mode=sometimes"], "mode"),
        (["--set", "apiService.nodePort=80"], "nodePort"),
        (["--set", "global.podAntiAffinityPreset=maybe"], "podAntiAffinityPreset"),
        (["--set", "serviceAccount.craete=true"], "craete"),
        (["--set", "redis.image.digest=latest"], "digest"),
        (["--set", "redis.maxmemory=lots"], "maxmemory"),
        (["--set", "config.streamPartitions=65"], "streamPartitions"),
        (["--set", "config.streamPartitions=0"], "streamPartitions"),
        (["--set", "config.redisWaitReplicas=17"], "redisWaitReplicas"),
        (["--set", "redis.cluster.nodes[0]=10.0.0.1:6379"], "nodes"),
        (["--set", "redis.cluster.enabeld=true"], "enabeld"),
    ]:
        out = run(["helm", "template", "x", CHART] + REGISTRY + args)
        assert out.returncode != 0, f"{args} was accepted"
        assert needle in out.stderr, f"{args}: {out.stderr.strip()}"
    with open(os.path.join(CHART, "values.yaml")) as f:
        first = f.readline().strip()
    assert first == "# yaml-language-server: $schema=values.schema.json", first


@check("only the pipeline's pods may reach the bundled Redis")
def _network_policy():
    policy = of_kind(default, "NetworkPolicy")[0]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for owner, _ in pod_specs(default):
        if owner["kind"] == "StatefulSet":
            continue
        labels = pod_template(owner)["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in allowed.items()), owner["metadata"]["name"]


@check("Redis: bundled StatefulSet with persistence and append-only, or an external URL")
def _redis():
    sts = named(default, "StatefulSet", "fulfillment-redis")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    conf = named(default, "ConfigMap", "fulfillment-redis-config")["data"]["redis.conf"]
    assert "appendonly yes" in conf and "maxmemory-policy noeviction" in conf
    secret = of_kind(default, "Secret")[0]
    assert secret["data"]["redis-password"]
    external = render("-f", os.path.join(CHART, "ci", "external-redis-values.yaml"))
    assert not of_kind(external, "StatefulSet") and not of_kind(external, "NetworkPolicy")
    assert of_kind(external, "Secret")[0]["data"]["redis-url"]
    env = container(named(external, "Deployment", "fulfillment-inventory"))["env"]
    redis_url = [e for e in env if e["name"] == "REDIS_URL"][0]
    assert redis_url["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    out = run(["helm", "template", "x", CHART, "--set", "redis.enabled=false"] + REGISTRY)
    assert out.returncode != 0 and "externalUrl" in out.stderr


# ---------------------------------------------------------------------------------------------
# The issue's bugs, one check each (each fails on the chart and scripts before their fix).

@check("bug 1: the demo (up.sh --demo) retries within seconds, so its own helm test's waits hold")
def _demo():
    objects = render(*values_args([KIND_VALUES, DEMO_VALUES]), registry=False)
    assert not of_kind(objects, "CronJob"), "a CronJob retries at most once a minute"
    worker = named(objects, "Deployment", "fulfillment-retry-worker")
    assert container(worker)["args"] == ["--loop"], container(worker).get("args")
    config = config_of(objects)
    rate = float(config["INVENTORY_FAILURE_RATE"])
    assert rate >= 0.3, "the demo still shows the seed's unstable inventory"
    retries = int(config["RETRY_MAX_RETRIES"])
    p_dead = rate ** (retries + 1)
    assert p_dead <= 1e-4, f"{p_dead:.2%} of inventory deliveries would be dead-lettered"
    # The longest wait one order sees, 1 time in 10,000: n failed attempts in a row, each retried
    # after RETRY_MIN_IDLE_MS plus up to one pass interval.
    n = math.ceil(math.log(1e-4) / math.log(rate))
    cycle = (int(config["RETRY_MIN_IDLE_MS"]) + int(config["RETRY_INTERVAL_MS"])) / 1000
    test = of_kind(objects, "Pod")[0]
    args = container(test)["args"]
    timeout = int(args[args.index("--timeout-secs") + 1])
    assert n * cycle + 10 <= timeout, f"{n} retries x {cycle}s > the helm test's {timeout}s wait"


@check("bug 2: every pod is scraped by one monitor only (no double-counted requests or orders)")
def _scraped_once():
    for files in ([KIND_VALUES], [os.path.join(CHART, "ci", "monitoring-values.yaml")],
                  [KIND_VALUES, DEMO_VALUES]):
        objects = render(*values_args(files), registry=False)
        pods = {o["metadata"]["name"]: pod_template(o)["metadata"]["labels"]
                for o in of_kind(objects, "Deployment")}
        scraped = {name: 0 for name in pods}
        services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
        for sm in of_kind(objects, "ServiceMonitor"):
            for svc in services.values():
                if matches(sm["spec"]["selector"], svc["metadata"]["labels"]):
                    for name, labels in pods.items():
                        scraped[name] += matches(svc["spec"]["selector"], labels)
        for pm in of_kind(objects, "PodMonitor"):
            for name, labels in pods.items():
                scraped[name] += matches(pm["spec"]["selector"], labels)
        wrong = {k: v for k, v in scraped.items() if v != 1}
        assert not wrong, f"{[os.path.basename(f) for f in files]}: scrapes per Deployment {wrong}"
        for o in of_kind(objects, "ServiceMonitor"):
            assert {"targetLabel": "job", "replacement": "fulfillment"} in o["spec"]["endpoints"][0]["relabelings"]
        for o in of_kind(objects, "PodMonitor"):
            assert {"targetLabel": "job", "replacement": "fulfillment"} in o["spec"]["podMetricsEndpoints"][0]["relabelings"]


def stub_commands(bindir, log):
    """docker, kind, kubectl and helm that log their arguments; docker build fails when
    FAIL_BUILD is set, as cargo does on a compile error."""
    stubs = {
        "docker": """case $1 in
  build) if [ -n "${FAIL_BUILD:-}" ]; then echo "error[E0308]: mismatched types (stub compile error)" >&2; exit 101; fi ;;
esac""",
        "kind": """if [ "$1 $2" = "get clusters" ]; then echo fulfillment; fi""",
        "kubectl": """case "$*" in
  *"get secret"*grafana*) printf '%s' "$(printf 'grafana-s3cret' | base64)" ;;
esac""",
        "helm": "",
    }
    for name, body in stubs.items():
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write(f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\n{body}\nexit 0\n')
        os.chmod(path, 0o755)


def run_up(*args, fail_build=False):
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "calls.log")
        open(log, "w").close()
        stub_commands(tmp, log)
        env = dict(os.environ, PATH=f"{tmp}:{os.environ['PATH']}")
        env.pop("IMAGE_TAG", None)
        if fail_build:
            env["FAIL_BUILD"] = "1"
        out = subprocess.run(["bash", os.path.join(ROOT, "deploy", "kind", "up.sh")] + list(args),
                             capture_output=True, text=True, env=env, timeout=120)
        with open(log) as f:
            return out, f.read().splitlines()


@check("bug 3: up.sh pins kube-prometheus-stack, gives it time, and prints Grafana's real password")
def _kube_prometheus_stack():
    out, calls = run_up("--monitoring")
    assert out.returncode == 0, out.stderr
    install = [c for c in calls if c.startswith("helm upgrade --install kube-prometheus-stack")]
    assert install, calls
    words = install[0].split()
    assert "--version" in words and re.match(r"^\d+\.\d+\.\d+$", words[words.index("--version") + 1]), install[0]
    timeout = words[words.index("--timeout") + 1] if "--timeout" in words else "5m"
    assert int(timeout.rstrip("m")) >= 10, f"--timeout {timeout}"
    assert "prom-operator" not in out.stdout, "kube-prometheus-stack no longer sets prom-operator"
    assert "admin / grafana-s3cret" in out.stdout, out.stdout


@check("bug 4: up.sh stops at a failed image build, with the build's message, before installing")
def _build_failure_stops():
    out, calls = run_up(fail_build=True)
    assert out.returncode != 0, "up.sh went on after a failed build"
    assert "mismatched types" in out.stderr, out.stderr[-500:]
    assert not [c for c in calls if c.startswith(("helm upgrade", "kind load", "kind create"))], calls


@check("bug 5: KEDA reaches an external rediss:// Redis: address, password (TriggerAuthentication), TLS, CA")
def _keda_external():
    values = os.path.join(CHART, "ci", "keda-external-redis-values.yaml")
    with open(values) as f:
        v = yaml.safe_load(f)
    url = urllib.parse.urlsplit(v["redis"]["externalUrl"])
    objects = render(*values_args([values]), registry=False)
    resolver = Resolver(objects, external={v["redis"]["caSecret"]["name"]: {"ca.crt": "PEM"}})
    auths = {a["metadata"]["name"]: a for a in of_kind(objects, "TriggerAuthentication")}
    scaled = of_kind(objects, "ScaledObject")
    assert len(scaled) == 4, [s["metadata"]["name"] for s in scaled]
    for so in scaled:
        trigger = so["spec"]["triggers"][0]
        meta = trigger["metadata"]
        assert set(meta) <= KEDA_METADATA, f"unknown to KEDA: {set(meta) - KEDA_METADATA}"
        target = container(named(objects, "Deployment", so["spec"]["scaleTargetRef"]["name"]))
        env = resolver.env(target, "pod-0")
        address = meta.get("address") or env.get(meta.get("addressFromEnv", ""))
        assert address == f"{url.hostname}:{url.port}", f"KEDA would dial {address!r}"
        assert meta.get("enableTLS") == "true", "rediss:// needs TLS"
        assert meta.get("databaseIndex", "0") == url.path.lstrip("/")
        params = {}
        for ref in auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]:
            assert ref["parameter"] in KEDA_AUTH_PARAMETERS, ref
            params[ref["parameter"]] = resolver.secret(ref["name"], ref["key"])
        assert params.get("password") == urllib.parse.unquote(url.password), "KEDA's password"
        assert params.get("ca") == "PEM", "KEDA's CA for the private certificate"
        assert "tls" not in params, "KEDA refuses tls in both the trigger and its authentication"
    # The bundled Redis: its Service, the password from the chart's Secret.
    bundled = render("--set", "serviceDefaults.keda.enabled=true")
    meta = named(bundled, "ScaledObject", "fulfillment-payment")["spec"]["triggers"][0]["metadata"]
    assert meta["address"] == "fulfillment-redis.shop.svc:6379", meta
    named(bundled, "Service", "fulfillment-redis")


@check("bug 6: keda.enabled without KEDA installed keeps replicas (and the HPA) and NOTES.txt warns")
def _keda_needs_keda():
    objects = render("--set", "serviceDefaults.keda.enabled=true", "--set", "services.payment.autoscaling.enabled=true",
                     api_versions=False)
    assert not of_kind(objects, "ScaledObject")
    for d in of_kind(objects, "Deployment"):
        if d["metadata"]["name"] == "fulfillment-payment":
            assert "replicas" not in d["spec"], "the HPA owns payment's replicas"
        else:
            assert d["spec"].get("replicas", 0) >= 2, f"{d['metadata']['name']} lost its replicas"
    assert named(objects, "HorizontalPodAutoscaler", "fulfillment-payment")
    text = notes("-f", DEFAULT_VALUES, "--set", "serviceDefaults.keda.enabled=true")
    assert "WARNING: KEDA scaling is on for inventory, payment, shipping, notification" in text, text
    assert "WARNING: KEDA" not in notes("-f", DEFAULT_VALUES), "no warning when KEDA is not asked for"


@check("bug 7: the image registry is a required choice, and NOTES.txt says how to push there")
def _registry_required():
    err = render_fails(registry=False)
    assert "global.image.registry is required" in err and "scripts/build-images --push" in err, err
    text = notes(*values_args([DEFAULT_VALUES]))
    assert "scripts/build-images --push registry.example.com/fulfillment" in text, text
    kind = render(*values_args([KIND_VALUES]), registry=False)
    for _, spec in pod_specs(kind):
        c = spec["containers"][0]
        if "redis" not in c["image"]:
            assert c["image"].startswith("fulfillment/") and c["imagePullPolicy"] == "Never", c["image"]


@check("bug 8: NOTES.txt with a NodePort gives that port (kind: localhost:30080), never 8080")
def _notes_nodeport():
    text = notes(*values_args([KIND_VALUES]))
    assert "localhost:8080" not in text, text
    assert "http://localhost:30080/orders" in text and "http://localhost:30080/metrics" in text, text
    text = notes(*values_args([DEFAULT_VALUES]))
    assert "port-forward service/f-fulfillment-api 8080:8080" in text and "http://localhost:8080/orders" in text


@check("bug 9: a Redis password with @ / : # % and spaces reaches every process intact")
def _password_escaping():
    for password in ["b@d/pass:w#rd%25 x+", "p@ss", "a:b/c#d%e f", "plain"]:
        objects = render("-f", values_file({"redis": {"password": password}}))
        resolver = Resolver(objects)
        for owner, spec in pod_specs(objects):
            if owner["kind"] == "StatefulSet":
                continue
            url = urllib.parse.urlsplit(resolver.env(spec["containers"][0], "pod-0")["REDIS_URL"])
            who = f"{owner['kind']}/{owner['metadata']['name']}"
            assert (url.scheme, url.hostname, url.port, url.path) == ("redis", "fulfillment-redis", 6379, "/0"), \
                f"{who}: {url}"
            assert urllib.parse.unquote(url.password) == password, f"{who}: {url.password!r}"
        redis = container(named(objects, "StatefulSet", "fulfillment-redis"))
        assert resolver.env(redis, "redis-0")["REDIS_PASSWORD"] == password


@check("bug 10: the bundled Redis is a release with CVE-2025-49844 and CVE-2025-21605 fixed, pinned by digest")
def _redis_patched():
    image = container(named(default, "StatefulSet", "fulfillment-redis"))["image"]
    m = re.match(r"^docker\.io/library/redis:(\d+)\.(\d+)\.(\d+)-alpine@sha256:[0-9a-f]{64}$", image)
    assert m, f"{image}: not a versioned tag pinned by digest"
    version = tuple(int(x) for x in m.groups())
    # The first releases of each line with both fixes (redis security advisories, October 2025).
    fixed = {(7, 2): 11, (7, 4): 6, (8, 0): 4, (8, 2): 2}
    assert version[:2] >= (8, 4) or version[2] >= fixed.get(version[:2], 10**6), f"{image} predates the fixes"
    # The README's short section and the full one in docs/kubernetes.md both name the bundled version.
    for doc in ("README.md", os.path.join("docs", "kubernetes.md")):
        with open(os.path.join(ROOT, doc)) as f:
            text = f.read()
        assert "Supported Redis versions" in text and ".".join(map(str, version)) in text, doc
    with open(os.path.join(ROOT, "compose.yaml")) as f:
        assert image in f.read(), "compose.yaml runs another Redis than the chart"


@check("bug 11: every name fits its limit with long release names and overrides, cut before its suffix")
def _long_names():
    long_release = "a-53-character-release-name-for-the-production-shop-x"
    assert len(long_release) == 53
    for release, extra in ((long_release, []), ("fulfillment", values_args([os.path.join(CHART, "ci", "long-name-values.yaml")])),
                           (long_release, ["--set", "retryWorker.mode=loop", "--set", "nameOverride=fulfillment-x"])):
        objects = render(*extra, release=release)
        names = set()
        for o in objects:
            name = o["metadata"]["name"]
            limit = 52 if o["kind"] in ("CronJob", "StatefulSet") else 63
            assert len(name) <= limit, f"{o['kind']} {name} is {len(name)} characters (at most {limit})"
            assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name), f"{o['kind']} {name}"
            names.add((o["kind"], name))
            for k, v in (o["metadata"].get("labels") or {}).items():
                assert len(str(v)) <= 63, f"label {k}={v}"
        assert len(names) == len(objects), "two objects of one kind share a name"
        for suffix in ("-order", "-redis", "-retry-worker", "-api", "-config", "-secrets"):
            assert any(n.endswith(suffix) for _, n in names), f"no name ends in {suffix}"
        check_references(objects)


@check("bug 12: a rebuild of uncommitted changes gets a new image tag (so it rolls out)")
def _dirty_tag():
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "repo")
        os.makedirs(os.path.join(repo, "scripts"))
        shutil.copy(os.path.join(ROOT, "scripts", "build-images"), os.path.join(repo, "scripts"))
        shutil.copy(os.path.join(ROOT, "Cargo.toml"), repo)
        with open(os.path.join(repo, "main.rs"), "w") as f:
            f.write("fn main() {}\n")
        git = ["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.com"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
            assert run(git + args).returncode == 0
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        stub_commands(bindir, os.path.join(tmp, "calls.log"))
        env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
        env.pop("IMAGE_TAG", None)

        def tag():
            out = subprocess.run([os.path.join(repo, "scripts", "build-images")], capture_output=True,
                                 text=True, env=env, cwd=repo)
            assert out.returncode == 0, out.stderr
            refs = out.stdout.split()
            assert [r.split("/", 1)[1].split(":")[0] for r in refs] == IMAGES, refs
            return refs[0].rsplit(":", 1)[1]

        clean = tag()
        with open(os.path.join(repo, "main.rs"), "a") as f:
            f.write("// a change\n")
        dirty = tag()
        with open(os.path.join(repo, "main.rs"), "a") as f:
            f.write("// another\n")
        dirtier = tag()
        assert clean != dirty != dirtier, f"{clean} / {dirty} / {dirtier}"
        assert "dirty" in dirty and "dirty" not in clean, dirty


# ---------------------------------------------------------------------------------------------
# Scale out: partitioned streams, an external Redis Cluster.

def fulfillment(*args, **env):
    """Runs `<TARGET>/fulfillment` with only these settings in its environment."""
    binary = os.path.join(TARGET, "fulfillment")
    assert os.access(binary, os.X_OK), f"no {binary}: build the workspace first (cargo build), or pass TARGET_DIR"
    out = subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], **env})
    assert out.returncode == 0, f"fulfillment {' '.join(args)}: {out.stderr.strip()}"
    return out.stdout


def partition_streams(stream, partitions, cluster_nodes=None):
    """The event streams `fulfillment partitions --json` names for these settings."""
    env = {"STREAM": stream, "STREAM_PARTITIONS": str(partitions)}
    if cluster_nodes:
        env["REDIS_CLUSTER_NODES"] = cluster_nodes
    return [p["stream"] for p in json.loads(fulfillment("partitions", "--json", **env))]


def cluster_values():
    with open(CLUSTER_VALUES) as f:
        return yaml.safe_load(f)


@check("files/partition-tags.json is what `fulfillment partitions --chart-table 64` prints")
def _partition_table():
    with open(os.path.join(CHART, "files", "partition-tags.json")) as f:
        committed = json.load(f)
    printed = json.loads(fulfillment("partitions", "--chart-table", "64"))
    assert sorted(committed, key=int) == [str(n) for n in range(1, 65)], sorted(committed, key=int)
    assert committed == printed, [n for n in printed if committed.get(n) != printed[n]]


@check("Redis Cluster: the Secret carries the seed list; every pipeline pod (each service, the CronJob"
       " and the loop Deployment, the helm test) gets REDIS_CLUSTER_NODES, STREAM_PARTITIONS and the replica"
       " wait, and no REDIS_URL")
def _cluster_wiring():
    v = cluster_values()
    nodes = v["redis"]["cluster"]["nodes"]
    password = urllib.parse.unquote(urllib.parse.urlsplit(nodes[0]).password)
    assert re.search(r"[@/:#%]", password), "the ci values' password should need escaping"
    for extra in ([], ["--set", "retryWorker.mode=loop"]):
        objects = render("-f", CLUSTER_VALUES, *extra)
        assert not of_kind(objects, "StatefulSet") and not of_kind(objects, "NetworkPolicy")
        resolver = Resolver(objects)
        secret = resolver.secrets["fulfillment-secrets"]
        assert secret["redis-cluster-nodes"] == ",".join(nodes), secret["redis-cluster-nodes"]
        assert secret["redis-password"] == password, "KEDA's password, decoded from the seeds"
        assert "redis-url" not in secret
        pods = []
        for owner, spec in pod_specs(objects):
            who = f"{owner['kind']}/{owner['metadata']['name']}"
            env = resolver.env(spec["containers"][0], "pod-0")
            assert env.get("REDIS_CLUSTER_NODES") == ",".join(nodes), f"{who}: {env.get('REDIS_CLUSTER_NODES')!r}"
            assert "REDIS_URL" not in env, f"{who}: a REDIS_URL beside the seeds is ignored; give none"
            assert (env["STREAM_PARTITIONS"], env["REDIS_WAIT_REPLICAS"], env["REDIS_WAIT_TIMEOUT_MS"]) == \
                ("12", "1", "2000"), who
            pods.append(owner["kind"])
        kinds = sorted(pods)
        assert kinds.count("Deployment") == len(SERVICES) + (1 if extra else 0) and "Pod" in kinds, kinds
        assert ("CronJob" in kinds) != bool(extra), kinds
    # existingSecret: the seeds (and the password, used as is) from its keys; no Secret rendered.
    objects = render("-f", CLUSTER_VALUES, "--set", "existingSecret=shop-redis")
    assert not of_kind(objects, "Secret")
    for owner, spec in pod_specs(objects):
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["REDIS_CLUSTER_NODES"]["valueFrom"]["secretKeyRef"] == {
            "name": "shop-redis", "key": "redis-cluster-nodes"}, owner["metadata"]["name"]
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "shop-redis", "key": "redis-password", "optional": True}, owner["metadata"]["name"]
        assert "REDIS_URL" not in env
    # Seeds only in existingSecret (no KEDA): renders, and NOTES.txt names the Secret's key.
    bare = ["-f", DEFAULT_VALUES, "--set", "redis.enabled=false", "--set", "redis.cluster.enabled=true",
            "--set", "existingSecret=shop-redis"]
    render(*bare[2:])
    assert "redis-cluster-nodes of the Secret shop-redis" in notes(*bare)
    # The defaults: one Redis, one partition, no wait, and nothing of the cluster.
    config = config_of(default)
    assert (config["STREAM_PARTITIONS"], config["REDIS_WAIT_REPLICAS"], config["REDIS_WAIT_TIMEOUT_MS"]) == \
        ("1", "0", "2000"), config
    for _, spec in pod_specs(default):
        assert "REDIS_CLUSTER_NODES" not in {e["name"] for e in spec["containers"][0].get("env", [])}
    text = notes("-f", CLUSTER_VALUES)
    assert "Redis Cluster: every process" in text and "12 partition streams" in text, text
    assert "Redis Cluster: every process" not in notes("-f", DEFAULT_VALUES)


@check("Redis Cluster: a combination that cannot work fails the render with a message that says why")
def _cluster_refused():
    cluster = ["--set", "redis.cluster.enabled=true", "--set", "redis.cluster.nodes[0]=redis://10.0.0.1:6379"]
    external = ["--set", "redis.enabled=false"]
    for args, needle in [
        (cluster, "needs redis.enabled=false"),
        (cluster + external + ["--set", "redis.externalUrl=redis://r:6379"], "exclude each other"),
        (["--set", "redis.cluster.enabled=true"] + external, "needs redis.cluster.nodes"),
        (external + ["--set", "redis.externalUrl=redis://r:6379", "--set", "redis.cluster.nodes[0]=redis://a:6379"],
         "redis.cluster.enabled is false"),
        (cluster + external + ["--set", "redis.cluster.nodes[1]=rediss://10.0.0.2:6379"], "mixes redis:// and rediss://"),
        (external + ["--set", "redis.cluster.enabled=true", "--set", "redis.cluster.nodes[0]=redis://:a@n1:6379",
                     "--set", "redis.cluster.nodes[1]=redis://:b@n2:6379"], "different passwords"),
        (external + ["--set", "redis.cluster.enabled=true", "--set", "existingSecret=shop-redis",
                     "--set", "serviceDefaults.keda.enabled=true"], "KEDA needs to know where the Redis Cluster"),
        (["--set", "config.redisWaitReplicas=1"], "the bundled Redis has no replicas"),
    ]:
        err = render_fails(*args)
        assert needle in err, f"{args}: {err.strip()}"


@check("KEDA: one trigger per partition stream per consumer service, named as `fulfillment partitions"
       " --json` names them; redis-cluster-streams on the cluster values (seeds, password, TLS for rediss)")
def _keda_partitions():
    v = cluster_values()
    nodes = v["redis"]["cluster"]["nodes"]
    seeds = [urllib.parse.urlsplit(n) for n in nodes]
    objects = render("-f", CLUSTER_VALUES)
    resolver = Resolver(objects)
    auths = {a["metadata"]["name"]: a for a in of_kind(objects, "TriggerAuthentication")}
    expected = partition_streams(v["config"].get("stream", "order_events"), v["config"]["streamPartitions"],
                                 ",".join(nodes))
    assert len(expected) == 12 and all(s.startswith("order_events:{") for s in expected), expected
    scaled = of_kind(objects, "ScaledObject")
    assert sorted(so["spec"]["scaleTargetRef"]["name"] for so in scaled) == \
        sorted(f"fulfillment-{s}" for s in SERVICES if s != "order"), scaled
    for so in scaled:
        service = so["spec"]["scaleTargetRef"]["name"].removeprefix("fulfillment-")
        triggers = so["spec"]["triggers"]
        assert [t["type"] for t in triggers] == ["redis-cluster-streams"] * len(expected), [t["type"] for t in triggers]
        assert [t["metadata"]["stream"] for t in triggers] == expected, [t["metadata"]["stream"] for t in triggers]
        for t in triggers:
            meta = t["metadata"]
            assert set(meta) <= KEDA_CLUSTER_METADATA, f"unknown to KEDA: {set(meta) - KEDA_CLUSTER_METADATA}"
            assert meta["addresses"] == ",".join(f"{u.hostname}:{u.port or 6379}" for u in seeds), meta["addresses"]
            assert meta["consumerGroup"] == f"{service}_group"
            assert {"lagCount", "activationLagCount"} <= set(meta) and "enableTLS" not in meta
            refs = auths[t["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
            params = {r["parameter"]: resolver.secret(r["name"], r["key"]) for r in refs}
            assert set(params) <= KEDA_AUTH_PARAMETERS
            assert params["password"] == urllib.parse.unquote(seeds[0].password), "KEDA's password"
    # rediss:// seeds with a private CA: TLS on, the CA through the TriggerAuthentication.
    tls = dict(v, redis=dict(v["redis"], cluster={"enabled": True, "nodes": [n.replace("redis://", "rediss://") for n in nodes]},
                              caSecret={"name": "cluster-ca", "key": "ca.crt"}))
    objects = render("-f", values_file(tls))
    resolver = Resolver(objects, external={"cluster-ca": {"ca.crt": "PEM"}})
    for so in of_kind(objects, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            assert t["metadata"]["enableTLS"] == "true", t["metadata"]
            refs = named(objects, "TriggerAuthentication", t["authenticationRef"]["name"])["spec"]["secretTargetRef"]
            assert {r["parameter"]: resolver.secret(r["name"], r["key"]) for r in refs}["ca"] == "PEM"
    # Other partition counts, on a cluster (tagged even alone) and on one Redis (tagged from 2 on).
    for n in (1, 2, 5, 64):
        cluster = render("-f", CLUSTER_VALUES, "--set", f"config.streamPartitions={n}")
        triggers = named(cluster, "ScaledObject", "fulfillment-payment")["spec"]["triggers"]
        assert [t["metadata"]["stream"] for t in triggers] == partition_streams("order_events", n, ",".join(nodes)), n
        one = render("--set", "serviceDefaults.keda.enabled=true", "--set", f"config.streamPartitions={n}",
                     "--set", "config.stream=shop_events")
        triggers = named(one, "ScaledObject", "fulfillment-payment")["spec"]["triggers"]
        assert [t["type"] for t in triggers] == ["redis-streams"] * n
        assert [t["metadata"]["stream"] for t in triggers] == partition_streams("shop_events", n), n
        assert all(t["metadata"]["address"] == "fulfillment-redis.shop.svc:6379" for t in triggers)
    single = render("--set", "serviceDefaults.keda.enabled=true")
    triggers = named(single, "ScaledObject", "fulfillment-payment")["spec"]["triggers"]
    assert [(t["type"], t["metadata"]["stream"]) for t in triggers] == [("redis-streams", "order_events")]


# ---------------------------------------------------------------------------------------------
# What the best charts have.

@check("Redis: maxmemory at most half the memory limit (AOF rewrite headroom), a headless governing Service")
def _redis_headroom():
    units = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 1024**2, "g": 10**9, "gb": 1024**3}
    kube = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 10**6, "G": 10**9}
    for objects in (default, render("--set", "redis.maxmemory=2gb", "--set", "redis.resources.limits.memory=4Gi")):
        conf = next(cm["data"]["redis.conf"] for cm in of_kind(objects, "ConfigMap") if "redis.conf" in cm.get("data", {}))
        n, u = re.search(r"^maxmemory (\d+)([a-z]*)$", conf, re.M).groups()
        maxmemory = int(n) * units[u]
        limit = container(of_kind(objects, "StatefulSet")[0])["resources"]["limits"]["memory"]
        ln, lu = re.match(r"^(\d+)([A-Za-z]*)$", limit).groups()
        assert maxmemory * 2 <= int(ln) * kube[lu], f"maxmemory {n}{u} in a {limit} limit"
        assert "aof-rewrite-incremental-fsync yes" in conf
    sts = of_kind(default, "StatefulSet")[0]
    headless = named(default, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["metadata"]["name"] != "fulfillment-redis", "clients keep the ClusterIP Service"


@check("scheduling: soft anti-affinity and zone spread by default, priorityClassName, preStop before SIGTERM")
def _scheduling():
    for d in of_kind(default, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        selector = d["spec"]["selector"]["matchLabels"]
        term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        spread = spec["topologySpreadConstraints"][0]
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway" and spread["labelSelector"]["matchLabels"] == selector
        c = spec["containers"][0]
        assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0, "distroless: the kubelet must sleep"
        grace_ms = (c["lifecycle"]["preStop"]["sleep"]["seconds"] * 1000 + int(config_of(default)["SHUTDOWN_GRACE_MS"])
                    + int(config_of(default)["BLOCK_MS"]))
        assert spec["terminationGracePeriodSeconds"] * 1000 > grace_ms, d["metadata"]["name"]
    hard = render("--set", "global.podAntiAffinityPreset=hard", "--set", "global.priorityClassName=critical")
    spec = named(hard, "Deployment", "fulfillment-payment")["spec"]["template"]["spec"]
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert all(s["priorityClassName"] == "critical" for _, s in pod_specs(hard))
    err = render_fails("--set", "serviceDefaults.terminationGracePeriodSeconds=20")
    assert "terminationGracePeriodSeconds" in err, err
    old = render("--kube-version", "1.29.0")
    assert all("lifecycle" not in container(d) for d in of_kind(old, "Deployment")), "sleep needs Kubernetes 1.30"


@check("extension points: ServiceAccount, podLabels, extraVolumes, extraObjects, Ingress, HTTPRoute")
def _extension_points():
    objects = render("-f", os.path.join(CHART, "ci", "monitoring-values.yaml"))
    sa = of_kind(objects, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    inventory = pod_template(named(objects, "Deployment", "fulfillment-inventory"))["metadata"]["labels"]
    payment = pod_template(named(objects, "Deployment", "fulfillment-payment"))["metadata"]["labels"]
    assert inventory["tier"] == "backend" and "tier" not in payment and payment["team"] == "shop"
    assert named(objects, "PriorityClass", "fulfillment-critical")["description"] == "fulfillment: the order pipeline"
    ingress = of_kind(objects, "Ingress")[0]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "fulfillment-api"
    route = of_kind(objects, "HTTPRoute")[0]
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "fulfillment-api"
    without = ["--set", "httpRoute.enabled=true", "--set", "httpRoute.parentRefs[0].name=gw"]
    assert not of_kind(render(*without, api_versions=False), "HTTPRoute")
    assert "no HTTPRoute was made" in notes("-f", DEFAULT_VALUES, *without)
    own = render("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=shop-sa")
    assert not of_kind(own, "ServiceAccount") and all(s["serviceAccountName"] == "shop-sa" for _, s in pod_specs(own))
    external = render("-f", os.path.join(CHART, "ci", "external-redis-values.yaml"))
    for owner, spec in pod_specs(external):
        mounts = {m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
        assert "/etc/ssl/redis-ca" in mounts, f"{owner['metadata']['name']} lacks the CA mount"


@check("checksum/secret: one value across the release's pods, changed by a rotated token or password;"
       " API_TOKEN from the Secret")
def _checksum_secret():
    def sums(objects):
        return {pod_template(o)["metadata"]["annotations"]["checksum/secret"]
                for o in objects if o["kind"] in ("Deployment", "StatefulSet", "CronJob")}
    a = sums(render("--set", "adminToken=one", "--set", "redis.password=pw"))
    assert len(a) == 1, a
    assert a == sums(render("--set", "adminToken=one", "--set", "redis.password=pw"))
    assert a != sums(render("--set", "adminToken=two", "--set", "redis.password=pw")), "a new token must roll the pods"
    assert a != sums(render("--set", "adminToken=one", "--set", "redis.password=pw2"))
    assert a != sums(render("--set", "adminToken=one", "--set", "redis.password=pw", "--set", "apiToken=callers"))
    tokens = render("--set", "apiToken=callers")
    secret = of_kind(tokens, "Secret")[0]["data"]
    assert "api-token" in secret and "admin-token" not in secret
    for _, spec in pod_specs(tokens):
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        if "REDIS_URL" in env:
            assert env["API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
                "name": "fulfillment-secrets", "key": "api-token", "optional": True}


RULES = os.path.join(CHART, "files", "alerts", "fulfillment-rules.yml")


@check("alerts: namespace kept, up, oldest pending, API 5xx, Redis memory; runbooks; DLQ names its stream")
def _alerts():
    with open(RULES) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    for needed in ("FulfillmentTargetDown", "FulfillmentOldestPendingTooOld", "FulfillmentApiErrors",
                   "FulfillmentRedisMemoryHigh", "FulfillmentDeadLetterQueueGrowing", "FulfillmentRetryWorkerStalled"):
        assert needed in names, f"no {needed}"
    with open(os.path.join(ROOT, "docs", "runbooks.md")) as f:
        runbooks = f.read()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbooks, re.M)}
    for r in rules:
        for agg in re.findall(r"\b(?:max|min|sum|avg|count) by \(([^)]*)\)", r["expr"]):
            assert "namespace" in agg, f"{r['alert']}: by ({agg}) drops namespace"
        url = r["annotations"].get("runbook_url", "")
        assert url.startswith("https://github.com/fulfillment/fulfillment/blob/main/docs/runbooks.md#"), r["alert"]
        assert url.split("#")[1] in anchors, f"{r['alert']}: no section #{url.split('#')[1]} in docs/runbooks.md"
        assert r["labels"]["severity"] in ("warning", "critical")
    objects = render("-f", os.path.join(CHART, "ci", "monitoring-values.yaml"), "--set", "config.dlqStream=shop:dead",
                     "--set", "metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/runbooks")
    rendered = [r for g in of_kind(objects, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]]
    dlq = next(r for r in rendered if r["alert"] == "FulfillmentDeadLetterQueueGrowing")
    assert "shop:dead" in dlq["annotations"]["summary"], dlq["annotations"]
    assert all(r["annotations"]["runbook_url"].startswith("https://wiki.example.com/runbooks#") for r in rendered)


@check("dashboard: namespace and pod variables in every query; oldest pending, API latency, retry worker")
def _dashboard():
    for path in glob.glob(os.path.join(CHART, "files", "dashboards", "*.json")):
        with open(path) as f:
            d = json.load(f)
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert {"namespace", "pod"} <= set(variables), list(variables)
        exprs = [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
        for title, expr in exprs:
            for selector in re.findall(r"fulfillment_\w+(\{[^}]*\})?", expr):
                assert 'namespace=~"$namespace' in selector and 'pod=~"$pod' in selector, f"{title}: {expr}"
        text = " ".join(e for _, e in exprs)
        for metric in ("fulfillment_stream_oldest_pending_seconds", "fulfillment_http_request_duration_seconds_bucket",
                       "fulfillment_retry_worker_last_run_timestamp_seconds", "fulfillment_redis_used_memory_bytes"):
            assert metric in text, f"no panel reads {metric}"


@check("Dockerfile: .dockerignore leaves out deploy/, docs/, *.md; builder pinned by digest; OCI labels")
def _dockerfile():
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert {"deploy/", "docs/", "**/*.md"} <= ignored, ignored
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    assert re.search(r"^ARG RUST_IMAGE=rust:[0-9.]+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M), "rust by digest"
    for label in ("source", "version", "revision", "licenses", "title"):
        assert f"org.opencontainers.image.{label}=" in text, label
    out = run(["hadolint", os.path.join(ROOT, "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr


@check("compose.yaml: valid Compose Specification; Redis and each service in its own container")
def _compose():
    import jsonschema
    with open(os.path.join(ROOT, ".tools", "compose", "compose.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(ROOT, "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    assert not errors, errors
    bad = json.loads(json.dumps(compose))
    bad["services"]["order"]["imagee"] = "typo"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad)), "the schema must refuse unknown keys"
    services = compose["services"]
    for image in IMAGES:
        users = [n for n, s in services.items() if f"/{image}:" in s.get("image", "")]
        assert len(users) == 1, f"{image}: {users}"
    assert services["retry-worker"]["command"] == ["--loop"]
    assert services["order"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert all(s.get("read_only") for n, s in services.items() if n != "redis")


@check("the chart README is generated from values.yaml's comments (helm-docs format) and up to date")
def _chart_readme():
    out = run([sys.executable, os.path.join(ROOT, "tests", "chart", "helm_docs.py"), "--check"])
    assert out.returncode == 0, out.stdout + out.stderr


@check("values-external-redis.yaml: renders, and documents noeviction, TLS CA, existingSecret")
def _external_redis_example():
    path = os.path.join(CHART, "values-external-redis.yaml")
    objects = render("-f", path)
    assert not of_kind(objects, "StatefulSet")
    with open(path) as f:
        text = f.read()
    for needle in ("noeviction", "ElastiCache", "Memorystore", "SSL_CERT_FILE", "extraVolumes", "existingSecret", "lookup"):
        assert needle in text, needle


# ---------------------------------------------------------------------------------------------
# Email (issue 30): the notification service's relay and its password from a Secret, Mailpit.

def env_of(objects, component):
    """The env entries (by name) of the Deployment of this component."""
    (d,) = [o for o in of_kind(objects, "Deployment")
            if o["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return d, {e["name"]: e for e in container(d).get("env", [])}


def mail_env_only_on_notification(objects):
    """The mail settings go to the notification service and, the same, to the retry worker (which
    handles the notifications it retries); to nothing else."""
    mail = {}
    for owner, spec in pod_specs(objects):
        component = owner["metadata"]["labels"].get("app.kubernetes.io/component")
        env = [e for c in spec["containers"] for e in c.get("env", []) if e["name"] in MAIL_ENV]
        if component in ("notification", "retry-worker"):
            mail[component] = env
            continue
        assert not env, f"{owner['kind']}/{owner['metadata']['name']} gets {[e['name'] for e in env]}"
    assert mail.get("notification") == mail.get("retry-worker"), mail


def of_mailpit(objects):
    return [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "mailpit"]


@check("mail: only the notification Deployment gets SMTP_URL, SMTP_PASSWORD (from a Secret: the chart's,"
       " or existingSecret's), MAIL_FROM and SMTP_SEND_LEASE_MS; what cannot work is refused")
def _mail_env():
    # The defaults: no relay (mail only logged), the sender, a lease below the retry idle time.
    _, env = env_of(default, "notification")
    assert "SMTP_URL" not in env and "SMTP_PASSWORD" not in env, sorted(env)
    assert env["MAIL_FROM"]["value"] == "Fulfillment <orders@fulfillment.localhost>", env["MAIL_FROM"]
    assert env["SMTP_SEND_LEASE_MS"]["value"] == "45000", env["SMTP_SEND_LEASE_MS"]
    assert int(env["SMTP_SEND_LEASE_MS"]["value"]) < int(config_of(default)["RETRY_MIN_IDLE_MS"])
    mail_env_only_on_notification(default)
    # A relay and its password: both in the chart's Secret (the URL may carry a password too).
    password = "p@ss w:rd/#%25 x+"
    values = {"mail": {"smtpUrl": RELAY, "smtpPassword": password, "from": "Shop <orders@shop.example>",
                       "sendLeaseMs": 40000}}
    objects = render("-f", values_file(values))
    d, env = env_of(objects, "notification")
    assert env["SMTP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "fulfillment-secrets", "key": "smtp-url"}
    assert env["SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "fulfillment-secrets", "key": "smtp-password"}
    resolved = Resolver(objects).env(container(d), "notification-0")
    assert (resolved["SMTP_URL"], resolved["SMTP_PASSWORD"]) == (RELAY, password), resolved
    assert (resolved["MAIL_FROM"], resolved["SMTP_SEND_LEASE_MS"]) == ("Shop <orders@shop.example>", "40000")
    mail_env_only_on_notification(objects)
    check_references(objects)
    # A rotated relay password rolls the pods (checksum/secret).
    rotated = render("-f", values_file({"mail": dict(values["mail"], smtpPassword="another")}))
    sums = [pod_template(o)["metadata"]["annotations"]["checksum/secret"]
            for o in (d, env_of(rotated, "notification")[0])]
    assert sums[0] != sums[1], "a new relay password must roll the notification pods"
    # existingSecret: the password from its smtp-password key (optional), the URL as it is.
    objects = render("-f", values_file({"existingSecret": "shop-secrets", "mail": {"smtpUrl": RELAY}}))
    assert not of_kind(objects, "Secret")
    d, env = env_of(objects, "notification")
    assert env["SMTP_URL"] == {"name": "SMTP_URL", "value": RELAY}, env["SMTP_URL"]
    assert env["SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "shop-secrets", "key": "smtp-password", "optional": True}, env["SMTP_PASSWORD"]
    secrets = {"shop-secrets": {"redis-password": "r", "smtp-password": password}}
    assert Resolver(objects, external=secrets).env(container(d), "notification-0")["SMTP_PASSWORD"] == password
    mail_env_only_on_notification(objects)
    # Refused, with a message that says why.
    for values, needle in [
        ({"existingSecret": "shop-secrets", "mail": {"smtpUrl": "smtp://orders:pw@relay:587"}},
         "that Secret's smtp-password key"),
        ({"mail": {"smtpPassword": "pw"}}, "mail.smtpUrl is not"),
        ({"mail": {"smtpUrl": "http://relay:25"}}, "smtpUrl"),
        ({"mail": {"sendLeaseMs": 50}}, "sendLeaseMs"),
        ({"mail": {"from": "Shop <a@b.example>\nBcc: c@d.example"}}, "from"),
        ({"mail": {"form": "a@b.example"}}, "form"),
        ({"mailpit": {"enabeld": True}}, "enabeld"),
        ({"mailpit": {"image": {"digest": "latest"}}}, "digest"),
    ]:
        err = render_fails("-f", values_file(values))
        assert needle in err, f"{values}: {err.strip()}"


@check("Mailpit: rendered only when enabled (up.sh's values-mail.yaml, never values-kind.yaml alone);"
       " pinned by digest, locked down, probed; the notification service sends to it unless a relay is set")
def _mailpit():
    assert not of_mailpit(default), "Mailpit is off by default"
    kind = render(*values_args([KIND_VALUES]), registry=False)
    assert not of_mailpit(kind), "values-kind.yaml alone renders Mailpit: kube_play.py and the boot test run it offline"
    for files in ([KIND_VALUES, KIND_MAIL_VALUES], [KIND_VALUES, KIND_MAIL_VALUES, DEMO_VALUES]):
        rendered = render(*values_args(files), registry=False)
        found = sorted((o["kind"], o["metadata"]["name"]) for o in of_mailpit(rendered))
        assert found == [("Deployment", "fulfillment-mailpit"), ("Service", "fulfillment-mailpit")], found
    objects = render("--set", "mailpit.enabled=true")
    service = named(objects, "Service", "fulfillment-mailpit")
    assert sorted((p["name"], p["port"]) for p in service["spec"]["ports"]) == [("http", 8025), ("smtp", 1025)]
    d = named(objects, "Deployment", "fulfillment-mailpit")
    assert d["spec"]["replicas"] == 1
    c = container(d)
    assert re.match(r"^docker\.io/axllent/mailpit:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$", c["image"]), c["image"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"smtp": 1025, "http": 8025}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    spec = pod_template(d)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and c["resources"]["limits"]["memory"]
    tmp = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/tmp"]
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[tmp], "the mailbox needs a writable /tmp"
    assert "fulfillment.io/redis-client" not in pod_template(d)["metadata"]["labels"], "Mailpit needs no Redis"
    _, env = env_of(objects, "notification")
    assert env["SMTP_URL"] == {"name": "SMTP_URL", "value": "smtp://fulfillment-mailpit:1025"}, env.get("SMTP_URL")
    assert "SMTP_PASSWORD" not in env, "Mailpit asks for no login (a client that offers one is refused)"
    mail_env_only_on_notification(objects)
    check_references(objects)
    # A relay set beside it takes the mail.
    both = render("-f", values_file({"mail": {"smtpUrl": RELAY}, "mailpit": {"enabled": True}}))
    d2, _ = env_of(both, "notification")
    assert Resolver(both).env(container(d2), "notification-0")["SMTP_URL"] == RELAY
    # Its name fits with a long release name, and the notification service is pointed at it.
    objects = render("--set", "mailpit.enabled=true", release="a-53-character-release-name-for-the-production-shop-x")
    (d,) = [o for o in of_mailpit(objects) if o["kind"] == "Deployment"]
    name = d["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-mailpit"), name
    assert env_of(objects, "notification")[1]["SMTP_URL"]["value"] == f"smtp://{name}:1025"
    # compose.yaml runs the same pinned image.
    with open(os.path.join(ROOT, "compose.yaml")) as f:
        assert c["image"] in f.read(), "compose.yaml runs another Mailpit than the chart"


@check("NOTES.txt says where the mail goes (Mailpit's web UI through a port-forward, the relay without its"
       " password, or only logged) and warns of a send lease not below the retry idle time")
def _mail_notes():
    text = notes("-f", DEFAULT_VALUES, "--set", "mailpit.enabled=true")
    assert "port-forward service/f-fulfillment-mailpit 8025:8025" in text and "http://localhost:8025" in text, text
    assert "only logged" not in text
    text = notes("-f", DEFAULT_VALUES, "-f", values_file({"mail": {
        "smtpUrl": "smtps://orders:in-url-s3cret@smtp.example.com:465", "smtpPassword": "s3cret-value"}}))
    assert "relay smtps://smtp.example.com:465" in text and "Its password: mail.smtpPassword" in text, text
    assert "s3cret" not in text and "8025" not in text, text
    text = notes("-f", DEFAULT_VALUES, "-f",
                 values_file({"existingSecret": "shop-secrets", "mail": {"smtpUrl": RELAY}}))
    assert "the key smtp-password of the Secret shop-secrets" in text, text
    text = notes("-f", DEFAULT_VALUES)
    assert "only logged" in text and "mailpit.enabled=true" in text, text
    assert "WARNING: mail.sendLeaseMs" not in text
    assert "WARNING: mail.sendLeaseMs" not in notes("-f", DEFAULT_VALUES, "-f", DEMO_VALUES), \
        "the demo's lease ends before its fast retries give up"
    assert "WARNING: mail.sendLeaseMs (45000) is not below retryWorker.minIdleMs (2000)" in notes(
        "-f", DEFAULT_VALUES, "-f", DEMO_VALUES, "--set", "mail.sendLeaseMs=45000")


@check("up.sh installs Mailpit (values-mail.yaml) and says how to open its web UI; --no-mail leaves it out")
def _up_mail():
    for args, wanted in (((), True), (("--no-mail",), False)):
        out, calls = run_up(*args)
        assert out.returncode == 0, out.stderr
        install = [c for c in calls if c.startswith("helm upgrade --install fulfillment ")]
        assert len(install) == 1, calls
        assert ("-f deploy/kind/values-mail.yaml" in install[0]) == wanted, install[0]
        assert ("port-forward service/fulfillment-mailpit 8025:8025" in out.stdout) == wanted, out.stdout


@check("compose.yaml: Mailpit only with the profile mail (a plain up pulls nothing more), the notification"
       " service's SMTP_URL empty unless set, the file says how to turn it on")
def _compose_mail():
    with open(os.path.join(ROOT, "compose.yaml")) as f:
        text = f.read()
    services = yaml.safe_load(text)["services"]
    mailpit = services["mailpit"]
    assert mailpit["profiles"] == ["mail"], mailpit.get("profiles")
    assert mailpit["read_only"] and mailpit["user"] == "65532:65532" and mailpit["cap_drop"] == ["ALL"]
    assert "/tmp" in mailpit["tmpfs"], "the mailbox needs a writable /tmp"
    env = services["notification"]["environment"]
    assert env["SMTP_URL"] == "${SMTP_URL:-}" and env["SMTP_PASSWORD"] == "${SMTP_PASSWORD:-}", env
    assert env["REDIS_URL"] == services["order"]["environment"]["REDIS_URL"], "the pipeline's settings kept"
    retry = services["retry-worker"]["environment"]
    for name in ("SMTP_URL", "SMTP_PASSWORD", "MAIL_FROM"):
        assert retry[name] == env[name], f"the retry worker sends what it retries: {name}"
    for name, service in services.items():
        if name not in ("notification", "retry-worker"):
            assert not MAIL_ENV & set(service.get("environment") or {}), name
    assert "SMTP_URL=smtp://mailpit:1025 docker compose --profile mail up -d" in text


@check("shellcheck: every script")
def _shellcheck():
    scripts = sorted(glob.glob(os.path.join(ROOT, "scripts", "*")) +
                     glob.glob(os.path.join(ROOT, "deploy", "kind", "*.sh")) +
                     [os.path.join(ROOT, ".ci", "run")])
    out = run(["shellcheck", "-x"] + scripts, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


passed = sum(1 for _, e in results if e is None)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
