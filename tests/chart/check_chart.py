#!/usr/bin/env python3
"""Checks the Helm chart, the Dockerfile and the scripts without a cluster.

- `helm lint --strict` with every ci/*-values.yaml, the demo values and the kind values;
- `helm template` of each (with the optional API versions) through `kubernetes-validate --strict`;
- assertions on the rendered objects: replicas knob, autoscaling, KEDA, CronJob schedule and policy,
  security contexts, labels and selectors, probes, the test hook, dashboards, the rules, the
  schema refusing typos, config checksums, the NetworkPolicy, the Secret;
- hadolint on the Dockerfile, shellcheck on every script.

Run with the tools of scripts/install-test-tools first on the PATH (helm, kubernetes-validate,
hadolint, shellcheck, and a python with PyYAML). Prints one line per check and `N passed, N failed`.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "fulfillment")
API_VERSIONS = ["--api-versions", "monitoring.coreos.com/v1", "--api-versions", "keda.sh/v1alpha1"]
VALUE_FILES = sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml"))) + [
    os.path.join(CHART, "values-demo.yaml"),
    os.path.join(ROOT, "deploy", "kind", "values-kind.yaml"),
]
SERVICES = ["order", "inventory", "payment", "shipping", "notification"]
REQUIRED_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                   "app.kubernetes.io/part-of", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "helm.sh/chart"]

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


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def render(*args, release="fulfillment", api_versions=True):
    cmd = ["helm", "template", release, CHART, "--namespace", "shop"]
    cmd += API_VERSIONS if api_versions else []
    out = run(cmd + list(args))
    if out.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name):
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert found, f"no {kind} {name}"
    return found[0]


def pod_specs(objects):
    """(owner, pod spec) for every pod the chart makes."""
    for o in objects:
        kind = o["kind"]
        if kind in ("Deployment", "StatefulSet"):
            yield o, o["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield o, o["spec"]


def pod_labels(o):
    if o["kind"] == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    if o["kind"] == "Pod":
        return o["metadata"]["labels"]
    return o["spec"]["template"]["metadata"]["labels"]


for values in VALUE_FILES:
    label = os.path.relpath(values, ROOT)

    @check(f"helm lint --strict -f {label}")
    def _lint(values=values):
        out = run(["helm", "lint", "--strict", CHART, "-f", values])
        assert out.returncode == 0, out.stdout + out.stderr

    @check(f"kubernetes-validate --strict: {label}")
    def _validate(values=values):
        out = run(["helm", "template", "fulfillment", CHART, "-f", values] + API_VERSIONS)
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
            assert "monitoring.coreos.com" in line or "keda.sh" in line, line


default = render()


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
                 "--set", "config.shutdownGraceMs=1200000")
    data = of_kind(big, "ConfigMap")
    env = {k: v for cm in data for k, v in (cm.get("data") or {}).items()}
    assert env["ORDER_RETENTION_MS"] == "2592000000", env["ORDER_RETENTION_MS"]
    assert env["STREAM_RETENTION_MS"] == "3600000", env["STREAM_RETENTION_MS"]
    assert env["SHUTDOWN_GRACE_MS"] == "1200000", env["SHUTDOWN_GRACE_MS"]
    for name in ("BATCH_SIZE", "BLOCK_MS", "MAX_IN_FLIGHT", "RETRY_MIN_IDLE_MS", "RETRY_MAX_RETRIES",
                 "RETRY_BATCH_SIZE", "CONSUMER_GONE_AFTER_MS", "PAYMENT_MAX_ATTEMPTS",
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
    no_api = render("--set", "services.inventory.keda.enabled=true", api_versions=False)
    assert not of_kind(no_api, "ScaledObject"), "ScaledObject rendered without keda.sh/v1alpha1"


@check("the retry worker is a CronJob: every minute, Forbid, deadlines, history, 60 s idle, 3 retries;"
       " each replica its own consumer")
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
    config = named(default, "ConfigMap", "fulfillment-config")["data"]
    assert config["RETRY_MIN_IDLE_MS"] == "60000" and config["RETRY_MAX_RETRIES"] == "3"
    tuned = render("--set", "retryWorker.schedule=*/5 * * * *", "--set", "retryWorker.minIdleMs=30000",
                   "--set", "retryWorker.maxRetries=5")
    assert of_kind(tuned, "CronJob")[0]["spec"]["schedule"] == "*/5 * * * *"
    data = named(tuned, "ConfigMap", "fulfillment-config")["data"]
    assert data["RETRY_MIN_IDLE_MS"] == "30000" and data["RETRY_MAX_RETRIES"] == "5"
    env = {e["name"]: e for e in job["template"]["spec"]["containers"][0]["env"]}
    assert env["CONSUMER_NAME"]["value"] == "retry-worker", "one consumer name across passes"
    for d in of_kind(default, "Deployment"):
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CONSUMER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    long = render(release="a-very-long-release-name-for-a-production-shop-x")
    name = of_kind(long, "CronJob")[0]["metadata"]["name"]
    assert len(name) <= 52, f"{name} is {len(name)} characters"


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


@check("probes on /healthz and /readyz, rolling config checksum")
def _probes():
    for d in of_kind(default, "Deployment"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, d["metadata"]["name"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, d["metadata"]["name"]
        assert c["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
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
    container = pod["spec"]["containers"][0]
    assert container["image"].endswith("/fulfillment-e2e:0.1.0"), container["image"]
    assert "http://fulfillment-api:8080" in container["args"]
    names = [e["name"] for e in container["env"]]
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
        (["--set", "apiService.nodePort=80"], "nodePort"),
    ]:
        out = run(["helm", "template", "x", CHART] + args)
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
        labels = pod_labels(owner)
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
    env = named(external, "Deployment", "fulfillment-inventory")["spec"]["template"]["spec"]["containers"][0]["env"]
    redis_url = [e for e in env if e["name"] == "REDIS_URL"][0]
    assert redis_url["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    out = run(["helm", "template", "x", CHART, "--set", "redis.enabled=false"])
    assert out.returncode != 0 and "externalUrl" in out.stderr


@check("hadolint: the Dockerfile")
def _hadolint():
    out = run(["hadolint", os.path.join(ROOT, "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr


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
