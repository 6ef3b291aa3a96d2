// Package integration holds the end-to-end tests of nix-ipfs: real Nix
// builds through the real post-build-hook binary, a real NATS JetStream
// server (embedded), and real kubo daemons. The parts are started by
// internal/testenv. Under CI (CI=true) a missing prerequisite fails a test;
// on a developer's machine it skips it with the reason.
package integration
