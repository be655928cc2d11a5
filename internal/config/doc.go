// Package config is the configuration files of the binaries: edge.yaml
// of `keyedge serve` (Edge) and keyserver.yaml of `keyserver`
// (KeyServer). It holds their schemas, their strict loading (an unknown
// key is an error; relative paths are relative to the file), their
// validation (every problem named by its setting) and the wiring of a
// loaded file into the libraries' options: edge.Options, the keyless
// client, the ACME manager, the keystore, and the key server's
// keyserver.ServerOptions and key source.
//
// It is used by cmd/keyedge, cmd/keyserver and the deploy tests only, so
// the libraries (edge, keyserver, keystore) link no YAML decoder and no
// storage backend they do not use.
package config
