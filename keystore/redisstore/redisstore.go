// Package redisstore is a certmagic.Storage on Redis, so that the nodes of
// a fleet share one keystore (and certmagic's ACME state and locks)
// instead of each reading its own disk.
//
// It has the semantics of certmagic.FileStorage, which the keystore was
// built on: keys are slash-separated paths, List returns the direct
// children of a directory (or all descendants), and Delete of a
// directory deletes everything under it. Every key lives under one hash
// tag, {prefix}, so the layout also works on a Redis Cluster (on one
// shard):
//
//	{prefix}:v:<key>   hash: d = the value, m = modified, unix milliseconds
//	{prefix}:d:<dir>   set: the names in dir, subdirectories with a trailing /
//	{prefix}:l:<name>  a lock: a random token, with an expiry
//
// Writes and deletes update the value and the directory sets in one Lua
// script, so a reader never sees a key its directory does not list, or
// the reverse. Locks expire when their holder stops refreshing them (a
// crashed node), so they never block the fleet for longer than LockTTL.
package redisstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Storage is a certmagic.Storage over a Redis client. It is safe for
// concurrent use.
type Storage struct {
	client    redis.UniversalClient
	ns        string // "{prefix}:"
	lockTTL   time.Duration
	opTimeout time.Duration
	breaker   *gobreaker.CircuitBreaker[struct{}]

	mu    sync.Mutex           // guards locks
	locks map[string]*heldLock // locks this Storage holds, by name
}

// heldLock is a lock this process holds and keeps alive.
type heldLock struct {
	token string
	stop  context.CancelFunc
	done  chan struct{}
}

// Options configures a Storage.
type Options struct {
	// Prefix namespaces the keys, so several keystores can share a Redis
	// database ["keyedge"].
	Prefix string
	// LockTTL is how long a lock survives its holder's crash; holders
	// refresh it every third of it [1m].
	LockTTL time.Duration

	// OpTimeout bounds each call to Redis, retries included, so a hung
	// or unreachable Redis costs a lookup this much at most, and nothing
	// once the breaker is open [1s]. The client must honour context
	// deadlines (redis.Options.ContextTimeoutEnabled).
	OpTimeout time.Duration

	// BreakerThreshold is how many consecutive calls must fail for want
	// of Redis before calls fail at once [5]; BreakerOpenFor is how long
	// they then do before one call tries Redis again [1s].
	BreakerThreshold int
	BreakerOpenFor   time.Duration

	// Logger receives the breaker's changes of state, one line each
	// [slog.Default()].
	Logger *slog.Logger
}

// New returns a Storage using client.
func New(client redis.UniversalClient, opts Options) *Storage {
	opts = opts.withDefaults()
	return &Storage{
		client:    client,
		ns:        "{" + opts.Prefix + "}:",
		lockTTL:   opts.LockTTL,
		opTimeout: opts.OpTimeout,
		breaker:   newBreaker(opts),
		locks:     map[string]*heldLock{},
	}
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	o.Prefix = cmp.Or(o.Prefix, "keyedge")
	o.LockTTL = cmp.Or(o.LockTTL, time.Minute)
	o.OpTimeout = cmp.Or(o.OpTimeout, time.Second)
	o.BreakerThreshold = cmp.Or(o.BreakerThreshold, 5)
	o.BreakerOpenFor = cmp.Or(o.BreakerOpenFor, time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

var _ certmagic.Storage = (*Storage)(nil)

func (s *Storage) valueKey(key string) string { return s.ns + "v:" + key }
func (s *Storage) dirKey(dir string) string   { return s.ns + "d:" + dir }
func (s *Storage) lockKey(name string) string { return s.ns + "l:" + name }

// cleanKey normalises a storage key as FileStorage does for paths: no
// leading, trailing or doubled slashes.
func cleanKey(key string) string {
	parts := strings.FieldsFunc(key, func(r rune) bool { return r == '/' })
	return strings.Join(parts, "/")
}

// storeScript sets the value and lists it in every ancestor directory.
// KEYS: none (all keys share the hash tag in ARGV[1]); ARGV: namespace,
// key, value, modified.
var storeScript = redis.NewScript(`
local ns, key = ARGV[1], ARGV[2]
redis.call('HSET', ns .. 'v:' .. key, 'd', ARGV[3], 'm', ARGV[4])
local path, suffix = key, ''
while true do
  local i = string.find(path, '/[^/]*$')
  local parent, name = '', path
  if i then parent, name = string.sub(path, 1, i - 1), string.sub(path, i + 1) end
  redis.call('SADD', ns .. 'd:' .. parent, name .. suffix)
  if parent == '' then return 1 end
  path, suffix = parent, '/'
end
`)

// deleteScript deletes a value or a whole directory, and removes it from
// its parent, pruning directories left empty. ARGV: namespace, key.
var deleteScript = redis.NewScript(`
local ns, key = ARGV[1], ARGV[2]
local function rmdir(dir)
  for _, m in ipairs(redis.call('SMEMBERS', ns .. 'd:' .. dir)) do
    if string.sub(m, -1) == '/' then
      rmdir(dir .. '/' .. string.sub(m, 1, -2))
    else
      redis.call('DEL', ns .. 'v:' .. dir .. '/' .. m)
    end
  end
  redis.call('DEL', ns .. 'd:' .. dir)
end
local wasValue = redis.call('DEL', ns .. 'v:' .. key)
local wasDir = redis.call('EXISTS', ns .. 'd:' .. key)
if wasDir == 1 then rmdir(key) end
if wasValue == 0 and wasDir == 0 then return 0 end
local path = key
while path ~= '' do
  local i = string.find(path, '/[^/]*$')
  local parent, name = '', path
  if i then parent, name = string.sub(path, 1, i - 1), string.sub(path, i + 1) end
  redis.call('SREM', ns .. 'd:' .. parent, name, name .. '/')
  if redis.call('EXISTS', ns .. 'd:' .. parent) == 1 then return 1 end
  path = parent
end
return 1
`)

// Store implements certmagic.Storage.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	key = cleanKey(key)
	if key == "" {
		return errors.New("redisstore: empty key")
	}
	err := s.do(ctx, func(ctx context.Context) error {
		return storeScript.Run(ctx, s.client, nil, s.ns, key, value, time.Now().UnixMilli()).Err()
	})
	if err != nil {
		return fmt.Errorf("redisstore: store %s: %w", key, err)
	}
	return nil
}

// Load implements certmagic.Storage. A missing key is fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	key = cleanKey(key)
	var v []byte
	err := s.do(ctx, func(ctx context.Context) (err error) {
		v, err = s.client.HGet(ctx, s.valueKey(key), "d").Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: load %s: %w", key, err)
	}
	return v, nil
}

// Delete implements certmagic.Storage: a directory is deleted with
// everything under it, and deleting a missing key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	key = cleanKey(key)
	err := s.do(ctx, func(ctx context.Context) error {
		return deleteScript.Run(ctx, s.client, nil, s.ns, key).Err()
	})
	if err != nil {
		return fmt.Errorf("redisstore: delete %s: %w", key, err)
	}
	return nil
}

