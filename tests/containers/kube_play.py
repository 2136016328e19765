#!/usr/bin/env python3
"""The chart's pods under `podman kube play`, then the chart's `helm test` pod against them.

Usage: kube_play.py --tag IMAGE_TAG [--keep]
  (PATH=$(scripts/install-test-tools):$PATH for helm and PyYAML; images fulfillment/<binary>:<tag>
  from scripts/build-images must exist.)

1. Renders the chart with the kind values (`helm template fulfillment deploy/helm/fulfillment
   -f deploy/kind/values-kind.yaml`), the tag given, the bundled Redis image replaced by the
   stand-in of scripts/standin-images (digest cleared), the Prometheus Operator objects off (no
   CRDs here) and pull policy Never (every image is local).
2. Plays what it renders under podman (4.3) on one network of its own with DNS. Only what podman
   cannot run is translated, and every translation is printed ("translate:", "drop:", "skip:").
3. Waits for every pod's readiness probe (run by this script: podman 4.3 does not run them), runs
   the chart's helm test pod (the e2e suite), then one pass of the CronJob's Job (the retry
   worker), each of which must exit 0; checks that every replica is its own consumer of its
   service's group, that podman applied the chart's securityContext (uid 65532, read-only root,
   no capabilities), that nothing restarted, and (without --keep) that every pipeline pod stopped
   with SIGTERM exits 0 within its terminationGracePeriodSeconds.
4. Removes every pod, volume, secret and the network it created, unless --keep (it then prints
   what it left).

Prints "N passed, N failed"; exit 1 when a check failed.
"""

import argparse
import base64
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

try:
    import yaml
