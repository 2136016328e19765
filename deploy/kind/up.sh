#!/usr/bin/env bash
# Brings fulfillment up on a local kind cluster, then runs its e2e suite with helm test.
#   deploy/kind/up.sh              cluster, images, chart, helm test
#   deploy/kind/up.sh --monitoring also kube-prometheus-stack, Grafana on http://localhost:30300
#   deploy/kind/up.sh --demo       the seed's unstable inventory (40% failures), retried within seconds
#   deploy/kind/up.sh --no-mail    without Mailpit (the customers' mail is then only logged)
# Needs docker, kind, kubectl and helm (v3.8+ or v4). Settings: CLUSTER_NAME (fulfillment),
# NAMESPACE (fulfillment), RELEASE (fulfillment), IMAGE_TAG (the workspace version and commit, with
# -dirty-<hash> for uncommitted changes), KUBE_PROMETHEUS_STACK_VERSION (88.5.3).
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster=${CLUSTER_NAME:-fulfillment}
namespace=${NAMESPACE:-fulfillment}
release=${RELEASE:-fulfillment}
# kube-prometheus-stack is pinned: from 79.0.0 on it generates Grafana's admin password (read below
# from its Secret); a newer major may change more than that.
kps_version=${KUBE_PROMETHEUS_STACK_VERSION:-88.5.3}
monitoring=false
demo=false
mail=true
for arg in "$@"; do
  case $arg in
    --monitoring) monitoring=true ;;
    --demo) demo=true ;;
    --no-mail) mail=false ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
done

# Images first: a compile error stops here, with its message, before anything is installed.
export IMAGE_REGISTRY=fulfillment
IMAGE_TAG=${IMAGE_TAG:-$(scripts/build-images --print-tag)}
export IMAGE_TAG
if ! images=$(scripts/build-images); then
  echo "up.sh: building the images failed (see above); nothing was loaded or installed" >&2
  exit 1
fi

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config deploy/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$cluster" >/dev/null

while read -r image; do
  kind load docker-image --name "$cluster" "$image"
done <<<"$images"

values=(-f deploy/kind/values-kind.yaml)
if $mail; then
  # Mailpit catches every message the notification service sends (its image from docker.io).
  values+=(-f deploy/kind/values-mail.yaml)
fi
if $demo; then
  values+=(-f deploy/helm/fulfillment/values-demo.yaml)
fi

if $monitoring; then
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
  helm repo update prometheus-community >/dev/null
  # Grafana's sidecar picks up every ConfigMap labelled grafana_dashboard=1, in every namespace.
  # Its first install pulls a dozen images: give it time.
  helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    --version "$kps_version" --namespace monitoring --create-namespace --wait --timeout 15m \
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
  --create-namespace --wait --timeout 10m "${values[@]}" \
  --set global.image.registry="$IMAGE_REGISTRY" --set global.image.tag="$IMAGE_TAG"

helm test "$release" --namespace "$namespace" --logs --timeout 10m

echo
echo "fulfillment is up: http://localhost:30080 (API and console)"
if $monitoring; then
  # The chart generates the password unless grafana.adminPassword is set; read it back.
  password=$(kubectl --namespace monitoring get secret kube-prometheus-stack-grafana \
    -o jsonpath='{.data.admin-password}' | base64 -d) ||
    password="(read it with: kubectl -n monitoring get secret kube-prometheus-stack-grafana -o jsonpath='{.data.admin-password}' | base64 -d)"
  echo "Grafana: http://localhost:30300 (admin / $password), dashboard 'Fulfillment pipeline'"
fi
prefix=$release
[[ $release == *fulfillment* ]] || prefix="$release-fulfillment"
echo "scale a group: kubectl -n $namespace scale deployment/$prefix-inventory --replicas=5"
if $mail; then
  echo "the customers' mail (Mailpit): kubectl -n $namespace port-forward service/$prefix-mailpit 8025:8025, then http://localhost:8025"
fi
