// Package keyserver is keyless signing: the key server customers run on
// their own machines so that keyedge terminates TLS for them without
// holding their private keys (Server, with its KeySources), and the
// client the edge signs through (Client). The wire format is package
// wire's; the binary around the server is cmd/keyserver.
//
// The server speaks the Keyless SSL protocol (package wire) over mutual
// TLS: the edge sends the digest to sign (or, for RSA key exchange, the
// ciphertext to decrypt) and names the key by SKI, certificate ID or
// server name; the server answers with the signature. Many requests
// share one connection and are answered as they complete, so out of
// order.
//
// A Server takes its keys from a KeySource: DirSource serves a
// directory of key files with hot reload, KeystoreSource a keyedge
// keystore. An Authorizer says which client certificates may use which
// keys; a client asking for a key it may not use is told the key does
// not exist, and the denial is counted and logged (rate-limited). A
// Server without an Authorizer denies everything; AllowAll says
// otherwise explicitly. Raw RSA decryption, which ECDHE handshakes never
// need, is off unless ServerOptions.AllowRSADecrypt is set.
//
//	keys, err := keyserver.NewDirSource("/etc/keyserver/keys", keyserver.DirOptions{})
//	...
//	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{
//		{Clients: []string{"dns:edge-fra1.example.net"}, Keys: []string{"name:shop.example"}},
//	})
//	...
//	srv, err := keyserver.NewServer(keyserver.ServerOptions{
//		Keys:       keys,
//		Authorizer: auth,
//		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: edgeCAs},
//	})
//	...
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // answers the requests already read, then closes
//
// A Client signs through the key servers holding a key, most preferred
// first. Each attempt on one server, dial included, is bounded by
// ClientOptions.AttemptTimeout, the last one tried by the caller's
// deadline alone; a server that does not answer in time is skipped until
// its health check (a ping every PingInterval) passes, one that fails
// fast for a doubling backoff. Its metrics are keyedge_keyless_client_*,
// failovers counted by reason; failures are logged rate-limited.
//
// Metrics are keyedge_keyserver_requests_total{op,result},
// keyedge_keyserver_sign_seconds{family}, keyedge_keyserver_connections,
// keyedge_keyserver_connections_total{result} and
// keyedge_keyserver_denials_total. Logs name clients by certificate
// common name or SPKI hash and never contain key bytes or payloads.
package keyserver
