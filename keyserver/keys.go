package keyserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/keystore"
)

// KeyRef names a key to the key servers, with the items of a request
// (wire.TagSKI, TagCertID, TagSNI): its SKI, and the certificate ID and
// server name when known. The Client always sends the SKI, computed
// from the public key it is given, and the others when its caller knows
// them; a request from another client may carry any of the three.
//
// A KeySource uses the first of SKI, CertID and SNI it can index; a key
// it returns for a request with an SKI must have that SKI (the server
// checks). On the server, SKI aliases the request and is only valid
// during the Key call.
type KeyRef struct {
	SKI    []byte // 20 bytes (wire.TagSKI), or nil
	CertID string // keystore.CertID of the certificate, or ""
	SNI    string // server name the TLS client asked for, or ""
}

// Key is a private key a KeySource found.
type Key struct {
	Signer crypto.Signer
	// SKI is the SHA-1 of the public key bits, as in wire.TagSKI.
	SKI [20]byte
	// Names are the DNS names the key serves, if known, for
	// authorization rules ("name:" selectors). Read-only.
	Names []string
}

// ErrKeyNotFound is returned by a KeySource that has no key for a
// request. Sources may wrap it with detail for logs.
var ErrKeyNotFound = errors.New("keyserver: key not found")

// KeySource finds private keys. Implementations must be safe for
// concurrent use, honour ctx, and return an error wrapping
// ErrKeyNotFound for a key they do not hold; any other error is
// reported to the peer as an internal error.
type KeySource interface {
	Key(ctx context.Context, r KeyRef) (*Key, error)
}

var (
	_ KeySource = (*DirSource)(nil)
	_ KeySource = (*KeystoreSource)(nil)
)

// SKI computes the wire SKI of a public key: the SHA-1 of the
// subjectPublicKey BIT STRING bytes of its SubjectPublicKeyInfo (the
// key identifier of RFC 5280, section 4.2.1.2, method 1).
func SKI(pub crypto.PublicKey) ([20]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [20]byte{}, fmt.Errorf("keyserver: failed to compute SKI: %w", err)
	}
	return skiOfSPKI(der)
}

// skiOfSPKI is SKI for a DER SubjectPublicKeyInfo, such as
// x509.Certificate.RawSubjectPublicKeyInfo.
func skiOfSPKI(spki []byte) ([20]byte, error) {
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(spki, &info); err != nil || len(rest) != 0 {
		return [20]byte{}, errors.New("keyserver: failed to compute SKI: malformed SubjectPublicKeyInfo")
	}
	return sha1.Sum(info.PublicKey.Bytes), nil
}

// KeystoreSource serves the locally signed keys of a keyedge keystore.
// A request is resolved by certificate ID (Store.CertByID), else by SNI
// (Store.Lookup, then the certificate whose SKI matches the request's,
// or the first when the request has no SKI). A request naming a key by
// SKI alone is not found: the keystore is not indexed by SKI. Keyless
// certificates and keys sealed for another recipient are not found
// either. Key.Names are the leaf's DNS names.
type KeystoreSource struct {
	store *keystore.Store
}

// NewKeystoreSource returns a KeySource over s, which the caller opened
// with the keys it may open (Options.FleetKey, and Options.NodeKey for
// keys with a geo policy admitting this key server) and the signer they
// sign with (Options.Signer), and closes after the server stops.
func NewKeystoreSource(s *keystore.Store) *KeystoreSource {
	return &KeystoreSource{store: s}
}

// Key implements KeySource.
func (k *KeystoreSource) Key(ctx context.Context, r KeyRef) (*Key, error) {
	var cert *keystore.Cert
	var ski [20]byte
	switch {
	case r.CertID != "":
		c, err := k.store.CertByID(ctx, r.CertID)
		if err != nil {
			return nil, keystoreErr(err)
		}
		if ski, err = skiOfSPKI(c.Leaf.RawSubjectPublicKeyInfo); err != nil {
			return nil, err
		}
		if len(r.SKI) > 0 && string(r.SKI) != string(ski[:]) {
			return nil, fmt.Errorf("%w: certificate %s has another SKI", ErrKeyNotFound, r.CertID)
		}
		cert = c
	case r.SNI != "":
		e, err := k.store.Lookup(ctx, r.SNI)
		if err != nil {
			return nil, keystoreErr(err)
		}
		for _, c := range e.Certs {
			s, err := skiOfSPKI(c.Leaf.RawSubjectPublicKeyInfo)
			if err != nil {
				continue
			}
			if len(r.SKI) == 0 || string(r.SKI) == string(s[:]) {
				cert, ski = c, s
				break
			}
		}
		if cert == nil {
			return nil, fmt.Errorf("%w: no certificate for %q has the requested SKI", ErrKeyNotFound, e.Name)
		}
	default:
		return nil, fmt.Errorf("%w: a keystore needs a certificate ID or SNI", ErrKeyNotFound)
	}
	signer, err := cert.Signer(ctx)
	if err != nil {
		return nil, keystoreErr(err)
	}
	return &Key{Signer: signer, SKI: ski, Names: cert.Leaf.DNSNames}, nil
}

