package hook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hydra"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// EnvHydraJSON names the file Hydra's RunCommand plugin writes.
const EnvHydraJSON = "HYDRA_JSON"

// HydraEvent reads the RunCommand notification that HYDRA_JSON names and
// returns its "built" event. A notification that is not a successful build
// returns a nil event and why it was skipped; a file that cannot be read or
// parsed returns an error.
func (h *Hook) HydraEvent(getenv func(string) string) (ev *events.Built, skipped string, err error) {
	path := strings.TrimSpace(getenv(EnvHydraJSON))
	if path == "" {
		return nil, "", errors.New(EnvHydraJSON + " is not set: nothing to read (is this running as Hydra's RunCommand?)")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("Hydra notification: %w", err)
	}
	defer f.Close()
	n, err := hydra.Parse(f)
	if err != nil {
		return nil, "", fmt.Errorf("Hydra notification %s: %w", path, err)
	}
	who := fmt.Sprintf("Hydra build %d (%s)", n.Build, n.JobName())
	if why := n.Skip(); why != "" {
		return nil, fmt.Sprintf("%s: %s: nothing to publish", who, why), nil
	}
	storeDir := h.Config.Store.Dir
	drv := n.DrvPath
	if drv != "" {
		if err := storepath.Validate(storeDir, drv); err != nil || !strings.HasSuffix(drv, ".drv") {
			h.warnf("%s: ignoring drvPath %q: not a .drv store path under %s", who, drv, storeDir)
			drv = ""
		}
	}
	outs := make([]string, 0, len(n.Outputs))
	for _, o := range n.Outputs {
		outs = append(outs, o.Path)
	}
	at := h.now()
	if n.StopTime > 0 {
		at = time.Unix(n.StopTime, 0)
	}
	ev, err = h.newBuilt(drv, outs, n.JobName(), n.Build, at)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", who, err)
	}
	return ev, "", nil
}

// RunHydra handles one RunCommand notification as Run handles one build:
// one "built" event for a successful build, published within
// Config.Timeout or spooled. A notification that is not a successful build
// is skipped: res.Event is nil and res.Skipped says why.
func (h *Hook) RunHydra(ctx context.Context, getenv func(string) string) (Result, error) {
	ev, skipped, err := h.HydraEvent(getenv)
	if err != nil || ev == nil {
		return Result{Skipped: skipped}, err
	}
	return h.Send(ctx, ev)
}
