#!/usr/bin/env bash
# Deletes the kind cluster made by up.sh, and everything in it.
set -euo pipefail
cluster=${CLUSTER_NAME:-fulfillment}
command -v kind >/dev/null 2>&1 || { echo "missing: kind" >&2; exit 1; }
kind delete cluster --name "$cluster"
