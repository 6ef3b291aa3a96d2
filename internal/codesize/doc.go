// Package codesize holds a test that keeps every package small enough to
// read in one sitting: no package but the bench harness has more than
// MaxLines lines of non-test Go. A package that grows past it has more than
// one noun in it, and the noun wants a package of its own.
package codesize

// MaxLines bounds the non-test Go lines of one package.
const MaxLines = 2000

// Exempt lists the directories allowed to be larger, with the reason.
var Exempt = map[string]string{
	"bench": "the benchmark harness: one program whose sections share a runner",
}
