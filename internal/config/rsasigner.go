package config

import (
	"fmt"
	"log/slog"

	"github.com/keyedge/keyedge/internal/rsasigner"
	"github.com/prometheus/client_golang/prometheus"
)

// rsaSigners makes the process's RSA signers for an rsa_signer setting
// of edge.yaml or keyserver.yaml: once per process, as it loads
// libcrypto, logs the backend in use and registers its metric.
func rsaSigners(setting string, log *slog.Logger, reg prometheus.Registerer) (*rsasigner.Signers, error) {
	backend, err := rsasigner.ParseBackend(setting)
	if err != nil {
		return nil, fmt.Errorf("rsa_signer: %w", err)
	}
	return rsasigner.New(rsasigner.Options{Backend: backend, Logger: log, Registerer: reg})
}
