#!/usr/bin/env bash
# Brings fulfillment up on a local kind cluster, then runs its e2e suite with helm test.
#   deploy/kind/up.sh              cluster, images, chart, helm test
#   deploy/kind/up.sh --monitoring also kube-prometheus-stack, Grafana on http://localhost:30300
#   deploy/kind/up.sh --demo       the seed's unstable inventory (40% failures)
# Needs docker, kind, kubectl and helm (v3.8+ or v4). Settings: CLUSTER_NAME (fulfillment),
# NAMESPACE (fulfillment), RELEASE (fulfillment), IMAGE_TAG (the workspace version and commit).
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster=${CLUSTER_NAME:-fulfillment}
namespace=${NAMESPACE:-fulfillment}
release=${RELEASE:-fulfillment}
monitoring=false
demo=false
for arg in "$@"; do
  case $arg in
    --monitoring) monitoring=true ;;
    --demo) demo=true ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
done

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config deploy/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$cluster" >/dev/null

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
export IMAGE_REGISTRY=fulfillment
export IMAGE_TAG=${IMAGE_TAG:-$version-$(git rev-parse --short HEAD 2>/dev/null || echo local)}
while read -r image; do
  kind load docker-image --name "$cluster" "$image"
done < <(scripts/build-images)

values=(-f deploy/kind/values-kind.yaml)
if $demo; then
  values+=(-f deploy/helm/fulfillment/values-demo.yaml)
fi

if $monitoring; then
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
  helm repo update prometheus-community >/dev/null
  # Grafana's sidecar picks up every ConfigMap labelled grafana_dashboard=1, in every namespace.
  helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    --namespace monitoring --create-namespace --wait \
    --set grafana.service.type=NodePort --set grafana.service.nodePort=30300 \
    --set grafana.sidecar.dashboards.enabled=true \
    --set grafana.sidecar.dashboards.searchNamespace=ALL \
    --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false
else
  # Without the Prometheus Operator its objects cannot be created.
  values+=(--set metrics.serviceMonitor.enabled=false --set metrics.podMonitor.enabled=false
    --set metrics.prometheusRule.enabled=false)
fi

helm upgrade --install "$release" deploy/helm/fulfillment --namespace "$namespace" \
  --create-namespace --wait --timeout 5m "${values[@]}" \
  --set global.image.registry="$IMAGE_REGISTRY" --set global.image.tag="$IMAGE_TAG"

helm test "$release" --namespace "$namespace" --logs

echo
echo "fulfillment is up: http://localhost:30080 (API and console)"
if $monitoring; then
  echo "Grafana: http://localhost:30300 (admin / prom-operator), dashboard 'Fulfillment pipeline'"
fi
echo "scale a group: kubectl -n $namespace scale deployment/$release-inventory --replicas=5"
