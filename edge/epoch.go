package edge

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// rotation is the epoch scheme of the keys a fleet derives from its
// shared secret (session ticket keys, ECH keys): epoch n is the period
// [n×period, (n+1)×period) of Unix time, so every node with the same
// period agrees on the epoch with no coordination beyond its clock. The
// keys of the current epoch are in use, those of the next one are
// already accepted (a node whose clock runs behind accepts what one
// ahead issued), and those of accept previous epochs still are.
type rotation struct {
	period time.Duration    // epoch length, positive
	accept int              // previous epochs still accepted
	now    func() time.Time // the clock that picks the epoch; nil: time.Now
}

// time is the rotation's clock's reading.
func (r rotation) time() time.Time {
	if r.now == nil {
		return time.Now()
	}
	return r.now()
}

// epoch is the number of the epoch containing t.
func (r rotation) epoch(t time.Time) int64 {
	return t.UnixNano() / int64(r.period)
}

// start is when epoch e begins.
func (r rotation) start(e int64) time.Time {
	return time.Unix(0, e*int64(r.period))
}

// next is when the epoch after t's begins.
func (r rotation) next(t time.Time) time.Time {
	return r.start(r.epoch(t) + 1)
}

// window lists the epochs whose keys are accepted at t: the current one
// first (its key is the one in use), then the next one, then the accept
// previous ones, newest first.
func (r rotation) window(t time.Time) []int64 {
	e := r.epoch(t)
	w := []int64{e, e + 1}
	for i := int64(1); i <= int64(r.accept); i++ {
		w = append(w, e-i)
	}
	return w
}

// epochKey derives n bytes for epoch from a fleet secret: HKDF-SHA256
// with the label, a zero byte and the epoch (8 bytes, big-endian) as
// info, so keys for different jobs or epochs share nothing.
func epochKey(secret []byte, label string, epoch int64, n int) []byte {
	info := binary.BigEndian.AppendUint64([]byte(label+"\x00"), uint64(epoch))
	b, err := hkdf.Key(sha256.New, secret, nil, string(info), n)
	if err != nil {
		panic(err) // only for lengths HKDF-SHA256 cannot produce
	}
	return b
}
