package cli

import (
	"runtime/debug"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	for _, tt := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"stamped", debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/keyedge/keyedge", Version: "v1.2.3"},
			Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"},
				{Key: "vcs.revision", Value: "49f415540d95611a12175a47f8efacc4974f02c0"},
				{Key: "vcs.time", Value: "2026-12-01T19:00:00Z"},
				{Key: "vcs.modified", Value: "true"},
			},
		}, `keyedge v1.2.3
  module:   github.com/keyedge/keyedge
  revision: 49f415540d95611a12175a47f8efacc4974f02c0
  time:     2026-12-01T19:00:00Z
  modified: true
  go:       go1.26.8
`},
		{"built outside a checkout", debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/keyedge/keyedge", Version: "(devel)"},
		}, `keyedge (devel)
  module:   github.com/keyedge/keyedge
  revision: unknown
  time:     unknown
  modified: unknown
  go:       go1.26.8
`},
	} {
		if got := formatVersion("keyedge", &tt.bi); got != tt.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}