// Exists implements certmagic.Storage, for values and directories.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	key = cleanKey(key)
	var n int64
	err := s.do(ctx, func(ctx context.Context) (err error) {
		n, err = s.client.Exists(ctx, s.valueKey(key), s.dirKey(key)).Result()
		return err
	})
	return err == nil && n > 0
}

// List implements certmagic.Storage: the keys directly under dir, or
// with recursive every key under it, directories included. A missing
// directory is fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = cleanKey(dir)
	var names []string
	err := s.do(ctx, func(ctx context.Context) (err error) {
		names, err = s.client.SMembers(ctx, s.dirKey(dir)).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: list %s: %w", dir, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("redisstore: %s: %w", dir, fs.ErrNotExist)
	}
	var keys []string
	for _, name := range names {
		sub, isDir := strings.CutSuffix(name, "/")
		if dir != "" {
			sub = dir + "/" + sub
		}
		keys = append(keys, sub)
		if isDir && recursive {
			more, err := s.List(ctx, sub, true)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			keys = append(keys, more...)
		}
	}
	return keys, nil
}

// Stat implements certmagic.Storage.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = cleanKey(key)
	pipe := s.client.Pipeline()
	modified := pipe.HGet(ctx, s.valueKey(key), "m")
	size := pipe.HStrLen(ctx, s.valueKey(key), "d")
	isDir := pipe.Exists(ctx, s.dirKey(key))
	err := s.do(ctx, func(ctx context.Context) error {
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return certmagic.KeyInfo{}, fmt.Errorf("redisstore: stat %s: %w", key, err)
	}
	if ms, err := modified.Result(); err == nil {
		m, _ := strconv.ParseInt(ms, 10, 64)
		return certmagic.KeyInfo{Key: key, Modified: time.UnixMilli(m), Size: size.Val(), IsTerminal: true}, nil
	}
	if isDir.Val() > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("redisstore: %s: %w", key, fs.ErrNotExist)
}

// refreshScript extends a lock's expiry if this holder still has it.
// KEYS[1] the lock; ARGV: token, TTL in milliseconds.
var refreshScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// unlockScript deletes a lock if this holder still has it. KEYS[1] the
// lock; ARGV[1] the token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Lock implements certmagic.Locker: it blocks until this Storage holds
// the named lock fleet-wide, or ctx ends. The lock is kept alive until
// Unlock; if this process dies it expires after LockTTL.
func (s *Storage) Lock(ctx context.Context, name string) error {
	token := rand.Text()
	wait := 10 * time.Millisecond
	for {
		var ok bool
		err := s.do(ctx, func(ctx context.Context) (err error) {
			ok, err = s.client.SetNX(ctx, s.lockKey(name), token, s.lockTTL).Result()
			return err
		})
		if err != nil {
			return fmt.Errorf("redisstore: lock %s: %w", name, err)
		}
		if ok {
			break
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, time.Second)
		case <-ctx.Done():
			return fmt.Errorf("redisstore: lock %s: %w", name, ctx.Err())
		}
	}
	refreshCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	held := &heldLock{token: token, stop: stop, done: make(chan struct{})}
	go s.keepAlive(refreshCtx, name, held)
	s.mu.Lock()
	s.locks[name] = held
	s.mu.Unlock()
	return nil
}

// keepAlive refreshes a held lock every third of its TTL until stopped.
func (s *Storage) keepAlive(ctx context.Context, name string, held *heldLock) {
	defer close(held.done)
	t := time.NewTicker(s.lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			refreshScript.Run(ctx, s.client, []string{s.lockKey(name)}, held.token, s.lockTTL.Milliseconds())
		case <-ctx.Done():
			return
		}
	}
}

// Unlock implements certmagic.Locker. Unlocking a lock this Storage does
// not hold is an error; a lock that expired meanwhile (and may be held by
// another node now) is left alone.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	held, ok := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("redisstore: unlock %s: not held", name)
	}
	held.stop()
	<-held.done
	err := s.do(ctx, func(ctx context.Context) error {
		return unlockScript.Run(ctx, s.client, []string{s.lockKey(name)}, held.token).Err()
	})
	if err != nil {
		return fmt.Errorf("redisstore: unlock %s: %w", name, err)
	}
	return nil
}

// String names the storage in logs, never with a password.
func (s *Storage) String() string {
	return "redis " + strings.TrimSuffix(s.ns, ":")
}
