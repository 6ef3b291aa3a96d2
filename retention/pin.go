package retention

import (
	"context"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/retention/pins"
)

// The named pins (package pins), as retention's API has them.
type (
	Pin      = pins.Pin
	Revision = pins.Revision
	Pins     = pins.Bucket
)

// PinBucket is the JetStream key-value bucket that holds the named pins.
const PinBucket = pins.BucketName

// OpenPins is pins.Open.
func OpenPins(ctx context.Context, js jetstream.JetStream, replicas int, create bool) (*Pins, error) {
	return pins.Open(ctx, js, replicas, create)
}

// PinConfig is the pin command's settings (pins.Config).
type PinConfig = pins.Config

// RunPin is pins.Run: the pin command.
func RunPin(ctx context.Context, cfg PinConfig, args []string, out io.Writer) error {
	return pins.Run(ctx, cfg, args, out)
}

// ValidatePinName is pins.ValidateName.
func ValidatePinName(name string) error { return pins.ValidateName(name) }
