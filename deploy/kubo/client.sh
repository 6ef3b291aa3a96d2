#!/bin/sh
# nix-ipfs: kubo settings for host C (a client: the substituter's node).
# The kubo image runs /container-init.d/*.sh at every start, after init;
# docs/OPERATIONS.md ("kubo on each host") explains each. The same settings
# are in internal/kubod/roles.go (nix-ipfs up), and a test keeps them equal.
set -e
ipfs config --json Provide.Enabled 'false'
ipfs config --json Routing.Type '"autoclient"'
ipfs config --json Swarm.ResourceMgr.MaxMemory '"512MiB"'
ipfs config --json Datastore.StorageMax '"10GB"'
ipfs config --json Datastore.StorageGCWatermark '90'
