// Package deploy holds the tests of what partroute ships to run it: the container image built
// from the Containerfile (with podman), the container variant of the example configuration
// under deploy/container, the Grafana dashboard under deploy/grafana, the Prometheus rules
// under deploy/prometheus, the Kubernetes manifests under deploy/kubernetes, the Helm chart
// under deploy/helm (linted and rendered with helm) and the Envoy Gateway example under
// deploy/envoy-gateway (translated by Envoy Gateway's egctl and run on a real Envoy). It has no
// code of its own. Its tests fail, never skip, when podman, etcd or Envoy is missing: `make e2e`
// installs them first, and builds the pinned helm and egctl into .cache, which the tests also
// build themselves when they are not there.
package deploy
