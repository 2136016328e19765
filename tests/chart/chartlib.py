"""What the chart checks and the boot test share: where things are, rendering, and resolving a
container's environment the way the kubelet would (ConfigMaps, Secrets, field references,
$(VAR) expansion)."""

import base64
import glob
import os
import re
import subprocess

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "fulfillment")
KIND_VALUES = os.path.join(ROOT, "deploy", "kind", "values-kind.yaml")
DEMO_VALUES = os.path.join(CHART, "values-demo.yaml")
# The optional APIs a real cluster may serve: the Prometheus Operator, KEDA, the Gateway API.
API_VERSIONS = ["--api-versions", "monitoring.coreos.com/v1", "--api-versions", "keda.sh/v1alpha1",
                "--api-versions", "gateway.networking.k8s.io/v1"]
# Every rendered combination CI checks and the boot test boots: each ci/*-values.yaml alone, the kind
# values, and the demo as deploy/kind/up.sh --demo --no-mail installs it (the kind values, then the
# demo values). up.sh's Mailpit (deploy/kind/values-mail.yaml) is checked by check_chart.py alone:
# its image is not a binary of this workspace.
VALUE_SETS = [(os.path.relpath(f, ROOT), [f]) for f in sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml")))]
VALUE_SETS += [
    ("deploy/kind/values-kind.yaml", [KIND_VALUES]),
    ("deploy/kind/values-kind.yaml + values-demo.yaml (up.sh --demo --no-mail)", [KIND_VALUES, DEMO_VALUES]),
]
REGISTRY = ["--set", "global.image.registry=registry.example.com/fulfillment"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def values_args(files):
    args = []
    for f in files:
        args += ["-f", f]
    return args


def helm_template(*args, release="fulfillment", namespace="shop", api_versions=True):
    """(returncode, objects or stderr) of `helm template`."""
    cmd = ["helm", "template", release, CHART, "--namespace", namespace]
    cmd += API_VERSIONS if api_versions else []
    out = run(cmd + list(args))
    if out.returncode != 0:
        return out.returncode, out.stderr
    return 0, [d for d in yaml.safe_load_all(out.stdout) if d]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name):
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert found, f"no {kind} {name} in {[o['metadata']['name'] for o in of_kind(objects, kind)]}"
    return found[0]


def pod_template(o):
    """The pod template (metadata and spec) of a workload, or the Pod itself."""
    if o["kind"] == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]
    if o["kind"] == "Pod":
        return o
    return o["spec"]["template"]


def pod_specs(objects):
    """(owner, pod spec) for every pod the chart makes."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "CronJob", "Pod"):
            yield o, pod_template(o)["spec"]


class Resolver:
    """Resolves what a container gets from the rendered objects, as the kubelet would. Secrets the
    release does not contain (an existingSecret, a CA made by the operator) come from `external`:
    {secret name: {key: value}}."""

    def __init__(self, objects, external=None):
        self.objects = objects
        self.configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objects, "ConfigMap")}
        self.secrets = {o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
                        for o in of_kind(objects, "Secret")}
        for name, data in (external or {}).items():
            self.secrets.setdefault(name, data)

    def secret(self, name, key, optional=False):
        value = self.secrets.get(name, {}).get(key)
        if value is None and not optional:
            raise AssertionError(f"secret {name} has no key {key}")
        return value

    def env(self, container, pod_name):
        env = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.configmaps[source["configMapRef"]["name"]])
            if "secretRef" in source:
                env.update(self.secrets[source["secretRef"]["name"]])
        for var in container.get("env", []):
            name = var["name"]
            if "value" in var:
                env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self.secret(r["name"], r["key"], r.get("optional", False))
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                value = self.configmaps[r["name"]].get(r["key"])
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                value = pod_name
            else:
                raise AssertionError(f"cannot resolve {var}")
            if value is not None:
                env[name] = value
        return env

    def volume_files(self, pod_spec, container):
        """{mount path + '/' + file: content} of the container's Secret and ConfigMap mounts."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        files = {}
        for mount in container.get("volumeMounts", []):
            v = volumes[mount["name"]]
            if "secret" in v:
                data = self.secrets.get(v["secret"]["secretName"])
                if data is None:
                    raise AssertionError(f"volume {mount['name']}: no Secret {v['secret']['secretName']}")
            elif "configMap" in v:
                data = self.configmaps[v["configMap"]["name"]]
            else:
                continue
            items = v.get("secret", v.get("configMap")).get("items")
            pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
            for key, path in pairs:
                if key not in data:
                    raise AssertionError(f"volume {mount['name']}: no key {key}")
                files[f"{mount['mountPath'].rstrip('/')}/{path}"] = data[key]
        return files
