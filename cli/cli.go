// Package cli is the nix-ipfs command: one binary, the workers and tools as
// subcommands. Each subcommand turns flags, NIX_IPFS_* variables and the
// config file into a Config and calls its package's Run.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/config"
)

// command is one subcommand.
type command struct {
	summary string
	// setup registers flags and returns the function that runs once they
	// are parsed.
	setup func(s *config.Set) func(ctx context.Context, env *Env) error
	// args says the command takes positional arguments (in Env.Args),
	// which may come before, between or after its flags.
	args bool
}

// Env is what a subcommand runs with.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Args are the positional arguments of a command that takes them.
	Args []string
}

var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

const usage = `nix-ipfs publishes a Nix binary cache to IPFS through NATS JetStream.

Usage: nix-ipfs <command> [flags]

Commands:
%s
Every command takes --help, and --config-check (print the settings in effect
and where each came from, then exit). Flags can also be set by NIX_IPFS_*
environment variables or a config file (--config); see docs/OPERATIONS.md.
`

func printUsage(w io.Writer) {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, usage, b.String())
}

// ExitUsage is the exit code for bad flags or settings.
const ExitUsage = 2

// Main runs nix-ipfs with args and returns the exit code.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return ExitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		printUsage(stdout)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "nix-ipfs: unknown command %q\n\n", name)
		printUsage(stderr)
		return ExitUsage
	}
	s := config.NewSet("nix-ipfs "+name, "nix-ipfs "+name+": "+c.summary, "")
	s.SetOutput(stderr)
	check := s.Bool("config-check", false, "print the settings in effect and exit (non-zero if they are invalid)")
	run := c.setup(s)
	for _, a := range args[1:] {
		if a == "-h" || a == "-help" || a == "--help" {
			s.PrintUsage(stdout)
			return 0
		}
	}
	rest := args[1:]
	var positional []string
	if c.args {
		rest, positional = splitArgs(s, rest)
	}
	err := s.Parse(rest, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nix-ipfs %s: %v\n", name, err)
		return ExitUsage
	}
	if s.NArg() > 0 {
		fmt.Fprintf(stderr, "nix-ipfs %s: unexpected arguments %q\n", name, s.Args())
		return ExitUsage
	}
	env := &Env{Stdout: stdout, Stderr: stderr, Getenv: getenv, Args: positional}
	if *check {
		s.Dump(stdout)
		ctx = withConfigCheck(ctx)
	}
	if err := run(ctx, env); err != nil {
		if errors.Is(err, errConfigChecked) {
			return 0
		}
		fmt.Fprintf(stderr, "nix-ipfs %s: %v\n", name, err)
		var ue usageError
		if errors.As(err, &ue) {
			return ExitUsage
		}
		return 1
	}
	return 0
}

type configCheckKey struct{}

var errConfigChecked = errors.New("configuration checked")

func withConfigCheck(ctx context.Context) context.Context {
	return context.WithValue(ctx, configCheckKey{}, true)
}

// checked returns errConfigChecked when the command runs under
// --config-check: a command calls it after validating its settings and
// before doing anything, so config-check proves the settings are accepted.
func checked(ctx context.Context) error {
	if ctx.Value(configCheckKey{}) != nil {
		return errConfigChecked
	}
	return nil
}

// usageError marks an error in the settings: exit code 2.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// prepare is what every command does between parsing and working: validate
// the settings (exit 2 on error), stop here under --config-check, and build
// the logger.
func prepare(ctx context.Context, validate func() error, lc *config.Log) (*zap.Logger, error) {
	if err := validate(); err != nil {
		return nil, usagef("%v", err)
	}
	if err := checked(ctx); err != nil {
		return nil, err
	}
	log, err := lc.Logger()
	if err != nil {
		return nil, usagef("%v", err)
	}
	return log, nil
}

// metricsFlag adds --metrics-addr; example is shown in its help.
func metricsFlag(s *config.Set, example string) *string {
	help := "serve Prometheus /metrics and /healthz on this address"
	if example != "" {
		help += " (e.g. " + example + ")"
	} else {
		help += " while it runs"
	}
	return s.String("metrics-addr", "", help)
}

// splitArgs separates flags (with their values) from positional arguments,
// wherever each appears: "pin add NAME PATH --keep-revisions 3".
func splitArgs(s *config.Set, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := s.Lookup(name)
		if f == nil {
			continue // Parse reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, positional
}
