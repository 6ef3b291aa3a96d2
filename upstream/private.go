package upstream

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Private reports whether every cache is private (on this host or a
// private network): what a cache's mirror list may name is judged by it,
// and the list may come from any of them.
func (us *Set) Private(ctx context.Context) bool {
	for _, u := range us.list {
		if !u.private(ctx) {
			return false
		}
	}
	return len(us.list) > 0
}

// private reports whether the cache is on this host or
// a private network: a file:// directory, localhost, or a host whose
// addresses are all loopback, private or link-local. A name that does not
// resolve counts as public, the stricter choice.
func (u *cache) private(ctx context.Context) bool {
	if u.root != nil {
		return true
	}
	return hostIsPrivate(ctx, u.base.Hostname(), net.DefaultResolver.LookupNetIP)
}

func hostIsPrivate(ctx context.Context, host string, lookup func(context.Context, string, string) ([]netip.Addr, error)) bool {
	if host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return privateIP(a)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		if !privateIP(a) {
			return false
		}
	}
	return true
}

func privateIP(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(a) // carrier-grade NAT
}
