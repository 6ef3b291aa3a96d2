// Package config turns flags, NIX_IPFS_* environment variables and an
// optional config file into settings, in that order of precedence.
//
// Every flag --some-name has the environment variable NIX_IPFS_SOME_NAME and
// the config-file key some-name. The file has one "key = value" per line,
// '#' starts a comment, like nix.conf. The hook needs this most: Nix runs it
// with the daemon's environment and no arguments, so /etc/nix-ipfs/hook.conf
// is where its settings live.
package config

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// EnvPrefix starts every environment variable that sets a flag.
const EnvPrefix = "NIX_IPFS_"

// EnvConfig names the config file when --config is not given.
const EnvConfig = EnvPrefix + "CONFIG"

// EnvName returns the environment variable for flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Set is a flag set that also reads the environment and a config file.
type Set struct {
	*flag.FlagSet
	name        string
	summary     string
	defaultFile string
	configPath  string
	// Sources records where each flag's value came from, for config-check.
	Sources map[string]string
}

// NewSet returns a Set for command name. summary is the first part of
// --help; defaultFile, if not empty, is read when it exists and neither
// --config nor NIX_IPFS_CONFIG names another file.
func NewSet(name, summary, defaultFile string) *Set {
	s := &Set{
		FlagSet:     flag.NewFlagSet(name, flag.ContinueOnError),
		name:        name,
		summary:     summary,
		defaultFile: defaultFile,
		Sources:     map[string]string{},
	}
	s.StringVar(&s.configPath, "config", "", "read settings from this file (\"key = value\" lines; keys are flag names)")
	s.FlagSet.Usage = func() { s.PrintUsage(s.Output()) }
	return s
}

// PrintUsage writes the help text: the summary, then every flag with its
// environment variable and default.
func (s *Set) PrintUsage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nFlags (each also set by its environment variable, or by its name in the config file):\n", strings.TrimSpace(s.summary))
	s.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n        %s\n        env %s", line, strings.ReplaceAll(usage, "\n", "\n        "), EnvName(f.Name))
		if f.Name == "config" {
			if s.defaultFile != "" {
				fmt.Fprintf(w, "; default %s if it exists", s.defaultFile)
			}
		} else if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
			fmt.Fprintf(w, "; default %s", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// Parse reads args, then fills every flag not given on the command line from
// the environment (getenv), then from the config file.
func (s *Set) Parse(args []string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := s.FlagSet.Parse(args); err != nil {
		return err
	}
	s.Visit(func(f *flag.Flag) { s.Sources[f.Name] = "flag" })

	path, explicit := s.configPath, s.configPath != ""
	if path == "" {
		if v := getenv(EnvConfig); v != "" {
			path, explicit = v, true
		} else {
			path = s.defaultFile
		}
	}
	// Errors are collected, not returned at once: the hook must carry on
	// with every setting it could read when one source is broken.
	var errList []error
	file := map[string]fileValue{}
	if path != "" {
		var err error
		file, err = readFile(path)
		if err != nil && (explicit || !errors.Is(err, os.ErrNotExist)) {
			errList = append(errList, err)
		}
		for k, v := range file {
			if s.Lookup(k) == nil || k == "config" {
				errList = append(errList, fmt.Errorf("%s:%d: unknown setting %q (run %s --help for the list)", path, v.line, k, s.name))
				delete(file, k)
			}
		}
	}

	s.VisitAll(func(f *flag.Flag) {
		if _, set := s.Sources[f.Name]; set || f.Name == "config" {
			return
		}
		env := EnvName(f.Name)
		if v, ok := lookupEnv(getenv, env); ok {
			if err := f.Value.Set(v); err != nil {
				errList = append(errList, fmt.Errorf("%s=%q: %v", env, v, err))
			}
			s.Sources[f.Name] = "env " + env
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := f.Value.Set(v.value); err != nil {
				errList = append(errList, fmt.Errorf("%s:%d: %s = %q: %v", path, v.line, f.Name, v.value, err))
			}
			s.Sources[f.Name] = "file " + path
			return
		}
		s.Sources[f.Name] = "default"
	})
	return errors.Join(errList...)
}

// Dump writes every setting, its value and where it came from, hiding
// secrets. It backs --config-check.
func (s *Set) Dump(w io.Writer) {
	var names []string
	s.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := s.Lookup(n)
		v := f.Value.String()
		if IsSecret(n) && v != "" {
			v = "(set, hidden)"
		}
		fmt.Fprintf(w, "%s = %s\t# %s\n", n, v, s.Sources[n])
	}
}

// IsSecret reports whether a setting holds a secret that must not be printed.
func IsSecret(name string) bool {
	return strings.Contains(name, "password") || strings.Contains(name, "token")
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

type fileValue struct {
	value string
	line  int
}

func readFile(path string) (map[string]fileValue, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	out := map[string]fileValue{}
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		line = strings.TrimSpace(line)
		// A comment is a line starting with '#' or " #" after a value, so
		// a '#' inside a password or URL stays part of the value.
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected \"key = value\"", path, n)
		}
		k = strings.ReplaceAll(strings.TrimSpace(k), "_", "-")
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s:%d: %q set twice", path, n, k)
		}
		out[k] = fileValue{value: strings.TrimSpace(v), line: n}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return out, nil
}
