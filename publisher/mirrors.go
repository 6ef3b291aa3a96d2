package publisher

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// FollowMirrors keeps the cache's mirror list from the mirrors' "pinned"
// events until ctx is done (mirrorlist.Follow).
func FollowMirrors(ctx context.Context, js jetstream.JetStream, stream string, cache Cache, log *zap.Logger) {
	mirrorlist.Follow(ctx, js, stream, cache.Dir, log)
}
