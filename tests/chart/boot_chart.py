#!/usr/bin/env python3
"""Boots what the chart renders as local processes, to prove its wiring matches the binaries.

Renders the chart with ci/boot-values.yaml, then, against a real redis-server that requires the
rendered Secret's password:
- starts every Deployment's container (the binary named by its image, its args, its environment
  resolved from the ConfigMap, the Secret, field references and $(VAR) expansion) once per
  rendered replica, with Service names mapped to 127.0.0.1 and each process on a port of its own;
- checks every rendered liveness and readiness probe path answers 200;
- runs the CronJob's container once (it must exit 0);
- runs the helm test Pod's container, the e2e suite, against the booted API (it must exit 0);
- stops everything with SIGTERM (each must exit 0).

Usage: boot_chart.py TARGET_DIR  (where the binaries are); needs helm and PyYAML.
"""

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "fulfillment")
RELEASE, NAMESPACE = "boot", "shop"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except Exception:  # noqa: BLE001 - any failure is "not answering yet"
        return None


def render():
    out = subprocess.run(["helm", "template", RELEASE, CHART, "--namespace", NAMESPACE,
                          "-f", os.path.join(CHART, "ci", "boot-values.yaml")],
                         capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class Cluster:
    """The rendered objects, and where each Service lives on this machine."""

    def __init__(self, objects):
        self.objects = objects
        self.configmaps = {o["metadata"]["name"]: o.get("data", {})
                           for o in objects if o["kind"] == "ConfigMap"}
        self.secrets = {o["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                                for k, v in o.get("data", {}).items()}
                        for o in objects if o["kind"] == "Secret"}
        self.services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
        self.endpoints = {}  # "<service>:<port>" -> "127.0.0.1:<local port>"

    def of_kind(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def map_service(self, name, port, local_port):
        for host in (name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc",
                     f"{name}.{NAMESPACE}.svc.cluster.local"):
            self.endpoints[f"{host}:{port}"] = f"127.0.0.1:{local_port}"

    def localize(self, text):
        for remote, local in sorted(self.endpoints.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<=[/@]){re.escape(remote)}(?=[/:]|$)", local, text)
        return text

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
                env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)),
                                   str(var["value"]))
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self.secrets.get(r["name"], {}).get(r["key"])
                if value is None and not r.get("optional"):
                    raise SystemExit(f"FAIL: secret {r['name']} has no key {r['key']}")
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                value = self.configmaps[r["name"]].get(r["key"])
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                value = pod_name
            else:
                raise SystemExit(f"FAIL: the boot test cannot resolve {var}")
            if value is not None:
                env[name] = value
        return {k: self.localize(v) for k, v in env.items()}


def binary_of(image, target):
    repository = image.rsplit(":", 1)[0]
    path = os.path.join(target, repository.rsplit("/", 1)[-1])
    if not os.access(path, os.X_OK):
        raise SystemExit(f"FAIL: the image {image} names no binary built in {target}")
    return path


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    target = os.path.abspath(sys.argv[1])
    cluster = Cluster(render())
    work = tempfile.mkdtemp(prefix="fulfillment-boot-")
    processes = []
    failures = []

    def spawn(name, args, env):
        log = open(os.path.join(work, f"{name}.log"), "w")
        full_env = {"PATH": os.environ.get("PATH", ""), **env}
        p = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        processes.append((name, p))
        return p

    try:
        # The bundled Redis, as a real redis-server requiring the rendered password.
        redis_service = next(n for n in cluster.services if n.endswith("-redis"))
        password = next(s["redis-password"] for s in cluster.secrets.values() if "redis-password" in s)
        redis_port = free_port()
        spawn("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", work,
                        "--requirepass", password], {})
        cluster.map_service(redis_service, 6379, redis_port)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(redis_port), "-a", password, "--no-auth-warning",
                               "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.05)

        # Local ports of every replica; the API Service maps to the first order replica.
        deployments = cluster.of_kind("Deployment")
        plan = []
        for d in deployments:
            for i in range(d["spec"].get("replicas", 1)):
                plan.append((d, f"{d['metadata']['name']}-{i}", free_port()))
        api = cluster.services[next(n for n in cluster.services if n.endswith("-api"))]
        order_port = next(port for d, _, port in plan
                          if d["spec"]["selector"]["matchLabels"] == api["spec"]["selector"])
        cluster.map_service(api["metadata"]["name"], api["spec"]["ports"][0]["port"], order_port)

        probes = []
        for d, pod, port in plan:
            c = d["spec"]["template"]["spec"]["containers"][0]
            env = cluster.env(c, pod)
            env["HTTP_ADDR"] = f"127.0.0.1:{port}"  # every pod listens on 8080; here each its own
            spawn(pod, [binary_of(c["image"], target)] + c.get("args", []), env)
            for probe in ("livenessProbe", "readinessProbe"):
                probes.append((pod, probe, f"http://127.0.0.1:{port}{c[probe]['httpGet']['path']}"))
        print(f"booted {len(plan)} pods of {len(deployments)} Deployments")

        deadline = time.time() + 60
        for pod, probe, url in probes:
            while get(url) != 200:
                if time.time() > deadline:
                    failures.append(f"{pod} {probe} {url} never answered 200")
                    break
                time.sleep(0.2)
            else:
                print(f"ok {pod} {probe} {url}")

        for cj in cluster.of_kind("CronJob"):
            c = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
            name = cj["metadata"]["name"]
            run = subprocess.run([binary_of(c["image"], target)] + c.get("args", []),
                                 env={"PATH": os.environ.get("PATH", ""), **cluster.env(c, f"{name}-1")},
                                 capture_output=True, text=True, timeout=60)
            if run.returncode != 0:
                failures.append(f"CronJob {name} exited {run.returncode}: {run.stderr[-2000:]}")
            else:
                print(f"ok CronJob {name}: {run.stdout.strip()}")

        for pod in cluster.of_kind("Pod"):
            if pod["metadata"].get("annotations", {}).get("helm.sh/hook") != "test":
                continue
            c = pod["spec"]["containers"][0]
            args = [cluster.localize(a) for a in c.get("args", [])]
            run = subprocess.run([binary_of(c["image"], target)] + args,
                                 env={"PATH": os.environ.get("PATH", ""),
                                      **cluster.env(c, pod["metadata"]["name"])},
                                 capture_output=True, text=True, timeout=300)
            print(run.stdout.rstrip())
            if run.returncode != 0:
                failures.append(f"helm test Pod {pod['metadata']['name']} exited {run.returncode}:"
                                f" {run.stderr[-2000:]}")
    finally:
        for name, p in reversed(processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in processes:
            try:
                code = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                code = "no exit within 30 s"
            if code != 0 and name != "redis":
                failures.append(f"{name} exited {code} on SIGTERM; log: {work}/{name}.log")
    if failures:
        for f in failures:
            print(f"FAIL {f}")
        for name, _ in processes:
            path = os.path.join(work, f"{name}.log")
            if any(name in f for f in failures) and os.path.exists(path):
                print(f"--- {name}.log (last lines)")
                print("".join(open(path).readlines()[-20:]))
        raise SystemExit(1)
    print("the rendered chart boots: probes answer, the CronJob passes, the helm test passes")


if __name__ == "__main__":
    main()
