package certs

// Recheck is how often a KeyPairFile stats its files, for tests that
// step a clock past it.
const Recheck = recheck
