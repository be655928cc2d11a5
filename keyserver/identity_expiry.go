package keyserver

import (
	"crypto/tls"
	"crypto/x509"
)

// identityExpiry is the NotAfter, in Unix seconds, of the certificate cfg
// presents: the client's (GetClientCertificate) or the server's
// (GetCertificate, asked as for a ClientHello without SNI), else the
// first of Certificates; 0 when there is none. A getter that re-reads
// renewed files makes the value follow the renewal.
func identityExpiry(cfg *tls.Config) float64 {
	var cert *tls.Certificate
	switch {
	case cfg.GetClientCertificate != nil:
		cert, _ = cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	case cfg.GetCertificate != nil:
		cert, _ = cfg.GetCertificate(&tls.ClientHelloInfo{})
	case len(cfg.Certificates) > 0:
		cert = &cfg.Certificates[0]
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return 0
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return 0
		}
	}
	return float64(leaf.NotAfter.Unix())
}