// keystoreErr maps keystore errors to ours: absent names and keys this
// node cannot open are not found; corruption and I/O stay errors.
func keystoreErr(err error) error {
	switch {
	case errors.Is(err, keystore.ErrNotFound), errors.Is(err, keystore.ErrBadName), errors.Is(err, keystore.ErrCannotOpen):
		return fmt.Errorf("%w: %w", ErrKeyNotFound, err)
	}
	return err
}

// DirOptions configures a DirSource. The zero value works.
type DirOptions struct {
	// PollInterval is how often the directory's file names, sizes and
	// modification times are checked for changes [1s].
	PollInterval time.Duration

	// Logger receives bad files (once per version of a file) and
	// re-indexing [slog.Default()].
	Logger *slog.Logger

	// Signer, if set, makes the signer a loaded private key signs with
	// (internal/rsasigner's OpenSSL one), once per load. It must return
	// a signer of the same public key. [the key as parsed]
	Signer func(crypto.Signer) crypto.Signer
}

// withDefaults returns o with every zero field set to its default.
func (o DirOptions) withDefaults() DirOptions {
	o.PollInterval = cmp.Or(o.PollInterval, time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// maxKeyFileSize bounds what a DirSource reads from one file.
const maxKeyFileSize = 1 << 20

// DirSource serves the private keys in the files of one directory: PEM
// (PKCS#8 "PRIVATE KEY", SEC 1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE
// KEY") or DER in any of those encodings; ECDSA, RSA and Ed25519.
//
// It indexes public keys by SKI when created and again whenever a file
// in the directory is added, removed or changes size, modification time
// or identity (a new file renamed into place), checked every
// PollInterval. A private key is read and kept on its first use; a
// changed or removed file drops it. A file that cannot be used is
// logged once per version and skipped; the others are still served.
// A file holding a private key must not be accessible by group or
// others (mode 0600 or stricter), or it is skipped.
//
// Keys are found by SKI. Certificates (PEM "CERTIFICATE" blocks or a DER
// certificate) in the directory, in their own files such as
// <stem>.crt, or beside the key in one PEM file, name the key with the
// same public key: requests by certificate ID (keystore.CertID) and by
// SNI (exact, then one-label wildcard) then find it too, and Key.Names
// is the union of their DNS names. Hidden files (a leading dot) and
// subdirectories are ignored.
type DirSource struct {
	// Static after NewDirSource.
	dir    string
	poll   time.Duration
	log    *slog.Logger
	signer func(crypto.Signer) crypto.Signer // DirOptions.Signer, or nil
	stop   chan struct{}
	done   chan struct{}

	// Owned by the goroutine scanning (NewDirSource, then pollLoop).
	files    map[string]*dirFile // file name → what it held when last read
	reported map[string]string   // file name → the error last logged for it

	mu    sync.RWMutex // guards index
	index *dirIndex
}

// dirFile is what one version of a file held.
type dirFile struct {
	info fs.FileInfo       // for change detection
	key  *keyFile          // nil when the file holds no private key
	leaf *x509.Certificate // first certificate in the file, or nil
}

// keyFile is one private key file: its public half, indexed, and the
// private key once loaded.
type keyFile struct {
	path string
	ski  [20]byte

	mu     sync.Mutex // guards signer; held while loading it
	signer crypto.Signer
}

// dirIndex is an immutable index built from all files; a scan that sees
// a change replaces it whole.
type dirIndex struct {
	bySKI    map[[20]byte]*keyFile
	byCertID map[string]*keyFile
	byName   map[string]*keyFile // lower-case DNS name, maybe "*.…"
	names    map[[20]byte][]string
}

// NewDirSource indexes the keys in dir and watches it until Close. It
// fails only when dir cannot be read; bad files are logged and skipped.
func NewDirSource(dir string, opts DirOptions) (*DirSource, error) {
	opts = opts.withDefaults()
	d := &DirSource{
		dir:      dir,
		poll:     opts.PollInterval,
		log:      opts.Logger,
		signer:   opts.Signer,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		files:    map[string]*dirFile{},
		reported: map[string]string{},
		index:    &dirIndex{},
	}
	if err := d.scan(); err != nil {
		return nil, err
	}
	go d.pollLoop()
	return d, nil
}

// Close stops watching the directory. Keys already returned stay usable.
func (d *DirSource) Close() error {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
	return nil
}

func (d *DirSource) pollLoop() {
	defer close(d.done)
	t := time.NewTicker(d.poll)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		// A directory that cannot be read keeps its last index.
		if err := d.scan(); err != nil && err.Error() != lastErr {
			d.log.Error("keyserver: cannot read key directory", "dir", d.dir, "err", err)
			lastErr = err.Error()
		} else if err == nil {
			lastErr = ""
		}
	}
}

// scan re-reads the files that changed since the last scan and, if any
// did, rebuilds the index.
func (d *DirSource) scan() error {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("keyserver: failed to read key directory: %w", err)
	}
	changed := false
	seen := make(map[string]bool, len(entries))   // regular files
	listed := make(map[string]bool, len(entries)) // every name
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		listed[name] = true
		path := filepath.Join(d.dir, name)
		info, err := os.Stat(path) // follows symbolic links
		if err != nil {
			d.report(name, err)
			continue
		}
		if !info.Mode().IsRegular() {
			continue
		}
		seen[name] = true
		if prev, ok := d.files[name]; ok && sameVersion(prev.info, info) {
			continue
		}
		changed = true
		f, err := readDirFile(path, info)
		if err != nil {
			d.report(name, err)
			f = &dirFile{info: info} // remembered, so it is not read again until it changes
		} else {
			delete(d.reported, name)
		}
		d.files[name] = f.indexed()
	}
	for name := range d.files {
		if !seen[name] {
			delete(d.files, name)
			changed = true
		}
	}
	for name := range d.reported {
		if !listed[name] {
			delete(d.reported, name)
		}
	}
	if changed {
		d.rebuild()
	}
	return nil
}

