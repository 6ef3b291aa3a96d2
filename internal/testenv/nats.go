package testenv

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is an embedded nats-server with JetStream on a random loopback port
// and a file store in a temp dir. It can be stopped and restarted on the same
// port and store, to test what survives a NATS outage.
type NATS struct {
	Server   *server.Server
	URL      string
	StoreDir string
	port     int
	opts     server.Options
}

// NATSOption changes the server options before start.
type NATSOption func(*server.Options)

// StartNATS starts a JetStream server for the test and stops it at cleanup.
func StartNATS(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	n := &NATS{StoreDir: t.TempDir()}
	n.opts = server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  n.StoreDir,
		NoLog:     true,
		NoSigs:    true,
	}
	for _, o := range opts {
		o(&n.opts)
	}
	n.Start(t)
	t.Cleanup(func() { n.Stop() })
	return n
}

// Start (re)starts the server; after the first start it reuses the port.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	o := n.opts
	if n.port != 0 {
		o.Port = n.port
	}
	var s *server.Server
	var err error
	// The port may linger briefly after a stop.
	for i := 0; i < 50; i++ {
		s, err = server.NewServer(&o)
		if err == nil {
			go s.Start()
			if s.ReadyForConnections(10 * time.Second) {
				break
			}
			s.Shutdown()
			err = fmt.Errorf("not ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	n.Server = s
	n.port = s.Addr().(*net.TCPAddr).Port
	n.URL = s.ClientURL()
}

// Stop shuts the server down; its store stays for a restart.
func (n *NATS) Stop() {
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
		n.Server = nil
	}
}

// Connect returns a client connection and JetStream context, closed at cleanup.
func (n *NATS) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to %s: %v", n.URL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// DurableInfo returns the state of the durable consumer durable on
// stream. nil and no error: the consumer could not be looked up (none
// yet, or the server did not answer in time); an error: it was found but
// its state could not be read. The integration tests and the bench share
// it, each deciding what a missing consumer or an error means to it.
func DurableInfo(ctx context.Context, js jetstream.JetStream, stream, durable string) (*jetstream.ConsumerInfo, error) {
	c, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return nil, nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", durable, err)
	}
	return info, nil
}
