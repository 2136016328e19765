#!/usr/bin/env python3
"""Checks the pipeline's metrics, dashboards and alert rules against a real Prometheus.

1. Starts `fulfillment up` (with a private redis-server, unstable inventory and a fast retry
   worker, so retries and dead letters happen) and every service binary against the same Redis.
2. `promtool check metrics` on each process's /metrics; `promtool check rules` on the rules file.
3. Starts Debian's `prometheus` scraping all of them every second, drives orders (completed,
   declined, out of stock, bad requests), then evaluates every PromQL expression of the Grafana
   dashboards and the signal of every alert rule through Prometheus's HTTP API, and fails unless
   each returns data.

Usage: check_prometheus.py TARGET_DIR   (where the binaries are, e.g. target/debug)
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART_FILES = os.path.join(ROOT, "deploy", "helm", "fulfillment", "files")
RULES = os.path.join(CHART_FILES, "alerts", "fulfillment-rules.yml")
DASHBOARDS = sorted(glob.glob(os.path.join(CHART_FILES, "dashboards", "*.json")))
SERVICES = ["order-service", "inventory-service", "payment-service", "shipping-service",
            "notification-service"]
# Grafana's range variables, as a dashboard would resolve them for a 1s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(url, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            status, _ = http("GET", url)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAIL: {what} did not answer at {url} within {seconds}s")


def signal_of(expr):
    """The signal of an alert expression: what stands before its top-level comparison."""
    depth = 0
    for i, ch in enumerate(expr):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and expr[i:i + 2] in (">=", "<=", "==", "!="):
            return expr[:i].strip()
        elif depth == 0 and ch in "<>":
            return expr[:i].strip()
    return expr


def rule_expressions():
    exprs = []
    with open(RULES) as f:
        for line in f:
            m = re.match(r"\s*expr:\s*(.+?)\s*$", line)
            if m:
                exprs.append((f"rule: {m.group(1)}", signal_of(m.group(1))))
    if not exprs:
        raise SystemExit(f"FAIL: no expr lines in {RULES}")
    return exprs


def dashboard_expressions():
    exprs = []
    for path in DASHBOARDS:
        with open(path) as f:
            dashboard = json.load(f)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(var, value)
                exprs.append((f"{os.path.basename(path)} / {panel['title']}", expr))
    if not exprs:
        raise SystemExit("FAIL: no dashboard expressions found")
    return exprs


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    target = os.path.abspath(sys.argv[1])
    for tool in ("promtool", "prometheus", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"missing: {tool} (Debian: apt-get install prometheus redis-server)")

    subprocess.run(["promtool", "check", "rules", RULES], check=True)

    work = tempfile.mkdtemp(prefix="fulfillment-prometheus-")
    processes = []
    redis_url = f"redis://127.0.0.1:{free_port()}"
    env = dict(os.environ, REDIS_URL=redis_url, LOG_FORMAT="json", RUST_LOG="warn",
               INVENTORY_FAILURE_RATE="0.3", RETRY_MIN_IDLE_MS="400", RETRY_INTERVAL_MS="300",
               RETRY_MAX_RETRIES="1", BLOCK_MS="100")

    def start(args, extra_env, name):
        log = open(os.path.join(work, f"{name}.log"), "w")
        p = subprocess.Popen(args, env=dict(env, **extra_env), stdout=log, stderr=subprocess.STDOUT)
        processes.append((name, p))
        return p

    try:
        api_port = free_port()
        start([os.path.join(target, "fulfillment"), "up", "--http", f"127.0.0.1:{api_port}",
               "--state-dir", os.path.join(work, "redis")], {}, "fulfillment-up")
        api = f"http://127.0.0.1:{api_port}"
        wait_for(f"{api}/readyz", "fulfillment up")

        targets = {"fulfillment-up": f"127.0.0.1:{api_port}"}
        for service in SERVICES + ["retry-worker"]:
            port = free_port()
            args = [os.path.join(target, service)] + (["--loop"] if service == "retry-worker" else [])
            start(args, {"HTTP_ADDR": f"127.0.0.1:{port}", "CONSUMER_NAME": f"{service}-proc"}, service)
            targets[service] = f"127.0.0.1:{port}"
        for name, address in targets.items():
            wait_for(f"http://{address}/readyz", name)

        for name, address in targets.items():
            _, body = http("GET", f"http://{address}/metrics")
            check = subprocess.run(["promtool", "check", "metrics"], input=body,
                                   capture_output=True)
            if check.returncode != 0:
                raise SystemExit(f"FAIL: promtool check metrics on {name}:\n"
                                 f"{check.stdout.decode()}{check.stderr.decode()}")
            print(f"promtool check metrics: {name} ok")

        prom_port = free_port()
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: fulfillment\n    static_configs:\n"
                    f"      - targets: {json.dumps(list(targets.values()))}\n")
        start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work}/tsdb",
               f"--web.listen-address=127.0.0.1:{prom_port}"], {}, "prometheus")
        prom = f"http://127.0.0.1:{prom_port}"
        wait_for(f"{prom}/-/ready", "prometheus")

        status, body = http("POST", f"{api}/products",
                            {"id": "metrics-bulk", "name": "bulk", "price": 100, "stock": 100000})
        if status != 201:
            raise SystemExit(f"FAIL: creating a product: {status} {body[:200]}")
        order = lambda product, token: {"customer_id": "m", "customer_email": "m@example.com",
                                        "items": [{"product_id": product, "quantity": 1}],
                                        "payment_token": token}
        drive_until = time.time() + 25
        placed = 0
        while time.time() < drive_until:
            for product, token in (("metrics-bulk", "tok_visa"), ("metrics-bulk", "tok_visa"),
                                   ("metrics-bulk", "tok_chargeDeclined"), ("product-C", "tok_visa")):
                status, _ = http("POST", f"{api}/orders", order(product, token))
                placed += status == 201
            http("POST", f"{api}/orders", b"{not json")
            http("GET", f"{api}/orders/no-such-order")
            time.sleep(0.1)
        time.sleep(5)
        print(f"placed {placed} orders")

        failures = []
        for where, expr in dashboard_expressions() + rule_expressions():
            url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            status, body = http("GET", url)
            result = json.loads(body) if status == 200 else {}
            series = len(result.get("data", {}).get("result", [])) if result.get("status") == "success" else -1
            print(f"{'ok ' if series > 0 else 'EMPTY'} {series:>3} series  {where}: {expr}")
            if series <= 0:
                failures.append(f"{where}: {expr} ({body[:200]!r})")
        if failures:
            raise SystemExit("FAIL: these expressions returned no data:\n  " + "\n  ".join(failures))
        print(f"every dashboard and rule expression returned data ({placed} orders driven)")
    finally:
        for name, p in reversed(processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(processes):
            try:
                code = p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                code = "killed"
            if code not in (0, -signal.SIGTERM) and name != "prometheus":
                print(f"warning: {name} exited {code}; log in {work}/{name}.log")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
