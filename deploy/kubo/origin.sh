#!/bin/sh
# nix-ipfs: kubo settings for host A (the origin: the publisher's node).
# The kubo image runs /container-init.d/*.sh at every start, after init;
# docs/OPERATIONS.md ("kubo on each host") explains each. The same settings
# are in internal/kubod/roles.go (nix-ipfs up), and a test keeps them equal.
set -e
# The publisher adds NARs by reference (--ipfs-nocopy): the cache's NAR is
# the only copy on this host.
ipfs config --json Experimental.FilestoreEnabled 'true'
ipfs config --json Provide.Strategy '"roots"'
ipfs config --json Provide.DHT.SweepEnabled 'true'
ipfs config --json Swarm.ResourceMgr.MaxMemory '"1GiB"'
