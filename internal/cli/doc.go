// Package cli holds the command-line conventions every keyedge binary
// follows, so keyedge, keyserver, keyctl and edgebench behave alike:
//
//   - -h, -help and --help print the usage to standard output and exit 0;
//     a command line that does not parse prints the problem and the usage
//     to standard error and exits 2 (Parse, Exit);
//   - --version prints the module version and the VCS revision, time and
//     modified flag the Go toolchain stamped into the binary (Version).
//
// It uses the standard library's flag package: the binaries' flag sets
// stay as they are, and only parsing and reporting are shared.
package cli
