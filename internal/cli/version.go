package cli

import (
	"cmp"
	"fmt"
	"runtime/debug"
	"strings"
)

// Version is the text --version prints for program: the main module's
// path and version, and the VCS revision, commit time and whether the
// tree had uncommitted changes, from the build information the Go
// toolchain stamps into the binary ("unknown" for what a build did not
// record, such as the revision of a binary built outside a checkout or
// with -buildvcs=false).
func Version(program string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return formatVersion(program, bi)
}

// formatVersion is Version over the given build information.
func formatVersion(program string, bi *debug.BuildInfo) string {
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", program, cmp.Or(bi.Main.Version, "unknown"))
	fmt.Fprintf(&b, "  module:   %s\n", cmp.Or(bi.Main.Path, "unknown"))
	fmt.Fprintf(&b, "  revision: %s\n", cmp.Or(settings["vcs.revision"], "unknown"))
	fmt.Fprintf(&b, "  time:     %s\n", cmp.Or(settings["vcs.time"], "unknown"))
	fmt.Fprintf(&b, "  modified: %s\n", cmp.Or(settings["vcs.modified"], "unknown"))
	fmt.Fprintf(&b, "  go:       %s\n", cmp.Or(bi.GoVersion, "unknown"))
	return b.String()
}
