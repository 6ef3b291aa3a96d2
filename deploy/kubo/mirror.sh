#!/bin/sh
# nix-ipfs: kubo settings for host B (a mirror: pins every NAR, serves clients).
# The kubo image runs /container-init.d/*.sh at every start, after init;
# docs/OPERATIONS.md ("kubo on each host") explains each. The same settings
# are in internal/kubod/roles.go (nix-ipfs up), and a test keeps them equal.
set -e
ipfs config --json Provide.Strategy '"roots"'
ipfs config --json Provide.DHT.SweepEnabled 'true'
ipfs config --json Swarm.ResourceMgr.MaxMemory '"2GiB"'
ipfs config --json Swarm.ConnMgr.LowWater '200'
ipfs config --json Swarm.ConnMgr.HighWater '400'
ipfs config --json Swarm.ConnMgr.GracePeriod '"1m"'
ipfs config --json Internal.Bitswap '{}'
