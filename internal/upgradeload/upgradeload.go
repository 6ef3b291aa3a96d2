// Package upgradeload makes a realistic rebuild for real Nix to build: two
// generations of a small system whose second generation changes two base
// libraries and so rebuilds everything above them with new references.
//
// It is the workload of issue 22's "upgrades move only what changed": what
// a client that fetched generation 1 must move to get generation 2 depends
// on where a rebuild changes bytes, so the bytes must be those of a real
// rebuild, not random data:
//
//   - bases: real shared libraries of this machine (Debian's .so files)
//     copied into $out/lib, each pointed with `patchelf --set-rpath` at its
//     own lib directory and base 0's, as Nix's stdenv does;
//   - apps: real ELF executables of this machine in $out/libexec, their
//     RUNPATH set to every base's lib directory, a wrapper script per
//     executable in $out/bin and docs that name store paths;
//   - a system path over all apps (symlinks, a manifest, a profile).
//
// Generation 2 patches one library of base 0 in place (a few bytes, same
// length) and inserts a few KiB in the middle of one library of base 1.
// Every other derivation changes only through its inputs' store paths, so
// every path is rebuilt and differs from generation 1 mostly where a store
// path hash is written: the case a chunker has to get right.
//
// The expressions need no nixpkgs; builders run /bin/sh with
// PATH=/usr/bin:/bin and read this machine's files, which requires
// `sandbox = false` (Debian's nix-bin default) and patchelf installed.
package upgradeload

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Config sizes a workload.
type Config struct {
	// Bytes is about the size of one generation's closure (its NAR bytes).
	// Tests use tens of MB, the bench 100-300 MB.
	Bytes int64
	// Nonce goes into every derivation, so that each run builds new store
	// paths (Nix builds nothing, and the hook runs for nothing, that is
	// already in the store). Both generations of one run share it.
	Nonce string
	// LibDir holds the shared libraries (default: the first of
	// /usr/lib/x86_64-linux-gnu, /usr/lib/aarch64-linux-gnu, /usr/lib that
	// exists), BinDir the executables (default /usr/bin), DocDir the
	// copyright files of Debian packages (default /usr/share/doc).
	LibDir, BinDir, DocDir string
	// Bases and Apps are how many derivations of each kind (defaults 4 and
	// 8; Apps grows with Bytes above 64 MB so an app stays a few MB).
	Bases, Apps int
}

// Plan is a workload with its files chosen: Expr writes either
// generation's expression from it, the same files both times.
type Plan struct {
	cfg   Config
	bases [][]file // shared libraries, per base
	apps  [][]file // executables, per app
	docs  [][]file // text, per app
	// patched (in base 0) and grown (in base 1) are the libraries
	// generation 2 changes.
	patched, grown string
}

type file struct {
	path string
	size int64
}

// Shares of Bytes: libraries, executables, docs. Docs are text that names
// store paths; a few percent, as in a real system.
const (
	libShare = 0.55
	binShare = 0.42
	docShare = 0.03
	// minFile and maxFile bound the files picked: no tiny stubs, and no
	// single library (libLLVM is 100 MB) that would be the whole closure.
	minFile = 16 << 10
	maxFile = 8 << 20
	// Grow is how many bytes generation 2 inserts in the grown library.
	Grow = 3072
)

