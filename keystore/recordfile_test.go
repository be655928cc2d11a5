package keystore

import (
	"encoding/json"
	"path"
	"strings"
	"testing"
)

// BenchmarkParseRecord parses the golden keystore's first local record
// in the layout written now (recordfile.go) and as the JSON record
// written before: the parse a cold lookup does, leaf included.
func BenchmarkParseRecord(b *testing.B) {
	var id string
	var data []byte
	for key, d := range goldenFiles(b) {
		if strings.HasSuffix(key, "/record") && (id == "" || key < recordKey(id)) {
			id, data = path.Base(path.Dir(key)), d
		}
	}
	r, _, err := parseRecord(id, data)
	if err != nil {
		b.Fatal(err)
	}
	r.Sealed = nil // in key.sealed
	legacy, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	for _, layout := range []struct {
		name string
		data []byte
	}{{"layout=record", data}, {"layout=json", legacy}} {
		b.Run(layout.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := parseRecord(id, layout.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