except ImportError:
    sys.exit("missing: PyYAML (PATH=$(scripts/install-test-tools):$PATH puts .tools' python first)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = "deploy/helm/fulfillment"
RELEASE = "fulfillment"
# What the chart renders that podman kube play has no use for, and why.
SKIPPED_KINDS = {
    "ServiceAccount": "no Kubernetes API here (automount is off in every pod anyway)",
    "PodDisruptionBudget": "no voluntary disruptions without a cluster",
    "NetworkPolicy": "podman networks have no policies; every pod here shares one network",
    "HorizontalPodAutoscaler": "no metrics server; each Deployment runs its replicaCount",
    "ScaledObject": "no KEDA",
    "TriggerAuthentication": "no KEDA",
    "Ingress": "no ingress controller; the API is reached by its Service name",
    "HTTPRoute": "no Gateway API",
    "ServiceMonitor": "no Prometheus Operator",
    "PodMonitor": "no Prometheus Operator",
    "PrometheusRule": "no Prometheus Operator",
}
# Pod spec fields podman 4.3 ignores (scheduling over nodes, the Kubernetes API).
IGNORED_POD_FIELDS = {
    "affinity": "one host: nothing to spread over",
    "topologySpreadConstraints": "one host: no zones",
    "nodeSelector": "one host",
    "tolerations": "one host",
    "priorityClassName": "no scheduler",
    "serviceAccountName": "no Kubernetes API",
    "automountServiceAccountToken": "no Kubernetes API",
}

results = []


def say(kind, text):
    print(f"  {kind}: {text}", flush=True)


def check(name, fn, *args):
    started = time.monotonic()
    try:
        value = fn(*args)
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
        results.append((name, e))
        print(f"FAIL {name} ({time.monotonic() - started:.0f} s): {e}", flush=True)
        return None
    results.append((name, None))
    print(f"PASS {name} ({time.monotonic() - started:.0f} s)", flush=True)
    return True if value is None else value


def run(cmd, timeout=600, check_rc=True, input_text=None):
    out = subprocess.run(cmd, cwd=ROOT, timeout=timeout, text=True, input=input_text,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check_rc and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}: {out.stdout[-3000:]}")
    return out


def eventually(what, within, probe):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last is True:
                return True
        except Exception as e:  # noqa: BLE001 - not yet
            last = e
        time.sleep(1)
    raise AssertionError(f"{what} within {within} s (last: {last})")


def split_image(ref):
    """localhost/standin/redis:7.4.11-alpine -> (localhost, standin/redis, 7.4.11-alpine)."""
    name, tag = ref.rsplit(":", 1)
    registry, repository = name.split("/", 1)
    return registry, repository, tag


def render(tag):
    out = run(["scripts/standin-images", "--print-env"])
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    registry, repository, redis_tag = split_image(env["REDIS_IMAGE"])
    sets = {
        "global.image.tag": tag,
        "global.image.pullPolicy": "Never",
        "redis.image.registry": registry,
        "redis.image.repository": repository,
        "redis.image.tag": redis_tag,
        "redis.image.digest": "",
        "redis.image.pullPolicy": "Never",
        "metrics.serviceMonitor.enabled": "false",
        "metrics.podMonitor.enabled": "false",
        "metrics.prometheusRule.enabled": "false",
    }
    cmd = ["helm", "template", RELEASE, CHART, "-f", "deploy/kind/values-kind.yaml"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    print("  $ " + " ".join(cmd), flush=True)
    docs = [d for d in yaml.safe_load_all(run(cmd).stdout) if d]
    assert docs, "nothing rendered"
    return docs


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""
    def one(m):
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$?\$\((\w+)\)", one, text)


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class Play:
    """What one run plays: pods, their network, secrets and volumes; removed by cleanup()."""

    def __init__(self, docs, tag):
        self.tag = tag
        self.net = f"fulfillment-kube-play-{os.getpid()}"
        self.tmp = tempfile.mkdtemp(prefix="kube-play-")
        os.chmod(self.tmp, 0o755)
        self.configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
        self.secrets = [d for d in docs if d["kind"] == "Secret"]
        self.services = [d for d in docs if d["kind"] == "Service"]
        self.pods = []  # (pod manifest, role) role: serve | job | test
        self.volumes = []
        self.created_pods = []
        self.created_secrets = []
        self.network_created = False
        self.notes = {}  # (kind, what) -> names it applies to: one printed line each
        self.translate(docs)
        for (kind, what), names in self.notes.items():
            say(kind, f"{what}: {', '.join(names)}")

    # ---- translation -----------------------------------------------------------------------
    def translate(self, docs):
        for d in docs:
            kind, name = d["kind"], d["metadata"]["name"]
            if kind in ("ConfigMap", "Secret", "Service"):
                continue
            if kind in SKIPPED_KINDS:
                say("skip", f"{kind} {name}: {SKIPPED_KINDS[kind]}")
            elif kind == "Deployment":
                replicas = d["spec"].get("replicas", 1)
                for i in range(replicas):
                    self.add_pod(f"{name}-{i}", d["spec"]["template"], "serve", "Always")
                say("translate", f"Deployment {name} (replicas {replicas}) -> Pods "
                    f"{', '.join(f'{name}-{i}' for i in range(replicas))} (podman 4.3 plays one "
                    "replica of a Deployment; each replica is its own consumer here too)")
            elif kind == "StatefulSet":
                replicas = d["spec"].get("replicas", 1)
                claims = d["spec"].get("volumeClaimTemplates", [])
                for i in range(replicas):
                    pod = f"{name}-{i}"
                    template = copy.deepcopy(d["spec"]["template"])
                    for claim in claims:
                        volume = f"{claim['metadata']['name']}-{pod}"
                        template["spec"].setdefault("volumes", []).append(
                            {"name": claim["metadata"]["name"],
                             "persistentVolumeClaim": {"claimName": volume}})
                        self.volumes.append((volume, template["spec"].get("securityContext", {})))
                        say("translate", f"StatefulSet {name} volumeClaimTemplate "
                            f"{claim['metadata']['name']} -> podman volume {volume}")
                    self.add_pod(pod, template, "serve", "Always",
                                 aliases=[f"{pod}.{d['spec'].get('serviceName', name)}"])
                say("translate", f"StatefulSet {name} -> Pod(s) "
                    f"{', '.join(f'{name}-{i}' for i in range(replicas))} (podman 4.3 plays no "
                    "StatefulSet)")
            elif kind == "CronJob":
                job = d["spec"]["jobTemplate"]["spec"]
                self.add_pod(f"{name}-manual", job["template"], "job", "Never",
                             deadline=job.get("activeDeadlineSeconds"))
                say("translate", f"CronJob {name} (schedule {d['spec'].get('schedule')!r}) -> one "
                    f"run of its Job template as Pod {name}-manual, once every pod is ready "
                    "(podman has no CronJob or Job; activeDeadlineSeconds enforced by this script)")
            elif kind == "Job":
                self.add_pod(name, d["spec"]["template"], "job", "Never",
                             deadline=d["spec"].get("activeDeadlineSeconds"))
                say("translate", f"Job {name} -> Pod {name}")
            elif kind == "Pod":
                hook = d["metadata"].get("annotations", {}).get("helm.sh/hook", "")
                role = "test" if "test" in hook.split(",") else "serve"
                self.add_pod(name, d, role, d["spec"].get("restartPolicy", "Always"),
                             deadline=d["spec"].get("activeDeadlineSeconds"))
                if role == "test":
                    say("translate", f"Pod {name} (helm.sh/hook: test) -> played last, after every "
                        "pod is ready, as `helm test` would (activeDeadlineSeconds enforced by "
                        "this script)")
            else:
                say("skip", f"{kind} {name}: not run by this test")
        # Services -> network aliases of the pods they select (podman has no Services).
        for svc in self.services:
            name, spec = svc["metadata"]["name"], svc["spec"]
            targets = [p for p, role, _ in self.pods if role == "serve"
                       and labels_match(spec.get("selector"), p["metadata"].get("labels", {}))]
            for p in targets:
                p["_aliases"].append(name)
            ports = ", ".join(f"{x['port']}->{x.get('targetPort', x['port'])}"
                              for x in spec.get("ports", []))
            say("translate", f"Service {name} ({spec.get('type', 'ClusterIP')}, ports {ports}) -> "
                f"network alias {name} on {', '.join(p['metadata']['name'] for p in targets)} "
                f"(network {self.net} with DNS; several pods share it as DNS round robin; every "
                "port is the container's own, as the Service's targetPorts name them)")
            if spec.get("type") in ("NodePort", "LoadBalancer"):
                say("drop", f"Service {name} {spec['type']}: nothing published on the host")
        if self.configmaps:
            names = ", ".join(c["metadata"]["name"] for c in self.configmaps)
            say("translate", f"ConfigMaps {names} -> given as they are with every pod's "
                "`podman kube play` (one play per pod, each with its own network aliases)")
        for secret in self.secrets:
            say("translate", f"Secret {secret['metadata']['name']} -> podman secret of the same "
                "name holding the Secret's data as one JSON object of base64 values, the form "
                "podman 4.3 reads secretKeyRef from (played as a Secret, podman 4.3 stores its "
                "YAML and then fails: \"secret ... is not valid JSON\")")

    def add_pod(self, name, template, role, restart, aliases=(), deadline=None):
        meta = copy.deepcopy(template.get("metadata", {}))
        spec = copy.deepcopy(template["spec"])
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": meta.get("labels", {}),
                            "annotations": meta.get("annotations", {})},
               "spec": spec}
        spec["restartPolicy"] = restart
        for key, value in list(pod["metadata"]["annotations"].items()):
            if len(value) > 63:
                pod["metadata"]["annotations"].pop(key)
                self.note("drop", f"annotation {key} (podman 4.3 refuses annotation values over "
                          "63 characters, a limit Kubernetes puts on label values only) in pods",
                          name)
        spec.pop("activeDeadlineSeconds", None)
        for field, why in IGNORED_POD_FIELDS.items():
            if field in spec:
                spec.pop(field)
                self.note("drop", f"{field} ({why}) in pods", name)
        sc = spec.get("securityContext", {})
        if "fsGroup" in sc and any("persistentVolumeClaim" in v for v in spec.get("volumes", [])):
            self.note("translate", f"fsGroup {sc['fsGroup']} (podman 4.3 ignores it) -> the "
                      "pod's podman volumes created owned by runAsUser:fsGroup, as the kubelet "
                      "would make them writable, in pods", name)
        probes, ports = {}, {}
        for c in spec.get("containers", []):
            ports[c["name"]] = {x.get("name"): x["containerPort"] for x in c.get("ports", [])}
            if c.get("ports") and not any("hostPort" in x for x in c["ports"]):
                c.pop("ports")
                self.note("drop", "ports (podman 4.3 publishes every containerPort on the same "
                          "port of the host, so two pods serving 8080 collide; in Kubernetes a "
                          "containerPort publishes nothing, and the pods reach each other on the "
                          "network anyway) in", f"{name}/{c['name']}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    probes[(c["name"], probe)] = c.pop(probe)
            dropped = [p for (cn, p) in probes if cn == c["name"]]
            if dropped:
                self.note("drop", f"{', '.join(dropped)} from the played containers (podman 4.3 "
                          "ignores readiness and startup probes, and turns a liveness probe into "
                          "a healthcheck that only systemd timers run, none here, through "
                          "`curl`/`nc` in a shell the distroless images lack); this script runs "
                          "each readinessProbe itself (httpGet and tcpSocket from the host to the "
                          "pod's IP, exec through podman exec)", f"{name}/{c['name']}")
            for field in ("command", "args"):
                if any("$(" in a for a in c.get(field, [])):
                    env = self.container_env(c)
                    expanded = [expand(a, env) for a in c[field]]
                    refs = sorted({r for a in c[field] for r in re.findall(r"(?<!\$)\$\((\w+)\)", a)
                                   if r in env})
                    if expanded != c[field]:
                        c[field] = expanded
                        self.note("translate", f"$({', '.join(refs)}) in {field} -> expanded from "
                                  "the container's env as the kubelet does (podman 4.3 passes it "
                                  "on literally; a secretKeyRef's value is inlined) in",
                                  f"{name}/{c['name']}")
            pre = c.get("lifecycle", {}).get("preStop", {})
            if "sleep" in pre:
                c["lifecycle"].pop("preStop")
                if not c["lifecycle"]:
                    c.pop("lifecycle")
                self.note("drop", f"lifecycle.preStop.sleep {pre['sleep'].get('seconds')} s "
                          "(Kubernetes 1.30; podman 4.3 does not know it) in",
                          f"{name}/{c['name']}")
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                ref = volume.pop("configMap")
                path = self.write_configmap(name, volume["name"], ref)
                volume["hostPath"] = {"path": path, "type": "Directory"}
                self.note("translate", f"configMap volume {volume['name']} (ConfigMap "
                          f"{ref['name']}) -> hostPath of its data written out as Kubernetes "
                          "mounts it (root-owned, files mode defaultMode 0644): podman 4.3 makes "
                          "it a named volume that copies the owner and mode of the image's mount "
                          "point (the stand-in Redis's /etc/redis is redis:redis 2770, unreadable "
                          "for uid 65532) in pods", name)
        pod["_aliases"] = list(aliases)
        pod["_probes"] = probes
        pod["_ports"] = ports
        pod["_deadline"] = deadline
        self.pods.append((pod, role, restart))

    def container_env(self, c):
        """The container's env as the kubelet resolves it (envFrom, then env in order)."""
        env = {}
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                (cm,) = [x for x in self.configmaps
                         if x["metadata"]["name"] == source["configMapRef"]["name"]]
                env.update(cm.get("data") or {})
            if "secretRef" in source:
                (sec,) = [x for x in self.secrets
                          if x["metadata"]["name"] == source["secretRef"]["name"]]
                env.update({k: base64.b64decode(v).decode() for k, v in
                            (sec.get("data") or {}).items()})
        for var in c.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                data = next((x.get("data") or {} for x in self.secrets
                             if x["metadata"]["name"] == r["name"]), {})
                if r["key"] in data:
                    env[var["name"]] = base64.b64decode(data[r["key"]]).decode()
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                data = next((x.get("data") or {} for x in self.configmaps
                             if x["metadata"]["name"] == r["name"]), {})
                if r["key"] in data:
                    env[var["name"]] = data[r["key"]]
        return env

    def write_configmap(self, pod, volume, ref):
        (cm,) = [c for c in self.configmaps if c["metadata"]["name"] == ref["name"]]
        data = cm.get("data") or {}
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        path = os.path.join(self.tmp, f"configmap-{pod}-{volume}")
        os.makedirs(path)
        os.chmod(path, 0o755)
        for item in items:
            file = os.path.join(path, item["path"])
            os.makedirs(os.path.dirname(file), exist_ok=True)
            with open(file, "w") as f:
                f.write(data[item["key"]])
            os.chmod(file, item.get("mode", ref.get("defaultMode", 0o644)))
        return path

    def note(self, kind, what, name):
        self.notes.setdefault((kind, what), []).append(name)

    # ---- podman ----------------------------------------------------------------------------
    def setup(self):
        taken = [p["metadata"]["name"] for p, _, _ in self.pods
                 if run(["podman", "pod", "exists", p["metadata"]["name"]],
                        check_rc=False).returncode == 0]
        assert not taken, f"pods already exist (another run, or one left by --keep): {taken}"
        run(["podman", "network", "create", self.net])
        self.network_created = True
        for secret in self.secrets:
            name = secret["metadata"]["name"]
            data = dict(secret.get("data") or {})
            for k, v in (secret.get("stringData") or {}).items():
                data[k] = base64.b64encode(v.encode()).decode()
            path = os.path.join(self.tmp, f"secret-{name}.json")
            with open(path, "w") as f:
                json.dump(data, f)
            run(["podman", "secret", "create", name, path])
            self.created_secrets.append(name)
            os.unlink(path)
        for volume, sc in self.volumes:
            uid, gid = sc.get("runAsUser", 0), sc.get("fsGroup", sc.get("runAsGroup", 0))
            run(["podman", "volume", "create", "--opt", f"o=uid={uid},gid={gid}", volume])

    def play(self, pod):
        name = pod["metadata"]["name"]
        manifest = {k: v for k, v in pod.items() if not k.startswith("_")}
        path = os.path.join(self.tmp, f"{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(self.configmaps + [manifest], f, sort_keys=False)
        network = self.net
        if pod["_aliases"]:
            network += ":" + ",".join(f"alias={a}" for a in pod["_aliases"])
        self.created_pods.append(name)
        run(["podman", "kube", "play", "--network", network, path], timeout=300)

    def container(self, pod):
        return f"{pod['metadata']['name']}-{pod['spec']['containers'][0]['name']}"

    def ip(self, pod):
        infra = run(["podman", "pod", "inspect", "--format", "{{.InfraContainerID}}",
                     pod["metadata"]["name"]]).stdout.strip()
        out = run(["podman", "inspect", "--format", "{{json .NetworkSettings.Networks}}", infra])
        return json.loads(out.stdout)[self.net]["IPAddress"]

    def state(self, ctr):
        out = run(["podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} "
                   "{{.RestartCount}}", ctr])
        status, code, restarts = out.stdout.split()
        return status, int(code), int(restarts)

    def logs(self, ctr, lines=40):
        return run(["podman", "logs", "--tail", str(lines), ctr], check_rc=False).stdout

    def ready(self, pod):
        """Every container's readinessProbe passes, as the kubelet would run it."""
        ip = self.ip(pod)
        for c in pod["spec"]["containers"]:
            ctr = f"{pod['metadata']['name']}-{c['name']}"
            probe = pod["_probes"].get((c["name"], "readinessProbe"))
            status, code, restarts = self.state(ctr)
            if status != "running":
                raise AssertionError(f"{ctr} {status} (exit {code}, restarts {restarts}): "
                                     f"{self.logs(ctr)[-1500:]}")
            if not probe:
                continue
            ports = pod["_ports"][c["name"]]
            timeout = probe.get("timeoutSeconds", 1)
            if "httpGet" in probe:
                h = probe["httpGet"]
                port = ports.get(h["port"], h["port"])
                url = f"http://{ip}:{port}{h.get('path', '/')}"
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as r:
                        ok = 200 <= r.status < 400
                        detail = f"{url} {r.status}"
                except urllib.error.HTTPError as e:
                    ok, detail = False, f"{url} {e.code} {e.read()[:200]!r}"
            elif "tcpSocket" in probe:
                port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
                with socket.create_connection((ip, port), timeout=timeout):
                    ok, detail = True, f"{ip}:{port}"
            elif "exec" in probe:
                out = run(["podman", "exec", ctr] + probe["exec"]["command"], check_rc=False,
                          timeout=timeout + 5)
                ok, detail = out.returncode == 0, f"exec exit {out.returncode} {out.stdout[-200:]}"
            else:
                raise AssertionError(f"{ctr}: unknown probe {probe}")
            if not ok:
                return detail
        return True

    def wait_exit(self, pod, default_deadline=600):
        ctr = self.container(pod)
        deadline = pod["_deadline"] or default_deadline
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            status, code, _ = self.state(ctr)
            if status in ("exited", "stopped"):
                break
            time.sleep(1)
        else:
            run(["podman", "stop", "-t", "5", ctr], check_rc=False)
            raise AssertionError(f"{ctr} still running after activeDeadlineSeconds {deadline}: "
                                 f"{self.logs(ctr)[-2000:]}")
        logs = self.logs(ctr, 60)
        assert code == 0, f"{ctr} exited {code}:\n{logs[-3000:]}"
        return logs

    def cleanup(self):
        volumes = {v for v, _ in self.volumes}
        for name in reversed(self.created_pods):
            out = run(["podman", "pod", "inspect", "--format", "{{range .Containers}}{{.Id}} "
                       "{{end}}", name], check_rc=False)
            for ctr in out.stdout.split() if out.returncode == 0 else []:
                m = run(["podman", "inspect", "--format", "{{range .Mounts}}{{if eq .Type "
                         "\"volume\"}}{{.Name}} {{end}}{{end}}", ctr], check_rc=False)
                volumes.update(m.stdout.split() if m.returncode == 0 else [])
            run(["podman", "pod", "rm", "-f", "-t", "5", name], check_rc=False, timeout=120)
        for volume in sorted(volumes):
            run(["podman", "volume", "rm", "-f", volume], check_rc=False)
        for secret in self.created_secrets:
            run(["podman", "secret", "rm", secret], check_rc=False)
        if self.network_created:
            run(["podman", "network", "rm", "-f", self.net], check_rc=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", required=True, help="tag of the fulfillment/<binary> images")
    parser.add_argument("--keep", action="store_true", help="leave the pods running")
    args = parser.parse_args()
    for tool in ("helm", "podman"):
        if not shutil.which(tool):
            sys.exit(f"missing: {tool} (PATH=$(scripts/install-test-tools):$PATH; apt-get install "
                     "podman)")

    print(f"render the chart (tag {args.tag})", flush=True)
    docs = check("helm template with the kind values renders", render, args.tag)
    if docs is None:
        return finish()
    images = sorted({c["image"] for d in docs for c in pod_containers(d)})

    def images_exist():
        missing = [i for i in images
                   if run(["podman", "image", "exists", i], check_rc=False).returncode != 0]
        assert not missing, f"missing images (scripts/build-images with IMAGE_TAG): {missing}"
    if check(f"every image the chart names exists locally ({len(images)})", images_exist) is None:
        return finish()

    print("translate what podman 4.3 cannot run", flush=True)
    play = Play(docs, args.tag)
    try:
        run_play(play, args.keep)
    finally:
        if args.keep:
            print(f"kept: pods {' '.join(play.created_pods)}; network {play.net}; secrets "
                  f"{' '.join(play.created_secrets)}; volumes "
                  f"{' '.join(v for v, _ in play.volumes)}; ConfigMap files {play.tmp}",
                  flush=True)
        else:
            play.cleanup()
            print("cleaned up: pods, volumes, secrets, network", flush=True)
    return finish()


def pod_containers(d):
    spec = d.get("spec", {})
    for path in (("template",), ("jobTemplate", "spec", "template")):
        t = spec
        for p in path:
            t = (t or {}).get(p)
        if t:
            return t["spec"].get("containers", []) + t["spec"].get("initContainers", [])
    if d["kind"] == "Pod":
        return spec.get("containers", []) + spec.get("initContainers", [])
    return []


def run_play(play, keep):
    if check("network, podman secrets and volumes created", play.setup) is None:
        return
    serving = [p for p, role, _ in play.pods if role == "serve"]
    started = time.monotonic()
    # Redis first, as a StatefulSet's pods come up before the clients need them.
    serving.sort(key=lambda p: p["metadata"]["labels"].get("app.kubernetes.io/component")
                 != "redis")
    played = [pod for pod in serving
              if check(f"podman kube play {pod['metadata']['name']}", play.play, pod)]
    # Every pod's readiness probe, tried in turn until all pass or 180 s have gone by.
    waiting = {pod["metadata"]["name"]: pod for pod in played}
    last = {}
    deadline = time.monotonic() + 180
    while waiting and time.monotonic() < deadline:
        for name, pod in list(waiting.items()):
            try:
                last[name] = play.ready(pod)
            except Exception as e:  # noqa: BLE001 - not yet
                last[name] = e
            if last[name] is True:
                del waiting[name]
                last[name] = time.monotonic() - started
        time.sleep(0.5 if waiting else 0)
    ready_s = time.monotonic() - started
    for pod in played:
        name = pod["metadata"]["name"]
        probe = pod["_probes"].get((pod["spec"]["containers"][0]["name"], "readinessProbe"), {})
        how = next((k for k in ("httpGet", "tcpSocket", "exec") if k in probe), "running")
        what = probe.get("httpGet", {}).get("path", "") if how == "httpGet" else ""

        def is_ready(n=name):
            assert n not in waiting, f"not ready within 180 s: {last.get(n)}"
            print(f"  ready {last[n]:.1f} s after the first kube play")
        check(f"{name} ready (readinessProbe {how} {what})".replace(" )", ")"), is_ready)
    print(f"  kube play to every pod ready: {ready_s:.0f} s", flush=True)

    for pod, role, _ in play.pods:
        if role != "test":
            continue
        name = pod["metadata"]["name"]
        started = time.monotonic()

        def test(p=pod):
            play.play(p)
            logs = play.wait_exit(p)
            tail = [line for line in logs.splitlines() if line.strip()][-8:]
            for line in tail:
                print(f"    {line}")
        check(f"helm test pod {name} (the e2e suite) exits 0", test)
        print(f"  e2e: {time.monotonic() - started:.0f} s", flush=True)

    # After the e2e suite, so the pass finds its streams, groups and dead letters.
    for pod, role, _ in play.pods:
        if role != "job":
            continue
        name = pod["metadata"]["name"]

        def job(p=pod):
            play.play(p)
            logs = play.wait_exit(p, 300)
            print(f"    {[line for line in logs.splitlines() if line.strip()][-1]}")
        check(f"{name} (one run of the CronJob's Job, after the e2e suite) exits 0", job)

    def consumers():
        """Every replica reads as its own consumer (CONSUMER_NAME from metadata.name). The
        consumer `(unread)` holds what was published for the group and no reader claimed; it is
        no reader, and not counted."""
        (redis,) = [p for p in serving
                    if p["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]
        ctr = play.container(redis)
        config = next(c["data"] for c in play.configmaps if "STREAM" in (c.get("data") or {}))
        stream = config["STREAM"]
        if int(config.get("STREAM_PARTITIONS", "1")) > 1:
            return
        for component in ("order", "inventory", "payment", "shipping", "notification"):
            expected = sorted(p["metadata"]["name"] for p in serving if p["metadata"]["labels"]
                              .get("app.kubernetes.io/component") == component)
            out = run(["podman", "exec", ctr, "sh", "-c", "redis-cli -a \"$REDIS_PASSWORD\" "
                       f"--no-auth-warning --json xinfo consumers {stream} {component}_group"])
            names = sorted(c["name"] for c in json.loads(out.stdout) if c["name"] != "(unread)")
            assert names == expected, f"{component}_group: consumers {names}, pods {expected}"
            print(f"    {component}_group: {', '.join(names)}")
    check("each group's consumers are its service's pods, one each", consumers)

    def security():
        """The chart's securityContext as podman applied it: the user, a read-only root, no
        capabilities (distroless has no shell to ask from inside, so podman inspect tells)."""
        bad = []
        for pod in serving:
            sc = pod["spec"].get("securityContext", {})
            for c in pod["spec"]["containers"]:
                ctr = f"{pod['metadata']['name']}-{c['name']}"
                out = run(["podman", "inspect", "--format", "{{.Config.User}} "
                           "{{.HostConfig.ReadonlyRootfs}} {{len .EffectiveCaps}}", ctr])
                user, readonly, caps = out.stdout.split()
                want = f"{sc.get('runAsUser')}:{sc.get('runAsGroup')}"
                if user not in (want, str(sc.get("runAsUser"))) or readonly != "true" \
                        or caps != "0":
                    bad.append(f"{ctr}: user {user} (chart {want}), read-only root {readonly}, "
                               f"{caps} capabilities")
        assert not bad, bad
    check("securityContext applied: runAsUser 65532, read-only root, no capabilities",
          security)

    # The pipeline stayed up through it: nothing restarted or died.
    def steady():
        bad = []
        for pod in serving:
            for c in pod["spec"]["containers"]:
                ctr = f"{pod['metadata']['name']}-{c['name']}"
                status, code, restarts = play.state(ctr)
                if status != "running" or restarts:
                    bad.append(f"{ctr}: {status} exit {code} restarts {restarts}")
        assert not bad, bad
    check("every pipeline container still running, none restarted", steady)
    if keep:
        return

    def sigterm():
        """Deleting the pods: SIGTERM, and each exits 0 within terminationGracePeriodSeconds."""
        pods = [p for p in serving
                if p["metadata"]["labels"].get("app.kubernetes.io/component") != "redis"]
        grace = max(p["spec"].get("terminationGracePeriodSeconds", 30) for p in pods)
        started = time.monotonic()
        stops = {p["metadata"]["name"]: subprocess.Popen(
            ["podman", "pod", "stop", "-t", str(grace), p["metadata"]["name"]],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for p in pods}
        took = {}
        while len(took) < len(stops) and time.monotonic() - started < grace + 60:
            for name, proc in stops.items():
                if name not in took and proc.poll() is not None:
                    took[name] = time.monotonic() - started
            time.sleep(0.1)
        bad = []
        for pod in pods:
            name, ctr = pod["metadata"]["name"], play.container(pod)
            status, code, _ = play.state(ctr)
            if code != 0 or status not in ("exited", "stopped"):
                bad.append(f"{ctr} {status} exit {code}")
            if took.get(name, grace + 60) >= grace:
                bad.append(f"{name} took {took.get(name, 'over')} s, grace {grace} s")
        assert not bad, f"not a clean stop on SIGTERM: {bad}"
        print(f"    {len(pods)} pods stopped at once, the slowest in {max(took.values()):.1f} s "
              f"(grace {grace} s), every exit 0")
    check("SIGTERM: every pipeline container exits 0 within terminationGracePeriodSeconds", sigterm)


def finish():
    failed = [n for n, e in results if e is not None]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    for name in failed:
        print(f"  failed: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