// NewPlan picks this machine's files for a workload of cfg.Bytes: from
// each directory, files sorted by name and taken at an even stride, so the
// choice is the same on every run on one machine and spread over the whole
// directory. It is errs.Config when the machine has too few files.
func NewPlan(cfg Config) (*Plan, error) {
	if cfg.Bytes <= 0 {
		return nil, errs.Errorf(errs.Invalid, "upgradeload: size %d", cfg.Bytes)
	}
	if cfg.LibDir == "" {
		for _, d := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"} {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				cfg.LibDir = d
				break
			}
		}
	}
	if cfg.BinDir == "" {
		cfg.BinDir = "/usr/bin"
	}
	if cfg.DocDir == "" {
		cfg.DocDir = "/usr/share/doc"
	}
	if cfg.Bases <= 0 {
		cfg.Bases = 4
	}
	if cfg.Apps <= 0 {
		cfg.Apps = 8
		if n := int(cfg.Bytes / (8 << 20)); n > cfg.Apps {
			cfg.Apps = n
		}
	}
	if cfg.Bases < 2 {
		return nil, errs.Errorf(errs.Invalid, "upgradeload: %d bases, need 2 (one patched, one grown)", cfg.Bases)
	}
	libs, err := pick(cfg.LibDir, int64(float64(cfg.Bytes)*libShare), isLib)
	if err != nil {
		return nil, err
	}
	bins, err := pick(cfg.BinDir, int64(float64(cfg.Bytes)*binShare), isDynamicExec)
	if err != nil {
		return nil, err
	}
	docs, err := pickDocs(cfg.DocDir, int64(float64(cfg.Bytes)*docShare))
	if err != nil {
		return nil, err
	}
	if len(libs) < 2*cfg.Bases || len(bins) < cfg.Apps {
		return nil, errs.Errorf(errs.Config, "upgradeload: %d libraries in %s and %d executables in %s: too few for %d bases and %d apps",
			len(libs), cfg.LibDir, len(bins), cfg.BinDir, cfg.Bases, cfg.Apps)
	}
	p := &Plan{cfg: cfg, bases: deal(libs, cfg.Bases), apps: deal(bins, cfg.Apps), docs: deal(docs, cfg.Apps)}
	p.patched = filepath.Base(largest(p.bases[0]).path)
	p.grown = filepath.Base(largest(p.bases[1]).path)
	return p, nil
}

// Patched and Grown name the libraries generation 2 changes (file names in
// base 0's and base 1's lib directory).
func (p *Plan) Patched() string { return p.patched }
func (p *Plan) Grown() string   { return p.grown }

// Files is how many machine files the plan copies, and their bytes.
func (p *Plan) Files() (n int, bytes int64) {
	for _, g := range [][][]file{p.bases, p.apps, p.docs} {
		for _, group := range g {
			for _, f := range group {
				n++
				bytes += f.size
			}
		}
	}
	return n, bytes
}

// deal spreads files over n groups in turn, so groups have similar sizes.
func deal(fs []file, n int) [][]file {
	out := make([][]file, n)
	for i, f := range fs {
		out[i%n] = append(out[i%n], f)
	}
	return out
}

func largest(fs []file) file {
	var l file
	for _, f := range fs {
		if f.size > l.size {
			l = f
		}
	}
	return l
}

// plainName: file names the builder scripts may use unquoted in printf
// formats and Nix strings.
var plainName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

var soName = regexp.MustCompile(`\.so(\.[0-9.]+)?$`)

func isLib(path string) bool {
	return soName.MatchString(path) && elfKind(path, elf.ET_DYN, false)
}

// isDynamicExec: an ELF executable with a dynamic section, so that
// patchelf can give it a RUNPATH (PIE executables are ET_DYN too).
func isDynamicExec(path string) bool {
	return elfKind(path, elf.ET_DYN, true) || elfKind(path, elf.ET_EXEC, true)
}

func elfKind(path string, t elf.Type, needInterp bool) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if f.Type != t || f.Section(".dynamic") == nil {
		return false
	}
	hasInterp := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			hasInterp = true
		}
	}
	return hasInterp == needInterp
}

// pick returns files of dir (not recursively, no symlinks) accepted by ok,
// sized between minFile and maxFile, about budget bytes in all.
func pick(dir string, budget int64, ok func(string) bool) ([]file, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, errs.Errorf(errs.Config, "upgradeload: %w", err)
	}
	var all []file
	var total int64
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() < minFile || fi.Size() > maxFile {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if !plainName.MatchString(e.Name()) || !ok(p) {
			continue
		}
		all = append(all, file{p, fi.Size()})
		total += fi.Size()
	}
	return stride(all, total, budget), nil
}

