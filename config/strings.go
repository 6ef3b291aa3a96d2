package config

import (
	"strings"
)

// Strings is a repeatable flag: each --flag VALUE adds one value. From the
// environment or the config file, where a setting appears once, the value
// is split at commas and white space, so "a, b" gives two values. Values
// that may contain commas (URLs with query strings) are not for this type.
type Strings []string

// String joins the values with commas, as Set reads them back.
func (s *Strings) String() string {
	if s == nil {
		return ""
	}
	return strings.Join(*s, ",")
}

// Set adds the values in v.
func (s *Strings) Set(v string) error {
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		*s = append(*s, f)
	}
	return nil
}

// StringsVar adds a repeatable flag whose values land in p.
func (s *Set) StringsVar(p *Strings, name, usage string) {
	s.Var(p, name, usage+" (repeatable; in the environment or config file, comma-separated)")
}
