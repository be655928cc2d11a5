package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// originBody is what the benchmark origin answers every request with.
const originBody = "ok\n"

// OriginHandler is a minimal origin: 200 with a three-byte body.
func OriginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(originBody))
	})
}

// ServeOrigin runs OriginHandler over plain HTTP/1.1 on addr until ctx
// ends. ready, if not nil, is called with the listening address.
func ServeOrigin(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: OriginHandler(), ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