// report logs a bad file, once per distinct error.
func (d *DirSource) report(name string, err error) {
	if d.reported[name] == err.Error() {
		return
	}
	d.reported[name] = err.Error()
	d.log.Error("keyserver: skipping key file", "file", filepath.Join(d.dir, name), "err", err)
}

func sameVersion(a, b fs.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode() && os.SameFile(a, b)
}

// rebuild replaces the index with one built from d.files.
func (d *DirSource) rebuild() {
	idx := &dirIndex{
		bySKI:    map[[20]byte]*keyFile{},
		byCertID: map[string]*keyFile{},
		byName:   map[string]*keyFile{},
		names:    map[[20]byte][]string{},
	}
	names := slices.Sorted(maps.Keys(d.files)) // the first file wins a tie
	for _, name := range names {
		if k := d.files[name].key; k != nil {
			if _, dup := idx.bySKI[k.ski]; !dup {
				idx.bySKI[k.ski] = k
			}
		}
	}
	for _, name := range names {
		leaf := d.files[name].leaf
		if leaf == nil {
			continue
		}
		ski, err := skiOfSPKI(leaf.RawSubjectPublicKeyInfo)
		k := idx.bySKI[ski]
		if err != nil || k == nil {
			continue // a certificate without its key here
		}
		if _, dup := idx.byCertID[keystore.CertID(leaf)]; !dup {
			idx.byCertID[keystore.CertID(leaf)] = k
		}
		for _, n := range leaf.DNSNames {
			n = strings.ToLower(n)
			if _, dup := idx.byName[n]; !dup {
				idx.byName[n] = k
			}
			if !slices.Contains(idx.names[ski], n) {
				idx.names[ski] = append(idx.names[ski], n)
			}
		}
	}
	d.mu.Lock()
	d.index = idx
	d.mu.Unlock()
	d.log.Info("keyserver: indexed key directory", "dir", d.dir, "keys", len(idx.bySKI), "names", len(idx.byName))
}

