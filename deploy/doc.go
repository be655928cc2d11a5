// Package deploy holds keyedge's deployment artefacts and the tests that
// check them offline, so `cd deploy && go test ./...` (and so `make
// test`) fails when one of them is wrong:
//
//	docker/*.Dockerfile   one multi-stage image per binary: keyedge, keyserver, keyctl
//	../.dockerignore      the build context of those images (the repository root)
//	k8s/                  Namespace, edge Deployment/Service/ConfigMap/Secret/PDB,
//	                      key server Deployment/Service/ConfigMap/Secrets (kubectl apply -k)
//	k8s/dev/redis.yaml    a throwaway Redis for test clusters; never production
//	k8s/identity-*.yaml   the identity CA Secret, and the CronJob (with its RBAC) that renews
//	                      the edges' and key servers' 24h mTLS identities at most 16h apart
//	systemd/*.service     the edge (with tableflip upgrades on SIGUSR2) and the key server
//	systemd/keyedge-identity@.{service,timer}  the same renewal on hosts
//	monitoring/keyedge-alerts.yaml     Prometheus alert rules (Prometheus's rule parser; every
//	                                   metric and label checked against the source's registrations)
//	monitoring/keyedge-dashboard.json  a Grafana dashboard (Grafana Foundation SDK, strict), the same checks
//
// The tests read the artefacts with the parsers the real tools use: the
// Kubernetes API types with strict decoding (sigs.k8s.io/yaml, unknown or
// duplicate fields fail), BuildKit's Dockerfile parser, instruction parser
// and linter, moby's .dockerignore matcher, and go-systemd's unit parser
// (plus `systemd-analyze verify` where it is installed). Then they check
// what a reviewer would, against the code rather than against copies of
// it: edge.yaml and keyserver.yaml are loaded with the binaries' own
// loaders (internal/config's LoadEdge and LoadKeyServer); every command
// line's flags are checked against the flag sets read from cmd/keyserver
// and cmd/keyedge's source; ports,
// probes, selectors, grace periods, secrets and mounts are checked
// against each other. Each check also has a test that breaks an artefact
// on purpose and expects the check to fail.
//
// deploy is a Go module of its own (github.com/keyedge/keyedge/deploy),
// so the parsers above are its requirements and not the product's: its
// go.mod replaces github.com/keyedge/keyedge with the checkout it sits
// in (../), so the checks always run against this commit's code, and
// being under the product's import path it may import the product's
// internal packages.
//
// The identity job's and unit's keyctl command lines are run with the
// real keyctl (a tool of this module, so its requirements are here).
//
// Nothing here builds an image, talks to a cluster or starts a unit: the
// images' base tags, the kubelet's and systemd's run-time behaviour are
// outside what these tests can see.
//
// Secret files: Kubernetes mounts them group-readable (0440, root:fsGroup)
// for a non-root pod. Every secret and private key file the binaries read
// (fleet key, ticket secret, node key, TLS and identity keys, the key
// server's key directory) goes through internal/secretfile, which refuses
// a file others can read but accepts exactly that shape: owned by root,
// group-read-only, and the group is one the process is in.
package deploy
