// Package chaos is keyedge's chaos suite: each scenario runs real
// processes built from this repository — `keyedge serve`, `keyserver`,
// `keyctl` — on 127.0.0.1 in a temporary directory, injects one fault
// under a bounded load of real TLS handshakes and HTTP requests, and
// asserts the invariant that must survive it. It only ever sends traffic
// to 127.0.0.1. The package holds nothing but this documentation and its
// tests.
//
// # Running it
//
//	make chaos                                   # every scenario (KEYEDGE_CHAOS=1)
//	go test -race -count=1 ./internal/chaos/...  # the fast subset, as make test runs it
//	KEYEDGE_CHAOS=1 go test -race -count=1 -run SIGUSR2 -v ./internal/chaos/
//
// The binaries are built once per run, without -race (only the test
// process needs it). Scenarios not in the fast subset call full(t) and
// are skipped without KEYEDGE_CHAOS=1. A world with options.Redis keeps
// its keystore in a redis-server started by internal/redistest (its
// Process can be stopped or killed); such scenarios are skipped without
// redis-server, unless KEYEDGE_REQUIRE_REDIS is set.
//
// # The world
//
// newWorld (world_test.go) makes, with keyctl, a keystore of local
// tenants t0…t<N-1>.keyedge.test and one keyless tenant,
// keyless.keyedge.test, whose key only the key servers hold (ks1
// preferred, then ks2); issues mTLS identities for the edge and the key
// servers, and authorizes the edge's identity for that one key on each
// key server; starts the key servers and `keyedge serve --pid-file` with
// an edge.yaml, and waits for /readyz. The origin, in the test process,
// answers "origin HOST" and holds requests to /hold until released. Every
// process logs to a file in the world's directory, shown when the test
// fails; every process is continued and killed when the test ends; and a
// watchdog kills them all if the scenario outlives its hard timeout
// (options.Timeout, 2 minutes by default), failing it.
//
// The load driver (load_test.go) runs at most Requests requests (≤ 2,000)
// for at most Within (10 s by default) from a few clients, by default
// one new connection — one full handshake — per request, to several
// tenants in turn, and reports per tenant how many succeeded and failed
// and the first error; report.from(n) keeps the requests that finished
// after the first n, so a scenario can check what happened after the
// fault. No assertion reads the wall clock: waits are bounded polls.
//
// # Scenarios
//
// Adding one is a test function: newWorld, startLoad or run, the fault,
// and allOK / allFailed on the report.
//
//   - TestKeyServerKilled (fast over a keystore directory; over a Redis
//     keystore in the full suite): the preferred key server is killed
//     with SIGKILL under load; every request succeeds, and the keyless
//     tenant is still served after the kill.
//   - TestKeyServersAllDown: both key servers killed; only the keyless
//     tenant fails, local tenants are all served; one key server
//     restarted, the keyless tenant is served again without restarting
//     the edge, and a new load has no failure.
//   - TestKeyServerStopped: the preferred key server is SIGSTOPped under
//     load; no request fails (the edge fails over after the keyless
//     attempt timeout).
//   - TestKeyServersAllHung: both key servers SIGSTOPped; once the edge
//     has marked them down, every keyless handshake fails promptly (an
//     internal_error alert, none by the client's 5s timeout) instead of
//     holding its connection for the handshake timeout; local tenants
//     are all served; continued, the keyless tenant is served again.
//   - TestCorruptTenantFiles (fast): one tenant's record and a third's
//     name file overwritten with garbage, another's sealed key (its
//     record's last byte) flipped; every
//     request to them fails, the other tenants are served, no keystore
//     file is deleted and the garbage is left as it was.
//   - TestSwappedNameFiles: two tenants' name files swapped on disk;
//     neither is served the other's certificate (both fail cleanly),
//     the others are served.
//   - TestPolicySetRefused (fast): `keyctl policy set` with a policy
//     over the canonical length limit fails and changes no keystore
//     byte; the tenants go on being served; valid policy changes on the
//     same tenant work afterwards.
//   - TestImportOnFullDisk (fast; skipped where a tmpfs cannot be
//     mounted): the keystore on a 1 MB tmpfs filled to leave 0…8 pages
//     free while an edge serves it; each `keyctl import` of a new tenant
//     exits 0 and the tenant is found by `keyctl show` and served, or
//     exits 1 and leaves every keystore file as it was (no lock file,
//     temporary file or orphan certificate) with the tenant neither
//     found nor served; with the space back the import succeeds.
//   - TestSIGTERMDrains: SIGTERM with requests held at the origin and a
//     load running; the held requests complete with the origin's answer,
//     every request before the signal succeeded, the edge exits 0.
//   - TestKeystoreVanished: the keystore directory moved away under
//     load: cached tenants are served, uncached ones fail with an error
//     (internal_error, not unrecognized_name) counted as a lookup error,
//     /readyz is 503 and keyedge_keystore_storage_up 0, the edge logs at
//     most a few lines; moved back, every tenant is served again without
//     a restart.
//   - TestServeRefusesMissingKeystore (fast): `keyedge serve` on a
//     keystore path that does not exist, or an empty directory, exits
//     non-zero saying "keystore: not initialised … run keyctl init".
//   - TestRedisUnavailable: the Redis keystore SIGSTOPped, then killed,
//     under load: cached tenants served, uncached ones fail promptly
//     (every request of the load completes, none by the client's 5s
//     timeout), /readyz 503, a few log lines (go-redis's own dial
//     errors included); continued or restarted, every
//     tenant is served without restarting the edge.
//   - TestUnknownNameFlood: 20,000 ClientHellos for distinct unknown
//     names against an edge on Redis: at most 1% pass the name filter
//     to storage, every tenant request succeeds meanwhile.
//   - TestSlowBodies: 200 POSTs sending 1 byte/s with
//     limits.body_read_timeout 500ms: each answered 408, the origin left
//     reading none of them, normal clients served.
//   - TestSlowReaders: 100 GETs of a large response whose clients read
//     nothing, with limits.send_timeout 500ms: each closed by the edge
//     and counted, the origin left streaming to none of them, normal
//     clients served.
//   - TestIdleSocketsPerIP (fast): 300 idle sockets from 127.0.0.1 with
//     limits.max_conns_per_ip 100: 200 refused at accept (counted and
//     logged), a client from 127.0.0.2 served.
//   - TestSIGHUPBadLimits (fast): SIGHUP with limits.handshake_timeout
//     -5s under load: the reload is refused naming the setting, no
//     request fails, /readyz stays 200.
//   - TestSIGHUPUnderLoad: three config reloads under load over new and
//     kept-alive connections; no request fails.
//   - TestSIGUSR2UnderLoad (fast): an in-place upgrade under load over
//     new and kept-alive connections; no request fails or is refused,
//     the PID file names the new process, the old one exits 0, the new
//     one serves, and the log shows the hand-over with no error.
package chaos
