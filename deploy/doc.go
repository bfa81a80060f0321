// Package deploy holds the tests of what partroute ships to run it: the container image built
// from the Containerfile (with podman), the container variant of the example configuration
// under deploy/container, the Grafana dashboard under deploy/grafana and the Prometheus rules
// under deploy/prometheus. It has no code of its own. Its tests fail, never skip, when podman
// or etcd is missing: `make e2e` installs both first.
package deploy
