#!/usr/bin/env python3
"""The images as users run them: built from the real Dockerfile and run under podman.

Usage: check_containers.py [--keep]

1. Stand-in base images (scripts/standin-images: Debian 12 packages standing in for the Rust,
   distroless and Redis images no registry here serves), then every image from the real
   Dockerfile through scripts/build-images with only RUST_IMAGE and RUNTIME_IMAGE swapped; each
   image's size printed.
2. compose.yaml under podman-compose (REDIS_IMAGE swapped for the stand-in, API_PORT free): ready,
   its e2e service passes, inventory scaled to 3 shares inventory_group, a service stopped with
   SIGTERM exits 0 within its grace period and nothing it had is lost, and in every container of
   the pipeline: uid 65532, a read-only root file system, no shell.
3. The chart rendered with the kind values and run as pods under podman kube play, its helm test
   pod passing (tests/containers/kube_play.py, which prints every translation it makes).

Prints "N passed, N failed"; exit 1 when a check failed.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = ["order-service", "inventory-service", "payment-service", "shipping-service",
          "notification-service", "retry-worker", "fulfillment-e2e"]
PIPELINE = ["order", "inventory", "payment", "shipping", "notification", "retry-worker"]
PASSWORD = "fulfillment-local"

results = []


def check(name):
    def wrap(fn):
        def run_check(*args):
            started = time.monotonic()
            try:
                value = fn(*args)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
                results.append((name, e))
                print(f"FAIL {name} ({time.monotonic() - started:.0f} s): {e}", flush=True)
                return None
            results.append((name, None))
            print(f"PASS {name} ({time.monotonic() - started:.0f} s)", flush=True)
            return value
        return run_check
    return wrap


def run(cmd, env=None, timeout=3600, check_rc=True, quiet=False):
    out = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None)
    if check_rc and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}: {out.stdout[-2000:]}")
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def eventually(what, within, probe):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - not yet
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what} within {within} s (last: {last})")


class Compose:
    """One compose project of this run, taken down at the end."""

    def __init__(self, env):
        self.project = f"fulfillment-check-{os.getpid()}"
        self.env = env
        self.base = ["podman-compose", "-f", "compose.yaml", "-p", self.project]

    def __call__(self, *args, timeout=600, check_rc=True):
        return run(self.base + list(args), env=self.env, timeout=timeout, check_rc=check_rc,
                   quiet=True)

    def containers(self, service=None):
        out = run(["podman", "ps", "-a", "--format", "json",
                   "--filter", f"label=io.podman.compose.project={self.project}"], quiet=True)
        found = json.loads(out.stdout or "[]")
        if service:
            found = [c for c in found
                     if c.get("Labels", {}).get("com.docker.compose.service") == service]
        return found

    def down(self):
        """Everything of the project gone: `down` leaves the containers `--scale` added (and the
        Redis they depend on), so those go by their label, then the network and the volume."""
        self("down", "-v", check_rc=False)
        for _ in range(2):
            leftovers = [c["Id"] for c in self.containers()]
            if leftovers:
                run(["podman", "rm", "-f", "-t", "0"] + leftovers, check_rc=False, quiet=True)
        run(["podman", "pod", "rm", "-f", f"pod_{self.project}"], check_rc=False, quiet=True)
        run(["podman", "network", "rm", "-f", f"{self.project}_default"], check_rc=False,
            quiet=True)
        run(["podman", "volume", "rm", "-f", f"{self.project}_redis-data"], check_rc=False,
            quiet=True)
        return [c["Names"] for c in self.containers()]

    def redis(self, *args):
        (redis,) = [c["Names"][0] for c in self.containers("redis")]
        out = run(["podman", "exec", redis, "redis-cli", "-a", PASSWORD, "--no-auth-warning"]
                  + list(args), quiet=True)
        return out.stdout


@check("stand-in base images (scripts/standin-images)")
def standins():
    # Built when missing (and podman installed and set up): --print-env alone only names them,
    # and on a fresh machine nothing would stand in.
    run(["scripts/standin-images"])
    out = run(["scripts/standin-images", "--print-env"], quiet=True)
    env = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    assert {"RUST_IMAGE", "RUNTIME_IMAGE", "REDIS_IMAGE"} <= env.keys(), env
    return env


@check("every image from the real Dockerfile (scripts/build-images, podman)")
def build(standin):
    env = dict(os.environ, CONTAINER_ENGINE="podman", RUST_IMAGE=standin["RUST_IMAGE"],
               RUNTIME_IMAGE=standin["RUNTIME_IMAGE"])
    refs = run(["scripts/build-images"], env=env).stdout.split()
    assert sorted(r.split("/", 1)[1].rsplit(":", 1)[0] for r in refs) == sorted(IMAGES), refs
    for ref in refs:
        size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", ref],
                       quiet=True).stdout.strip())
        print(f"  {ref}: {size / 1e6:.1f} MB")
    return refs[0].rsplit(":", 1)[1]


def order(api, n):
    return http("POST", f"{api}/orders", {
        "customer_id": f"c-{n}", "customer_email": "c@example.com",
        "items": [{"product_id": "product-A", "quantity": 1}],
    })


@check("compose.yaml under podman-compose: every service ready")
def compose_up(compose, api):
    compose("up", "-d")
    eventually("the API ready", 120, lambda: http("GET", f"{api}/readyz")[0] == 200)
    for service in PIPELINE:
        (c,) = compose.containers(service)
        assert c["State"] == "running", f"{service}: {c['State']}"


@check("compose.yaml: its e2e service passes against it")
def compose_e2e(compose):
    out = compose("--profile", "test", "run", "--rm", "e2e", timeout=300, check_rc=False)
    print("\n".join("  " + line for line in out.stdout.splitlines()[-12:]))
    assert out.returncode == 0, f"e2e exited {out.returncode}"


@check("every pipeline container: uid 65532, a read-only root, no shell")
def hardened(compose):
    for service in PIPELINE:
        (c,) = compose.containers(service)
        name = c["Names"][0]
        (info,) = json.loads(run(["podman", "inspect", name], quiet=True).stdout)
        pid = info["State"]["Pid"]
        with open(f"/proc/{pid}/status") as f:
            uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
        assert set(uids) == {"65532"}, f"{service} runs as uid {uids}"
        assert info["HostConfig"]["ReadonlyRootfs"], f"{service}: the root is writable"
        for shell in ("/bin/sh", "/bin/bash", "/busybox/sh"):
            out = run(["podman", "exec", name, shell, "-c", "true"], check_rc=False, quiet=True)
            assert out.returncode != 0, f"{service} has a shell: {shell}"


@check("inventory scaled to 3: three consumers share inventory_group")
def scaled(compose, api):
    compose("up", "-d", "--scale", "inventory=3")
    eventually("three inventory containers running", 60,
               lambda: len([c for c in compose.containers("inventory")
                            if c["State"] == "running"]) == 3)
    time.sleep(3)
    http("POST", f"{api}/products", {"id": "scaled", "name": "scaled", "price": 1,
                                     "stock": 100000})
    for n in range(120):
        status, _ = http("POST", f"{api}/orders", {
            "customer_id": f"s-{n}", "customer_email": "s@example.com",
            "items": [{"product_id": "scaled", "quantity": 1}]})
        assert status == 201, status
    keys = compose.redis("--scan", "--pattern", "*handled:inventory_group").split()
    assert len(keys) == 1, keys

    def shares():
        fields = compose.redis("HGETALL", keys[0]).split()
        counts = dict(zip(fields[::2], (int(v) for v in fields[1::2])))
        return counts if len([v for v in counts.values() if v > 0]) >= 3 else None
    counts = eventually("three consumers each handling a share", 60, shares)
    print(f"  inventory_group shares: {counts}")


@check("a service stopped with SIGTERM exits 0 within its grace period, nothing lost")
def sigterm(compose, api):
    (payment,) = compose.containers("payment")
    name = payment["Names"][0]
    ids = []
    for n in range(40):
        status, placed = order(api, f"t-{n}")
        assert status == 201, status
        ids.append(placed["id"])
    started = time.monotonic()
    run(["podman", "stop", "--time", "30", name], quiet=True)
    took = time.monotonic() - started
    (info,) = json.loads(run(["podman", "inspect", name], quiet=True).stdout)
    assert info["State"]["ExitCode"] == 0, f"payment exited {info['State']['ExitCode']}"
    assert took < 30, f"payment took {took:.1f} s to stop"
    print(f"  payment stopped in {took:.1f} s, exit 0")
    run(["podman", "start", name], quiet=True)
    for order_id in ids:
        eventually(f"order {order_id} final", 120,
                   lambda: http("GET", f"{api}/orders/{order_id}")[1]["status"]
                   in ("COMPLETED", "CANCELLED"))
    pending = eventually("nothing pending in payment_group", 60, lambda: (
        compose.redis("XPENDING", "order_events", "payment_group").split() or ["1"])[0] == "0")
    assert pending


@check("the rendered chart under podman kube play, its helm test pod passing (kube_play.py)")
def kube_play(tag):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "containers", "kube_play.py"),
                          "--tag", tag], cwd=ROOT, timeout=900)
    assert out.returncode == 0, f"kube_play.py exited {out.returncode}"


def main():
    keep = "--keep" in sys.argv
    standin = standins()
    tag = build(standin) if standin else None
    if tag:
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}"
        env = dict(os.environ, IMAGE_TAG=tag, REDIS_IMAGE=standin["REDIS_IMAGE"],
                   API_PORT=str(api_port))
        compose = Compose(env)
        try:
            compose_up(compose, api)
            if not results[-1][1]:
                compose_e2e(compose)
                hardened(compose)
                scaled(compose, api)
                sigterm(compose, api)
        finally:
            if not keep:
                left = compose.down()
                results.append(("compose project removed", AssertionError(left) if left else None))
        kube_play(tag)
    passed = sum(1 for _, e in results if e is None)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
