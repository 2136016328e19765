#!/usr/bin/env python3
"""Boots what the chart renders as local processes, to prove its wiring matches the binaries.

For every rendered combination of chartlib's VALUE_SETS (each ci/*-values.yaml, the kind values, and
the demo as `deploy/kind/up.sh --demo --no-mail` installs it: Mailpit's image is no binary here),
rendered with the optional API versions, against a real
redis-server shaped like the one the values describe:
- the bundled Redis: a redis-server requiring the password of the rendered Secret;
- an external Redis (redis.externalUrl): a redis-server on the URL's port with its password, over
  TLS for rediss:// with a certificate from a test CA. Secrets the release expects to exist already
  (the CA of redis.caSecret or of extraVolumes) are made by this script, holding that CA;
- an external Redis Cluster (REDIS_CLUSTER_NODES, redis.cluster): six `redis-server
  --cluster-enabled yes` (with the seeds' password as requirepass and masterauth) on ports below
  the kernel's ephemeral range whose cluster bus ports (+10000) are free too, joined by
  `redis-cli --cluster create --cluster-replicas 1`, ready once every node says cluster_state:ok
  and every replica is online; each seed host of the values is mapped to a node (the nodes
  announce 127.0.0.1:<port> themselves);
then:
- starts every Deployment's container (the binary named by its image, its args, its environment
  resolved from the ConfigMap, the Secret, field references and $(VAR) expansion, its Secret and
  ConfigMap volumes as files) once per rendered replica (the HPA's or KEDA's minimum when the
  Deployment has none), with Service and external host names mapped to 127.0.0.1 and each process
  on a port of its own;
- checks every rendered startup, liveness and readiness probe path answers 200;
- plays KEDA for every trigger of every ScaledObject: resolves its address, password
  (TriggerAuthentication), TLS and CA as KEDA does, connects with redis-cli (`-c` to one of the
  addresses of a redis-cluster-streams trigger) and reads its consumer group's lag on its stream
  (XINFO GROUPS);
- runs the CronJob's container once (it must exit 0);
- runs the helm test Pod's container, the e2e suite, against the booted API (it must exit 0);
- stops everything with SIGTERM (each must exit 0).

Usage: boot_chart.py TARGET_DIR [SUBSTRING...]  (where the binaries are; only the value sets whose
label contains one of the substrings); needs helm, redis-server, redis-cli, openssl and PyYAML.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chartlib import API_VERSIONS, CHART, VALUE_SETS, Resolver, of_kind, pod_template, values_args  # noqa: E402

import yaml  # noqa: E402

RELEASE, NAMESPACE = "boot", "shop"
CLUSTER_NODES = 6


_handed_out = set()


def free_port():
    """A free port below the kernel's ephemeral range, never the same one twice. A port the kernel
    picks (bind to 0) is an ephemeral one: between this check and the process that binds it, any
    outgoing connection on the machine may take it as its own local port (a boot once failed with
    "Address already in use" that way)."""
    import random
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    for _ in range(1000):
        port = random.randint(2000, ephemeral_low - 1)
        if port in _handed_out:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise SystemExit(f"FAIL: found no free port below {ephemeral_low}")


def cluster_ports():
    """Six ports below the kernel's ephemeral range whose cluster bus ports (+10000) are free too;
    each is held while the next are found, so they are distinct."""
    import random
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    low, high = 2000, ephemeral_low - 10001
    if high <= low + 100:
        raise SystemExit(f"FAIL: no room for a Redis Cluster's ports below {ephemeral_low}")
    held, ports = [], []
    try:
        for _ in range(500):
            port = random.randint(low, high)
            if port in ports:
                continue
            pair = []
            try:
                for p in (port, port + 10000):
                    s = socket.socket()
                    pair.append(s)
                    s.bind(("127.0.0.1", p))
            except OSError:
                for s in pair:
                    s.close()
                continue
            held += pair
            ports.append(port)
            if len(ports) == CLUSTER_NODES:
                return ports
    finally:
        for s in held:
            s.close()
    raise SystemExit("FAIL: found no free ports for a Redis Cluster")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except Exception:  # noqa: BLE001 - any failure is "not answering yet"
        return None


def render(files):
    out = subprocess.run(["helm", "template", RELEASE, CHART, "--namespace", NAMESPACE] + API_VERSIONS
                         + values_args(files), capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def make_ca(work):
    """A test CA and a server certificate for localhost and 127.0.0.1, signed by it."""
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=work, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=fulfillment-boot-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")
    with open(os.path.join(work, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "san.cnf")
    with open(os.path.join(work, "ca.pem")) as f:
        return f.read()


def external_secrets(objects, ca_pem):
    """The Secrets the release mounts or names but does not contain (made by the operator): each key
    it uses holds the test CA."""
    rendered = {o["metadata"]["name"] for o in of_kind(objects, "Secret")}
    made = {}
    for o in objects:
        if o["kind"] not in ("Deployment", "CronJob", "Pod"):
            continue
        for v in pod_template(o)["spec"].get("volumes", []):
            name = v.get("secret", {}).get("secretName")
            if name and name not in rendered:
                keys = [i["key"] for i in v["secret"].get("items", [])] or ["ca.crt"]
                made.setdefault(name, {}).update({k: ca_pem for k in keys})
    for auth in of_kind(objects, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            if ref["name"] not in rendered and ref["parameter"] == "ca":
                made.setdefault(ref["name"], {})[ref["key"]] = ca_pem
    return made


class Boot:
    def __init__(self, label, objects, target, work):
        self.label, self.objects, self.target, self.work = label, objects, target, work
        self.processes = []
        self.infrastructure = set()  # what stands in for Redis: its exit code is not the release's
        self.failures = []
        self.endpoints = {}  # "<host>:<port>" -> "127.0.0.1:<local port>"
        self.redis_port = None
        self.redis_tls = False
        self.resolver = None

    def map_host(self, host, port, local_port):
        names = [host]
        if "." not in host:
            names += [f"{host}.{NAMESPACE}", f"{host}.{NAMESPACE}.svc", f"{host}.{NAMESPACE}.svc.cluster.local"]
        for name in names:
            self.endpoints[f"{name}:{port}"] = f"127.0.0.1:{local_port}"

    def localize(self, text):
        for remote, local in sorted(self.endpoints.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<=[/@,]){re.escape(remote)}(?=[/:,]|$)", local, text)
        return text

    def spawn(self, name, args, env, infrastructure=False):
        if infrastructure:
            self.infrastructure.add(name)
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(args, env={"PATH": os.environ.get("PATH", ""), **env}, stdout=log,
                             stderr=subprocess.STDOUT)
        self.processes.append((name, p))
        return p

    def binary(self, image):
        repository = image.split("@")[0].rsplit(":", 1)[0]
        path = os.path.join(self.target, repository.rsplit("/", 1)[-1])
        if not os.access(path, os.X_OK):
            raise SystemExit(f"FAIL: the image {image} names no binary built in {self.target}")
        return path

    def redis_cli(self, port, password, tls, ca_file, db, *command, cluster=False):
        args = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "-n", str(db), "--no-auth-warning"]
        if cluster:
            args += ["-c"]
        if password:
            args += ["-a", password]
        if tls:
            args += ["--tls", "--cacert", ca_file]
        return subprocess.run(args + list(command), capture_output=True, text=True, timeout=10)

    def start_redis(self):
        """A redis-server like the values describe; returns when it answers PING."""
        ca_pem = make_ca(self.work)
        self.ca_file = os.path.join(self.work, "ca.pem")
        probe = Resolver(self.objects, external_secrets(self.objects, ca_pem))
        self.resolver = probe
        port = free_port()
        sts = of_kind(self.objects, "StatefulSet")
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.work]
        first = pod_template(of_kind(self.objects, "Deployment")[0])["spec"]["containers"][0]
        seeds = probe.env(first, "x").get("REDIS_CLUSTER_NODES")
        if seeds:
            return self.start_cluster(seeds, probe.env(first, "x").get("REDIS_PASSWORD"))
        if sts:
            c = pod_template(sts[0])["spec"]["containers"][0]
            password = probe.env(c, "redis-0")["REDIS_PASSWORD"]
            args += ["--port", str(port), "--requirepass", password]
            for svc in of_kind(self.objects, "Service"):
                if svc["spec"]["selector"].get("app.kubernetes.io/component") == "redis":
                    self.map_host(svc["metadata"]["name"], 6379, port)
        else:
            deployment = of_kind(self.objects, "Deployment")[0]
            url = urllib.parse.urlsplit(probe.env(pod_template(deployment)["spec"]["containers"][0], "x")["REDIS_URL"])
            password = urllib.parse.unquote(url.password or "")
            self.redis_tls = url.scheme == "rediss"
            if self.redis_tls:
                args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.pem",
                         "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"]
            else:
                args += ["--port", str(port)]
            if password:
                args += ["--requirepass", password]
            self.map_host(url.hostname, url.port or 6379, port)
        self.spawn("redis", args, {}, infrastructure=True)
        self.redis_port, self.redis_password = port, password
        for _ in range(100):
            out = self.redis_cli(port, password, self.redis_tls, self.ca_file, 0, "ping")
            if out.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit(f"FAIL: redis-server did not answer: {out.stderr}")

    def start_cluster(self, seeds, password_override):
        """A Redis Cluster like REDIS_CLUSTER_NODES describes (see the module's note); returns once
        every node says cluster_state:ok and every replica is online."""
        urls = [urllib.parse.urlsplit(u.strip()) for u in seeds.split(",") if u.strip()]
        if any(u.scheme != "redis" for u in urls):
            raise SystemExit("FAIL: the boot test runs a Redis Cluster without TLS; the seeds are "
                             + ",".join(u.scheme for u in urls))
        passwords = {urllib.parse.unquote(u.password or "") for u in urls}
        if len(passwords) != 1:
            raise SystemExit("FAIL: the seeds carry different passwords")
        password = password_override or passwords.pop()
        for _ in range(5):
            ports = cluster_ports()
            started = []
            for port in ports:
                node_dir = os.path.join(self.work, f"cluster-{port}")
                os.makedirs(node_dir)
                args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                        "--dir", node_dir]
                if password:
                    args += ["--requirepass", password, "--masterauth", password]
                started.append(self.spawn(f"redis-cluster-{port}", args, {}, infrastructure=True))
            if self.cluster_ready(ports, password):
                break
            print(f"the cluster on {ports} did not form (a port taken meanwhile?); trying other ports")
            for p in started:
                p.terminate()
                p.wait()
        else:
            raise SystemExit("FAIL: could not start a Redis Cluster (redis-server and redis-cli must be installed)")
        for u, port in zip(urls, ports):
            self.map_host(u.hostname, u.port or 6379, port)
        self.redis_port, self.redis_password = ports[0], password
        self.cluster_ports = ports
        masters = [p for p in ports if self.redis_cli(p, password, False, None, 0, "ROLE").stdout.split()[:1] == ["master"]]
        print(f"ok Redis Cluster on 127.0.0.1 {ports}: {len(masters)} masters, {len(ports) - len(masters)} replicas,"
              f" cluster_state:ok; seeds {[u.hostname for u in urls]} mapped to {ports[:len(urls)]}")

    def cluster_ready(self, ports, password):
        def cli(port, *command):
            return self.redis_cli(port, password, False, None, 0, *command).stdout

        deadline = time.time() + 10
        while not all(cli(p, "ping").strip() == "PONG" for p in ports):
            if time.time() > deadline:
                return False
            time.sleep(0.05)
        args = ["redis-cli", "--no-auth-warning", "--cluster", "create"] + [f"127.0.0.1:{p}" for p in ports]
        args += ["--cluster-replicas", "1", "--cluster-yes"] + (["-a", password] if password else [])
        create = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if create.returncode != 0:
            print(create.stdout[-1000:] + create.stderr[-1000:])
            return False

        def node_ok(port):
            if "cluster_state:ok" not in cli(port, "CLUSTER", "INFO"):
                return False
            replication = cli(port, "INFO", "replication")
            if "role:master" in replication:
                return re.search(r"^slave0:.*state=online", replication, re.M) is not None
            return "master_link_status:up" in replication

        deadline = time.time() + 60
        while time.time() < deadline:
            if all(node_ok(p) for p in ports):
                return True
            time.sleep(0.2)
        return False

    def container_env(self, spec, c, pod):
        """The container's environment with its volumes as files and every address local."""
        env = self.resolver.env(c, pod)
        mounts = {}
        for path, content in self.resolver.volume_files(spec, c).items():
            local = os.path.join(self.work, "volumes", pod, path.lstrip("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "w") as f:
                f.write(content)
            mounts[path] = local
        for k, v in env.items():
            env[k] = mounts.get(v, v)
        return {k: self.localize(v) for k, v in env.items()}

    def replicas(self, d):
        if "replicas" in d["spec"]:
            return d["spec"]["replicas"]
        for kind, field in (("HorizontalPodAutoscaler", "minReplicas"), ("ScaledObject", "minReplicaCount")):
            for o in of_kind(self.objects, kind):
                if o["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"]:
                    return max(o["spec"][field], 1)
        return 1

    def run(self):
        self.start_redis()
        deployments = of_kind(self.objects, "Deployment")
        plan = [(d, f"{d['metadata']['name']}-{i}", free_port()) for d in deployments for i in range(self.replicas(d))]
        services = of_kind(self.objects, "Service")
        api = next(s for s in services if s["spec"]["selector"].get("app.kubernetes.io/component") == "order")
        order_port = next(port for d, _, port in plan
                          if d["spec"]["selector"]["matchLabels"] == api["spec"]["selector"])
        self.map_host(api["metadata"]["name"], api["spec"]["ports"][0]["port"], order_port)

        probes = []
        for d, pod, port in plan:
            spec = d["spec"]["template"]["spec"]
            c = spec["containers"][0]
            env = self.container_env(spec, c, pod)
            env["HTTP_ADDR"] = f"127.0.0.1:{port}"  # every pod listens on 8080; here each its own
            self.spawn(pod, [self.binary(c["image"])] + c.get("args", []), env)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    probes.append((pod, probe, f"http://127.0.0.1:{port}{c[probe]['httpGet']['path']}"))
        print(f"booted {len(plan)} pods of {len(deployments)} Deployments")

        deadline = time.time() + 60
        for pod, probe, url in probes:
            while get(url) != 200:
                if time.time() > deadline:
                    self.failures.append(f"{pod} {probe} {url} never answered 200")
                    break
                time.sleep(0.2)
        print(f"ok {len(probes)} probes answered 200")

        self.play_keda()

        for cj in of_kind(self.objects, "CronJob"):
            spec = pod_template(cj)["spec"]
            c = spec["containers"][0]
            name = cj["metadata"]["name"]
            env = self.container_env(spec, c, f"{name}-1")
            run = subprocess.run([self.binary(c["image"])] + c.get("args", []),
                                 env={"PATH": os.environ.get("PATH", ""), **env},
                                 capture_output=True, text=True, timeout=60)
            if run.returncode != 0:
                self.failures.append(f"CronJob {name} exited {run.returncode}: {run.stderr[-2000:]}")
            else:
                print(f"ok CronJob {name}: {run.stdout.strip()[:200]}")

        for pod in of_kind(self.objects, "Pod"):
            if pod["metadata"].get("annotations", {}).get("helm.sh/hook") != "test":
                continue
            c = pod["spec"]["containers"][0]
            args = [self.localize(a) for a in c.get("args", [])]
            env = self.container_env(pod["spec"], c, pod["metadata"]["name"])
            started = time.time()
            run = subprocess.run([self.binary(c["image"])] + args,
                                 env={"PATH": os.environ.get("PATH", ""), **env},
                                 capture_output=True, text=True, timeout=600)
            print(run.stdout.rstrip())
            print(f"helm test took {time.time() - started:.0f} s")
            if run.returncode != 0:
                self.failures.append(f"helm test Pod {pod['metadata']['name']} exited {run.returncode}:"
                                     f" {run.stderr[-2000:]}")

    def play_keda(self):
        """Resolve every trigger of every ScaledObject as KEDA's redis-streams and
        redis-cluster-streams scalers do, then read the lag of its consumer group on its stream
        through that connection."""
        auths = {a["metadata"]["name"]: a for a in of_kind(self.objects, "TriggerAuthentication")}
        deployments = {d["metadata"]["name"]: d for d in of_kind(self.objects, "Deployment")}
        for so in of_kind(self.objects, "ScaledObject"):
            name = so["metadata"]["name"]
            target = deployments[so["spec"]["scaleTargetRef"]["name"]]
            env = self.resolver.env(pod_template(target)["spec"]["containers"][0], "keda")
            read = []
            for trigger in so["spec"]["triggers"]:
                meta = trigger["metadata"]
                cluster = trigger["type"] == "redis-cluster-streams"
                if cluster:
                    # KEDA's cluster client dials any seed and follows the cluster's redirections.
                    address = (meta.get("addresses") or env.get(meta.get("addressesFromEnv", ""), "")).split(",")[-1]
                else:
                    address = meta.get("address") or env.get(meta.get("addressFromEnv", ""), "")
                params = {}
                if "authenticationRef" in trigger:
                    for ref in auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]:
                        params[ref["parameter"]] = self.resolver.secret(ref["name"], ref["key"])
                password = params.get("password") or env.get(meta.get("passwordFromEnv", ""))
                tls = meta.get("enableTLS") == "true" or params.get("tls") == "enable"
                ca_file = self.ca_file
                if "ca" in params:
                    ca_file = os.path.join(self.work, f"keda-{name}-ca.pem")
                    with open(ca_file, "w") as f:
                        f.write(params["ca"])
                local = self.endpoints.get(address)
                if not local:
                    self.failures.append(f"KEDA {name}: address {address!r} is no Redis of this release")
                    continue
                out = self.redis_cli(int(local.rsplit(":", 1)[1]), password, tls, ca_file,
                                     meta.get("databaseIndex", "0"), "XINFO", "GROUPS", meta["stream"],
                                     cluster=cluster)
                lines = out.stdout.split()
                if out.returncode != 0 or meta["consumerGroup"] not in lines or "lag" not in lines:
                    self.failures.append(f"KEDA {name}: XINFO GROUPS {meta['stream']} over {address} "
                                         f"(tls={tls}) gave {out.stdout[:200]!r} {out.stderr[:200]!r}")
                    continue
                lag = lines[lines.index("lag", lines.index(meta["consumerGroup"])) + 1]
                read.append(f"{meta['stream']} lag {lag}")
            if len(read) == len(so["spec"]["triggers"]):
                via = "redis-cli -c" if so["spec"]["triggers"][0]["type"] == "redis-cluster-streams" else "redis-cli"
                print(f"ok KEDA {name} ({len(read)} triggers, {via}): "
                      f"{so['spec']['triggers'][0]['metadata']['consumerGroup']} {', '.join(read)}")

    def stop(self):
        for _, p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.processes:
            try:
                code = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                code = "no exit within 30 s"
            if code != 0 and name not in self.infrastructure:
                self.failures.append(f"{name} exited {code} on SIGTERM; log: {self.work}/{name}.log")


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    target = os.path.abspath(sys.argv[1])
    wanted = sys.argv[2:]
    failed = []
    sets = [(label, files) for label, files in VALUE_SETS if not wanted or any(w in label for w in wanted)]
    for label, files in sets:
        print(f"\n=== {label}")
        work = tempfile.mkdtemp(prefix="fulfillment-boot-")
        boot = Boot(label, render(files), target, work)
        try:
            boot.run()
        finally:
            boot.stop()
        if boot.failures:
            for f in boot.failures:
                print(f"FAIL {f}")
            for name, _ in boot.processes:
                path = os.path.join(work, f"{name}.log")
                if any(name in f for f in boot.failures) and os.path.exists(path):
                    print(f"--- {name}.log (last lines)")
                    print("".join(open(path).readlines()[-20:]))
            failed.append(label)
        else:
            print(f"ok {label}: probes answer, KEDA reads its lag, the CronJob passes, the helm test passes")
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(sets) - len(failed)} passed, {len(failed)} failed (rendered value sets booted)")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
