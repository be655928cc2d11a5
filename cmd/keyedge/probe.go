package main

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/keyedge/keyedge/internal/config"
)

// probeTimeout bounds each start-up connection attempt to a key server.
const probeTimeout = 3 * time.Second

// warnUnreachable tries one TCP connection to each geo key server
// edge.yaml names, and logs a warning for each that refuses it or does
// not answer in time, saying what fails meanwhile. It only reports:
// serving does not wait for it, and the keyless client reconnects by
// itself once the server is up. (An edge.yaml written by keyedge demo
// names key servers that lived in the demo process: this is where
// serving it again says so.)
func warnUnreachable(ctx context.Context, cfg *config.Edge, log *slog.Logger) {
	d := net.Dialer{Timeout: probeTimeout}
	for _, ks := range cfg.Geo.KeyServers {
		go func() {
			c, err := d.DialContext(ctx, "tcp", ks.Addr)
			if err != nil {
				log.Warn("geo key server unreachable at start: handshakes for keys this node may not open that it would sign fail until it is up",
					"addr", ks.Addr, "attributes", ks.Attributes, "err", err)
				return
			}
			c.Close()
		}()
	}
}