// stride takes every k-th file of all (sorted by name), k chosen so
// that one pass takes about budget bytes, then further passes from the
// next offsets while short of it.
func stride(all []file, total, budget int64) []file {
	sort.Slice(all, func(i, j int) bool { return all[i].path < all[j].path })
	if total <= budget {
		return all
	}
	k := int(total / budget)
	if k < 1 {
		k = 1
	}
	taken := make([]bool, len(all))
	var got int64
	for off := 0; off < k && got < budget; off++ {
		for i := off; i < len(all) && got < budget; i += k {
			taken[i] = true
			got += all[i].size
		}
	}
	var out []file
	for i, f := range all {
		if taken[i] {
			out = append(out, f)
		}
	}
	return out
}

// pickDocs: the copyright files of Debian packages, real text of many
// sizes.
func pickDocs(dir string, budget int64) ([]file, error) {
	var all []file
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() && d.Name() == "copyright" {
			if fi, err := d.Info(); err == nil && fi.Size() > 0 {
				all = append(all, file{p, fi.Size()})
				total += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return nil, errs.Errorf(errs.Config, "upgradeload: %w", err)
	}
	if len(all) == 0 {
		return nil, errs.Errorf(errs.Config, "upgradeload: no copyright files under %s", dir)
	}
	return stride(all, total, budget), nil
}

// Expr is the Nix expression of generation gen (1 or 2): it evaluates to
// the system path, whose closure is the whole generation.
func (p *Plan) Expr(gen int) (string, error) {
	if gen != 1 && gen != 2 {
		return "", errs.Errorf(errs.Invalid, "upgradeload: generation %d (1 or 2)", gen)
	}
	var b strings.Builder
	b.WriteString("let\n")
	var libDirs []string
	for i, libs := range p.bases {
		var sh strings.Builder
		sh.WriteString("set -e\nmkdir -p $out/lib $out/share/doc\n")
		rpath := "$out/lib"
		if i > 0 {
			rpath += ":${base0}/lib"
		}
		for _, f := range libs {
			n := filepath.Base(f.path)
			fmt.Fprintf(&sh, "cp %s $out/lib/%s\nchmod u+w $out/lib/%s\npatchelf --set-rpath \"%s\" $out/lib/%s 2>/dev/null || true\n",
				shq(f.path), shq(n), shq(n), rpath, shq(n))
		}
		if gen == 2 && i == 0 {
			// A security fix: a few bytes in the middle, same length.
			fmt.Fprintf(&sh, "f=$out/lib/%s\noff=$(( $(stat -c %%s $f) / 2 ))\nprintf 'nix-ipfs-gen2' | dd of=$f bs=1 seek=$off conv=notrunc 2>/dev/null\n", shq(p.patched))
		}
		if gen == 2 && i == 1 {
			// A new feature: Grow bytes (taken from the library itself)
			// inserted in the middle, shifting its second half.
			fmt.Fprintf(&sh, "f=$out/lib/%s\nmid=$(( $(stat -c %%s $f) / 2 ))\n{ head -c $mid $f; head -c %d $f; tail -c +$((mid + 1)) $f; } > $f.new\nmv $f.new $f\n", shq(p.grown), Grow)
		}
		fmt.Fprintf(&sh, "printf 'base %d: %d shared libraries.\\nInstalled in %%s; RUNPATH %%s.\\n' \"$out\" \"%s\" > $out/share/doc/README\n", i, len(libs), rpath)
		extra := ""
		if i > 0 {
			extra = "inherit base0;"
		}
		fmt.Fprintf(&b, "  base%d = %s;\n", i, p.drv(fmt.Sprintf("upgradeload-base-%d", i), sh.String(), extra))
		libDirs = append(libDirs, fmt.Sprintf("${base%d}/lib", i))
	}
	inheritBases := "inherit"
	for i := range p.bases {
		inheritBases += fmt.Sprintf(" base%d", i)
	}
	inheritBases += ";"
	libPath := strings.Join(libDirs, ":")
	var appNames []string
	for j, bins := range p.apps {
		var sh strings.Builder
		name := fmt.Sprintf("upgradeload-app-%d", j)
		fmt.Fprintf(&sh, "set -e\nmkdir -p $out/bin $out/libexec $out/share/doc/%s $out/nix-support\nlibs=\"%s\"\n", name, libPath)
		for _, f := range bins {
			n := filepath.Base(f.path)
			fmt.Fprintf(&sh, "cp %s $out/libexec/%s\nchmod u+w $out/libexec/%s\npatchelf --set-rpath \"$libs\" $out/libexec/%s 2>/dev/null || true\n",
				shq(f.path), shq(n), shq(n), shq(n))
			fmt.Fprintf(&sh, "printf '#!/bin/sh\\n# %s: generated wrapper\\nexport LD_LIBRARY_PATH=\"%%s\"\\nexec %%s \"$@\"\\n' \"$libs\" \"$out/libexec/%s\" > $out/bin/%s\nchmod +x $out/bin/%s\n",
				n, n, shq(n), shq(n))
		}
		fmt.Fprintf(&sh, "{ printf '%s\\n\\nInstalled in %%s.\\nLibraries from:\\n' \"$out\"; echo \"$libs\" | tr : '\\n'; printf '\\nExecutables:\\n'; ls $out/libexec | sed \"s|^|  $out/libexec/|\"; } > $out/share/doc/%s/README\n", name, name)
		for k, d := range p.docs[j] {
			fmt.Fprintf(&sh, "{ cat %s; printf '\\nShipped in %%s\\n' \"$out\"; } > $out/share/doc/%s/copyright-%d\n", shq(d.path), name, k)
		}
		fmt.Fprintf(&sh, "echo \"%s\" > $out/nix-support/propagated-build-inputs\n", strings.ReplaceAll(libPath, "/lib", ""))
		fmt.Fprintf(&b, "  app%d = %s;\n", j, p.drv(name, sh.String(), inheritBases))
		appNames = append(appNames, fmt.Sprintf("app%d", j))
	}
	sys := `set -e
mkdir -p $out/bin $out/etc
for a in $apps; do
  for f in $a/bin/*; do ln -s $f $out/bin/; done
  echo $a >> $out/etc/manifest
done
printf 'export PATH=%s/bin:$PATH\n' "$out" > $out/etc/profile
`
	fmt.Fprintf(&b, "in %s\n", p.drv("upgradeload-system-path", sys, "apps = [ "+strings.Join(appNames, " ")+" ];"))
	return b.String(), nil
}

// drv is a derivation that needs no nixpkgs (as internal/testenv.Drv,
// which tests only may import), with the plan's nonce.
func (p *Plan) drv(name, script, extra string) string {
	s := strings.ReplaceAll(script, "''", "'''")
	s = strings.ReplaceAll(s, "${", "''${")
	return fmt.Sprintf(`derivation {
    name = %q;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    nonce = %q;
    args = [ "-c" ''
%s
'' ];
    %s
  }`, name, p.cfg.Nonce, s, extra)
}

// shq quotes s for the shell.
func shq(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-/") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ErrNoPatchelf is returned by CheckTools when patchelf is missing.
var ErrNoPatchelf = errors.New("upgradeload: patchelf not found (Debian package patchelf; scripts/install-deps.sh installs it)")

// CheckTools reports whether the builders' tools are on /usr/bin:/bin.
func CheckTools() error {
	for _, d := range []string{"/usr/bin", "/bin"} {
		if _, err := os.Stat(filepath.Join(d, "patchelf")); err == nil {
			return nil
		}
	}
	return errs.Errorf(errs.Config, "%w", ErrNoPatchelf)
}
