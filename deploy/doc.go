// Package deploy holds the tests of what partroute ships to run it: the container image built
// from the Containerfile (with podman), the container variant of the example configuration
// under deploy/container, the Grafana dashboard under deploy/grafana, the Prometheus rules
// under deploy/prometheus, the Kubernetes manifests under deploy/kubernetes and the Helm chart
// under deploy/helm (linted and rendered with helm). It has no code of its own. Its tests
// fail, never skip, when podman or etcd is missing: `make e2e` installs both first, and builds
// the pinned helm into .cache, which the chart's tests also build themselves when it is not
// there.
package deploy
