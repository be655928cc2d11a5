package bench

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Transport is a worker's HTTP/3 client: quic-go's, dialing every
// connection through dialQUIC.
func (w *worker) h3Transport() *http3.Transport {
	return &http3.Transport{
		TLSClientConfig:    w.base,
		Dial:               w.dialQUIC,
		DisableCompression: true,
	}
}

// dialQUIC makes a QUIC connection to the edge (Options.Addr, over UDP)
// for the server name of addr, the host:port of the request's URL, and
// records its handshake. http3.Transport calls it with a context of its
// own, without the request's deadline, so it sets Options.Timeout.
// A worker's dials run one at a time: the worker waits for each.
func (w *worker) dialQUIC(ctx context.Context, addr string, cfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	udpAddr, err := net.ResolveUDPAddr("udp", w.opts.Addr)
	if err != nil {
		return nil, &stageError{ErrDial, err}
	}
	if w.udp == nil {
		pc, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, &stageError{ErrDial, err}
		}
		w.udp = &quic.Transport{Conn: pc}
	}
	cfg.ServerName = hostOf(addr) // cfg is the transport's clone
	start := time.Now()
	c, err := w.udp.Dial(ctx, udpAddr, cfg, qcfg)
	if err != nil {
		return nil, &stageError{ErrHandshake, err}
	}
	w.recordConn(time.Since(start), c.ConnectionState().TLS)
	return c, nil
}

// closeQUIC closes tr, its connections, and the worker's UDP socket.
func (w *worker) closeQUIC(tr *http3.Transport) {
	tr.Close()
	if w.udp != nil {
		w.udp.Close()
		w.udp.Conn.Close()
	}
}
