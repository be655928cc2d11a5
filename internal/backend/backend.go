// Package backend opens the storage a keystore lives in from the location
// a configuration names: a directory (filestore, a certmagic.FileStorage
// with cheaper reads: one node's disk) or a redis:// or rediss:// URL
// (redisstore, shared by a fleet).
// Every command that takes a keystore accepts both.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/filestore"
	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore/redisstore"
	"github.com/redis/go-redis/v9"
)

// IsURL reports whether location names a Redis keystore rather than a
// directory.
func IsURL(location string) bool {
	return strings.HasPrefix(location, "redis://") || strings.HasPrefix(location, "rediss://")
}

// Open returns the storage at location, and a function releasing it. A
// Redis URL is redis[s]://[user@]host:port[/db][?prefix=P&op_timeout=D]
// (go-redis's options are accepted in the query too); op_timeout bounds
// each call to Redis, retries included [1s] (see redisstore.Options). Its
// password, if any, comes
// from passwordFile, never from the URL, which lives in configuration
// files. The Redis server is pinged, so a wrong address fails here. log
// [slog.Default()] gets the Redis storage's lines and go-redis's own.
func Open(ctx context.Context, location, passwordFile string, log *slog.Logger) (certmagic.Storage, func() error, error) {
	if log == nil {
		log = slog.Default()
	}
	if !IsURL(location) {
		if passwordFile != "" {
			return nil, nil, errors.New("a password file goes with a redis:// keystore, not a directory")
		}
		return filestore.New(location), func() error { return nil }, nil
	}
	u, err := url.Parse(location)
	if err != nil {
		return nil, nil, fmt.Errorf("keystore URL: %w", err)
	}
	if _, set := u.User.Password(); set {
		return nil, nil, errors.New("keystore URL: put the Redis password in keystore_password_file, not in the URL")
	}
	q := u.Query()
	prefix := q.Get("prefix")
	var opTimeout time.Duration
	if v := q.Get("op_timeout"); v != "" {
		if opTimeout, err = time.ParseDuration(v); err != nil || opTimeout <= 0 {
			return nil, nil, fmt.Errorf("keystore URL: op_timeout %q: want a positive duration such as 500ms", v)
		}
	}
	q.Del("prefix")
	q.Del("op_timeout")
	u.RawQuery = q.Encode()
	opts, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, nil, fmt.Errorf("keystore URL: %w", err)
	}
	if passwordFile != "" {
		pw, err := secretfile.Read(passwordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("keystore password: %w", err)
		}
		opts.Password = strings.TrimSpace(string(pw))
	}
	opts.ContextTimeoutEnabled = true // so op_timeout bounds socket reads and writes too
	redisLogOnce.Do(func() { redis.SetLogger(&redisLogger{log: log}) })
	client := redis.NewClient(opts)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Ping(pingCtx).Err(); err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("keystore %s: %w", u.Redacted(), err)
	}
	return redisstore.New(client, redisstore.Options{Prefix: prefix, OpTimeout: opTimeout, Logger: log}), client.Close, nil
}

// go-redis logs through one logger per process, a line per failed dial
// while Redis is down (several a second): the first Open routes those
// lines to its logger, at most one every 10s. The storage's own lines
// (the circuit breaker's changes of state) say the same once.
var redisLogOnce sync.Once

type redisLogger struct {
	log   *slog.Logger
	limit ratelog.Limiter
}

func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.limit.Log(ctx, l.log, slog.LevelWarn, "go-redis", "redisstore: "+fmt.Sprintf(format, v...)+" (logged at most every 10s)")
}