// Key implements KeySource.
func (d *DirSource) Key(ctx context.Context, r KeyRef) (*Key, error) {
	d.mu.RLock()
	idx := d.index
	d.mu.RUnlock()
	var k *keyFile
	switch {
	case len(r.SKI) > 0:
		k = idx.bySKI[[20]byte(padSKI(r.SKI))]
	case r.CertID != "":
		k = idx.byCertID[r.CertID]
	case r.SNI != "":
		if name, err := keystore.NormalizeName(r.SNI); err == nil {
			if k = idx.byName[name]; k == nil {
				k = idx.byName[keystore.WildcardOf(name)]
			}
		}
	}
	if k == nil {
		return nil, ErrKeyNotFound
	}
	signer, err := k.load(d.signer)
	if err != nil {
		return nil, err
	}
	return &Key{Signer: signer, SKI: k.ski, Names: idx.names[k.ski]}, nil
}

// padSKI returns b as 20 bytes; a wrong length never matches a key.
func padSKI(b []byte) []byte {
	if len(b) != 20 {
		return make([]byte, 20)
	}
	return b
}

// load returns the file's private key, reading it on first use and
// passing it through wrap unless nil. A file that no longer holds the
// indexed key (it changed since the last scan) is not found until the
// next scan re-indexes it.
func (k *keyFile) load(wrap func(crypto.Signer) crypto.Signer) (crypto.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signer != nil {
		return k.signer, nil
	}
	info, err := os.Stat(k.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyNotFound, err)
	}
	f, err := readDirFile(k.path, info)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyNotFound, k.path, err)
	}
	if f.key == nil || f.key.ski != k.ski {
		return nil, fmt.Errorf("%w: %s changed since it was indexed", ErrKeyNotFound, k.path)
	}
	k.signer = f.key.signer
	if wrap != nil {
		k.signer = wrap(k.signer)
	}
	return k.signer, nil
}

// readDirFile reads and parses one file of a key directory. The private
// key, if any, is in key.signer; callers indexing the file drop it.
func readDirFile(path string, info fs.FileInfo) (*dirFile, error) {
	if info.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("file of %d bytes is larger than %d", info.Size(), maxKeyFileSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	signer, leaf, err := parseKeyFile(data)
	if err != nil {
		return nil, err
	}
	f := &dirFile{info: info, leaf: leaf}
	if signer == nil {
		return f, nil
	}
	if err := secretfile.Check(path, info); err != nil {
		return nil, fmt.Errorf("holds a private key: %w", err)
	}
	ski, err := SKI(signer.Public())
	if err != nil {
		return nil, err
	}
	f.key = &keyFile{path: path, ski: ski, signer: signer}
	return f, nil
}

// indexed returns f with its private key dropped, to be loaded on use.
func (f *dirFile) indexed() *dirFile {
	if f.key != nil {
		f.key = &keyFile{path: f.key.path, ski: f.key.ski}
	}
	return f
}

// parseKeyFile parses PEM (every block: the private key, and the
// certificate of that key or else the first; other block types skipped) or DER (a private key in
// PKCS#8, PKCS#1 or SEC 1, or a certificate).
func parseKeyFile(data []byte) (crypto.Signer, *x509.Certificate, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		for _, t := range []string{"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"} {
			if s, err := certs.ParsePrivateKey(t, data); err == nil {
				return s, nil, nil
			}
		}
		if leaf, err := x509.ParseCertificate(data); err == nil {
			return nil, leaf, nil
		}
		return nil, nil, errors.New("neither PEM nor a DER private key or certificate")
	}
	var (
		signer crypto.Signer
		chain  []*x509.Certificate
		leaf   *x509.Certificate
	)
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		var err error
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing CERTIFICATE: %w", err)
			}
			chain = append(chain, c)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if signer != nil {
				return nil, nil, errors.New("more than one private key")
			}
			if signer, err = certs.ParsePrivateKey(block.Type, block.Bytes); err != nil {
				return nil, nil, err
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, errors.New("encrypted private keys are not supported")
		}
	}
	if signer == nil && len(chain) == 0 {
		return nil, nil, errors.New("no private key or certificate PEM block")
	}
	// The leaf is the certificate of the key beside it, else the first.
	for _, c := range chain {
		if leaf == nil || signer != nil && certs.SamePublicKey(signer.Public(), c.PublicKey) {
			leaf = c
		}
	}
	return signer, leaf, nil
}
