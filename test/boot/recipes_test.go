package boot

// Checks of the integrator recipes in docs/ that need neither root, QEMU nor
// the tools the recipes are for: shell syntax, the busybox inittab, the
// systemd unit's privileges and restart rules (and systemd-analyze verify
// when it is there), the structure of the LinuxKit and kubeadm YAML, that
// no supervisor restarts vipd in a loop on a bad configuration (exit 2),
// that every recipe says how it is tested, and that every vip.* key a
// recipe names is one vipd knows (read from ../../kcmdline.go). The busybox
// wrapper vipd-respawn is also run (respawn_test.go).
//
//	cd test/boot && go test -count=1 -run TestRecipes -v .

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const recipeDocs = "../../docs"

func recipeRead(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(recipeDocs, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// recipeFiles lists every file under docs/, as paths relative to it.
func recipeFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(recipeDocs, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(recipeDocs, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// recipeScripts are the shell scripts of the recipes; the interpreter that
// runs each one is taken from its #! line.
var recipeScripts = []string{
	"busybox/rc",
	"busybox/vipd-respawn",
	"dracut/90vipd/module-setup.sh",
	"dracut/90vipd/vipd-start.sh",
	"dracut/90vipd/vipd-stop.sh",
	"mkinitcpio/install/vipd",
	"mkinitcpio/hooks/vipd",
}

// recipeBashisms are constructs that busybox ash or dash reject or read
// differently; sh -n does not catch most of them.
var recipeBashisms = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`\[\[`), "[[ ]]"},
	{regexp.MustCompile(`(^|[;&|]\s*)function\s`), "function keyword"},
	{regexp.MustCompile(`<<<`), "here-string"},
	{regexp.MustCompile(`\$'`), "$'...' quoting"},
	{regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*//?[^}]*/`), "${var/pattern/repl}"},
	{regexp.MustCompile(`\$\{![A-Za-z_]`), "${!indirect}"},
	{regexp.MustCompile(`(^|[;&|]\s*)(source|declare|typeset|shopt|pushd|popd)\s`), "bash builtin"},
	{regexp.MustCompile(`\[ [^]]* == `), "== in [ ]"},
	{regexp.MustCompile(`&>`), "&> redirection"},
	{regexp.MustCompile(`\$RANDOM|\$BASHPID|\$\{?PIPESTATUS`), "bash variable"},
	{regexp.MustCompile(`\b[A-Za-z_][A-Za-z0-9_]*=\(`), "array"},
}

// recipeShells returns the POSIX shells to check syntax with: busybox's
// ash (what the images run) and the system's sh, when present.
func recipeShells() [][]string {
	var shells [][]string
	if p, err := exec.LookPath("busybox"); err == nil {
		shells = append(shells, []string{p, "sh"})
	}
	for _, name := range []string{"dash", "sh"} {
		if p, err := exec.LookPath(name); err == nil {
			shells = append(shells, []string{p})
		}
	}
	return shells
}

func recipeSyntax(t *testing.T, shell []string, name, script string) {
	t.Helper()
	cmd := exec.Command(shell[0], append(shell[1:], "-n")...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: %s -n: %v\n%s", name, strings.Join(shell, " "), err, out)
	}
}

func recipeNoBashisms(t *testing.T, name, script string) {
	t.Helper()
	for i, line := range strings.Split(script, "\n") {
		code := strings.TrimSpace(line)
		if strings.HasPrefix(code, "#") {
			continue
		}
		for _, b := range recipeBashisms {
			if b.re.MatchString(line) {
				t.Errorf("%s:%d: %s in a POSIX sh script: %s", name, i+1, b.what, code)
			}
		}
	}
}

// recipeShBlocks returns the ```sh blocks of a Markdown file.
func recipeShBlocks(md string) []string {
	var blocks []string
	var cur []string
	in := false
	for _, line := range strings.Split(md, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n")+"\n")
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

func TestRecipesShellSyntax(t *testing.T) {
	shells := recipeShells()
	if len(shells) == 0 {
		t.Skip("no busybox, dash or sh to check shell syntax with")
	}
	for _, s := range shells {
		t.Logf("POSIX shell: %s", strings.Join(s, " "))
	}
	bash, bashErr := exec.LookPath("bash")
	for _, name := range recipeScripts {
		script := recipeRead(t, name)
		first, _, _ := strings.Cut(script, "\n")
		switch first {
		case "#!/bin/sh", "#!/usr/bin/ash":
			for _, sh := range shells {
				recipeSyntax(t, sh, name, script)
			}
			recipeNoBashisms(t, name, script)
		case "#!/bin/bash":
			// dracut's module-setup.sh and mkinitcpio's install hooks
			// are sourced by bash.
			if bashErr != nil {
				t.Logf("%s: no bash; checked with sh -n only", name)
				recipeSyntax(t, shells[0], name, script)
				continue
			}
			recipeSyntax(t, []string{bash}, name, script)
		default:
			t.Errorf("%s: unexpected first line %q", name, first)
		}
		if fi, err := os.Stat(filepath.Join(recipeDocs, name)); err == nil && fi.Mode()&0o111 == 0 {
			t.Errorf("%s: not executable", name)
		}
	}
	blocks := recipeShBlocks(recipeRead(t, "u-root.md"))
	if len(blocks) == 0 {
		t.Error("u-root.md: no ```sh block")
	}
	for i, b := range blocks {
		name := fmt.Sprintf("u-root.md block %d", i+1)
		for _, sh := range shells {
			recipeSyntax(t, sh, name, b)
		}
		recipeNoBashisms(t, name, b)
	}
}

func TestRecipesBusyboxInittab(t *testing.T) {
	actions := map[string]bool{"sysinit": true, "wait": true, "once": true, "respawn": true,
		"askfirst": true, "shutdown": true, "restart": true, "ctrlaltdel": true}
	seen := map[string][]string{}
	for i, line := range strings.Split(recipeRead(t, "busybox/inittab"), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, ":", 4)
		if len(f) != 4 || f[3] == "" {
			t.Errorf("inittab:%d: want id:runlevels:action:process, got %q", i+1, line)
			continue
		}
		if !actions[f[2]] {
			t.Errorf("inittab:%d: busybox init has no action %q", i+1, f[2])
		}
		seen[f[2]] = append(seen[f[2]], f[3])
	}
	// init's ::respawn: restarts vipd once a second for ever, a bad
	// configuration included: vipd goes under vipd-respawn, which backs off
	// on exit 2 (respawn_test.go runs it).
	if !slices.Contains(seen["respawn"], "/etc/init.d/vipd-respawn") {
		t.Errorf("inittab: no ::respawn:/etc/init.d/vipd-respawn (respawn: %q)", seen["respawn"])
	}
	for _, p := range seen["respawn"] {
		if f := strings.Fields(p); len(f) > 0 && filepath.Base(f[0]) == "vipd" {
			t.Errorf("inittab: ::respawn:%s runs vipd straight from init, which restarts it once a second after exit 2", p)
		}
	}
	if !slices.Contains(seen["sysinit"], "/etc/init.d/rc start") || !slices.Contains(seen["shutdown"], "/etc/init.d/rc stop") {
		t.Errorf("inittab: want rc start at sysinit and rc stop at shutdown, got %q", seen)
	}
	rc := recipeRead(t, "busybox/rc")
	for _, want := range []string{"boot.ip=", "boot.hostname=", "/etc/modules", "insmod", "devtmpfs", "/run/vipd", "pidof vipd-respawn"} {
		if !strings.Contains(rc, want) {
			t.Errorf("busybox/rc does not mention %s", want)
		}
	}
}

// TestRecipesInitramfsLoops: the restart loops of the dracut and
// mkinitcpio hooks and of the u-root uinit end on exit 2 with one line of
// their own, and the hooks' loops write to the console (with /dev/null
// there, vipd's one line about a bad setting, which goes to stderr only,
// would be lost).
func TestRecipesInitramfsLoops(t *testing.T) {
	loops := map[string]string{
		"dracut/90vipd/vipd-start.sh": recipeRead(t, "dracut/90vipd/vipd-start.sh"),
		"mkinitcpio/hooks/vipd":       recipeRead(t, "mkinitcpio/hooks/vipd"),
	}
	blocks := recipeShBlocks(recipeRead(t, "u-root.md"))
	if len(blocks) > 0 {
		loops["u-root.md"] = blocks[0]
	}
	// if [ "$rc" -eq 2 ]; then <one echo>; break; fi
	exit2 := regexp.MustCompile(`if \[ "\$rc" -eq 2 \]; then\s+echo "[^"\n]*exited 2 \(bad configuration\)[^"\n]*"( >&2)?\s+break\s+fi`)
	for name, text := range loops {
		if !exit2.MatchString(text) {
			t.Errorf("%s: the loop does not end on exit 2 with one line (want %s)", name, exit2)
		}
		if strings.Contains(name, "/") && (!strings.Contains(text, ">/dev/console 2>&1 &") || strings.Contains(text, ">/dev/null 2>&1 &")) {
			t.Errorf("%s: the loop's output does not go to /dev/console", name)
		}
	}
}

// recipeUnit reads a systemd unit into section -> key -> values (a key may
// be given more than once).
func recipeUnit(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	unit := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %d: %q is not key=value in a section", i+1, line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	return unit
}

func recipeFieldSet(values []string) []string {
	var set []string
	for _, v := range values {
		set = append(set, strings.Fields(v)...)
	}
	sort.Strings(set)
	return slices.Compact(set)
}

func TestRecipesSystemdUnit(t *testing.T) {
	text := recipeRead(t, "systemd/vipd.service")
	svc := recipeUnit(t, text)["Service"]
	if svc == nil {
		t.Fatal("no [Service] section")
	}
	three := []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW"} // CAP_BPF: the kernel fence, dropped once loaded
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if got := recipeFieldSet(svc[k]); !slices.Equal(got, three) {
			t.Errorf("%s = %q, want exactly %q", k, got, three)
		}
	}
	if caps := regexp.MustCompile(`CAP_[A-Z_]+`).FindAllString(text, -1); len(recipeFieldSet(caps)) != 3 {
		t.Errorf("the unit names capabilities other than the three: %q", recipeFieldSet(caps))
	}
	if !slices.Contains(svc["SystemCallFilter"], "bpf") {
		t.Errorf("SystemCallFilter = %q: bpf(2), which loads the kernel fence, is not allowed", svc["SystemCallFilter"])
	}
	want := map[string]string{
		"Type":                     "simple",
		"ExecReload":               "/bin/kill -HUP $MAINPID",
		"Restart":                  "always",
		"RestartSec":               "100ms",
		"RestartPreventExitStatus": "2", // bad configuration: no restart loop
		"KillSignal":               "SIGTERM",
		"NoNewPrivileges":          "yes",
		"RuntimeDirectory":         "vipd",
		"RuntimeDirectoryPreserve": "restart", // else a crash restart finds no state file to resume from
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if user, dyn := svc["User"], svc["DynamicUser"]; len(user) == 0 && !slices.Contains(dyn, "yes") {
		t.Error("neither User= nor DynamicUser=yes: vipd would run as root")
	}
	if fams := recipeFieldSet(svc["RestrictAddressFamilies"]); len(fams) > 0 {
		for _, f := range []string{"AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6"} {
			if !slices.Contains(fams, f) || strings.HasPrefix(fams[0], "~") {
				t.Errorf("RestrictAddressFamilies=%q must allow %s", fams, f)
			}
		}
	}
	for _, k := range []string{"PrivateNetwork", "PrivateUsers"} {
		if slices.Contains(svc[k], "yes") {
			t.Errorf("%s=yes: vipd needs the host's network and real capabilities", k)
		}
	}
	exec0 := strings.Fields(strings.Join(svc["ExecStart"], " "))
	if len(exec0) == 0 || !filepath.IsAbs(exec0[0]) {
		t.Fatalf("ExecStart = %q", svc["ExecStart"])
	}

	for _, name := range []string{"systemd/vipd.service", "dracut/90vipd/vipd.service"} {
		unit := recipeUnit(t, recipeRead(t, name))
		// exit 2 is bad configuration: restarting cannot help.
		if got := recipeFieldSet(unit["Service"]["RestartPreventExitStatus"]); !slices.Contains(got, "2") {
			t.Errorf("%s: RestartPreventExitStatus=%q, want 2 in it", name, got)
		}
		// Order after network.target, never pull it in: only network
		// managers do (systemd.special(7)).
		if got := recipeFieldSet(unit["Unit"]["After"]); !slices.Contains(got, "network.target") {
			t.Errorf("%s: After=%q, want network.target in it", name, got)
		}
		for _, k := range []string{"Wants", "Requires", "Requisite", "BindsTo", "Upholds"} {
			if slices.Contains(recipeFieldSet(unit["Unit"][k]), "network.target") {
				t.Errorf("%s: %s=network.target: only network managers pull it in", name, k)
			}
		}
		t.Run("verify "+name, func(t *testing.T) { recipeVerifyUnit(t, name) })
	}
}

// recipeVerifyUnit runs systemd-analyze verify on a copy of the unit whose
// Exec lines name this test binary instead of vipd: verify wants the
// executable to exist.
func recipeVerifyUnit(t *testing.T, name string) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found: verify skipped")
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text := recipeRead(t, name)
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == "ExecStart" {
			f := strings.Fields(v)
			line = k + "=" + strings.Join(append([]string{self}, f[1:]...), " ")
		}
		out = append(out, line)
	}
	path := filepath.Join(t.TempDir(), "vipd.service")
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--man=no", path)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	// verify reports problems on stderr, sometimes with status 0; only
	// lines about this unit count (not the host's other units).
	var problems []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "vipd.service") {
			problems = append(problems, l)
		}
	}
	if err != nil || len(problems) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, buf.String())
	} else {
		t.Logf("systemd-analyze verify %s: ok", name)
	}
}

// recipeYAML parses the block-style subset of YAML the recipes use
// (mappings, sequences, plain and quoted scalars, comments) into
// map[string]any, []any and string. Anything else is an error, so the
// recipes stay within what this check understands.
func recipeYAML(text string) (any, error) {
	type line struct {
		n      int
		indent int
		text   string
	}
	var lines []line
	for i, raw := range strings.Split(text, "\n") {
		if strings.Contains(raw, "\t") {
			return nil, fmt.Errorf("line %d: tab", i+1)
		}
		s := recipeYAMLComment(raw)
		if strings.TrimSpace(s) == "" {
			continue
		}
		body := strings.TrimLeft(s, " ")
		lines = append(lines, line{i + 1, len(s) - len(body), strings.TrimRight(body, " ")})
	}
	pos := 0
	var block func(indent int) (any, error)
	block = func(indent int) (any, error) {
		if pos >= len(lines) || lines[pos].indent != indent {
			return nil, fmt.Errorf("line %d: want indentation %d", lines[min(pos, len(lines)-1)].n, indent)
		}
		if strings.HasPrefix(lines[pos].text, "- ") || lines[pos].text == "-" {
			var seq []any
			for pos < len(lines) && lines[pos].indent == indent && (strings.HasPrefix(lines[pos].text, "- ") || lines[pos].text == "-") {
				rest := strings.TrimLeft(strings.TrimPrefix(lines[pos].text, "-"), " ")
				switch {
				case rest == "":
					pos++
					if pos >= len(lines) || lines[pos].indent <= indent {
						return nil, fmt.Errorf("line %d: empty item", lines[pos-1].n)
					}
					v, err := block(lines[pos].indent)
					if err != nil {
						return nil, err
					}
					seq = append(seq, v)
				case recipeYAMLKey(rest) != "":
					// "- key: ..." opens a mapping indented to its key
					lines[pos].indent = indent + len(lines[pos].text) - len(rest)
					lines[pos].text = rest
					v, err := block(lines[pos].indent)
					if err != nil {
						return nil, err
					}
					seq = append(seq, v)
				default:
					v, err := recipeYAMLScalar(rest, lines[pos].n)
					if err != nil {
						return nil, err
					}
					seq = append(seq, v)
					pos++
				}
			}
			if pos < len(lines) && lines[pos].indent > indent {
				return nil, fmt.Errorf("line %d: unexpected indentation", lines[pos].n)
			}
			return seq, nil
		}
		m := map[string]any{}
		for pos < len(lines) && lines[pos].indent == indent {
			l := lines[pos]
			key := recipeYAMLKey(l.text)
			if key == "" {
				return nil, fmt.Errorf("line %d: want key: value, got %q", l.n, l.text)
			}
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("line %d: key %q twice", l.n, key)
			}
			rest := strings.TrimSpace(strings.TrimPrefix(l.text, key+":"))
			pos++
			if rest != "" {
				v, err := recipeYAMLScalar(rest, l.n)
				if err != nil {
					return nil, err
				}
				m[key] = v
				continue
			}
			if pos >= len(lines) || lines[pos].indent <= indent {
				m[key] = ""
				continue
			}
			v, err := block(lines[pos].indent)
			if err != nil {
				return nil, err
			}
			m[key] = v
		}
		if pos < len(lines) && lines[pos].indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", lines[pos].n)
		}
		return m, nil
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("empty")
	}
	v, err := block(0)
	if err == nil && pos != len(lines) {
		err = fmt.Errorf("line %d: unexpected indentation", lines[pos].n)
	}
	return v, err
}

var recipeYAMLKeyRe = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_.-]*):(\s|$)`)

func recipeYAMLKey(s string) string {
	if m := recipeYAMLKeyRe.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// recipeYAMLComment drops a # comment that is not inside quotes.
func recipeYAMLComment(s string) string {
	var quote rune
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#' && (i == 0 || s[i-1] == ' '):
			return s[:i]
		}
	}
	return s
}

func recipeYAMLScalar(s string, n int) (any, error) {
	switch {
	case strings.HasPrefix(s, `"`):
		v, err := strconv.Unquote(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: bad double-quoted string %s", n, s)
		}
		return v, nil
	case strings.HasPrefix(s, "'"):
		if len(s) < 2 || !strings.HasSuffix(s, "'") {
			return nil, fmt.Errorf("line %d: bad single-quoted string %s", n, s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	case strings.ContainsAny(s[:1], "[]{}&*!|>%@`"):
		return nil, fmt.Errorf("line %d: %q: flow or special YAML is beyond this check", n, s)
	case strings.Contains(s, ": "):
		return nil, fmt.Errorf("line %d: %q: a plain scalar with ': '", n, s)
	}
	return s, nil
}

// recipePythonYAML parses a file with PyYAML when python3 has it, with
// every scalar turned into a string as recipeYAML gives it. ok is false
// when PyYAML is not there.
func recipePythonYAML(t *testing.T, path string) (v any, ok bool) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, false
	}
	const prog = `import json, sys
try:
    import yaml
except ImportError:
    sys.exit(3)
def s(v):
    if isinstance(v, dict): return {str(k): s(x) for k, x in v.items()}
    if isinstance(v, list): return [s(x) for x in v]
    if v is None: return ""
    if isinstance(v, bool): return "true" if v else "false"
    return str(v)
json.dump(s(yaml.safe_load(open(sys.argv[1]))), sys.stdout)`
	cmd := exec.Command(py, "-c", prog, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, isExit := err.(*exec.ExitError); isExit && ee.ExitCode() == 3 {
		return nil, false
	}
	if err != nil {
		t.Fatalf("PyYAML cannot parse %s: %v\n%s", path, err, stderr.String())
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	return v, true
}

// recipeLoadYAML parses a recipe with recipeYAML and, when PyYAML is
// there, checks that a real YAML parser reads the same thing.
func recipeLoadYAML(t *testing.T, rel string) any {
	t.Helper()
	v, err := recipeYAML(recipeRead(t, rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	py, ok := recipePythonYAML(t, filepath.Join(recipeDocs, rel))
	if !ok {
		t.Logf("%s: python3 with PyYAML not found; checked with the built-in subset parser only", rel)
		return v
	}
	if !reflect.DeepEqual(v, py) {
		a, _ := json.MarshalIndent(v, "", " ")
		b, _ := json.MarshalIndent(py, "", " ")
		t.Fatalf("%s: the subset parser and PyYAML disagree:\n%s\nPyYAML:\n%s", rel, a, b)
	}
	t.Logf("%s: PyYAML reads the same structure", rel)
	return v
}

// recipeAt walks a parsed YAML value by keys (string) and indexes (int).
func recipeAt(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			s, _ := v.([]any)
			if k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func recipeStrings(v any) []string {
	var out []string
	for _, x := range recipeAt(v).([]any) {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func recipeSortedStrings(v any) []string {
	s, _ := v.([]any)
	out := recipeStrings(s)
	sort.Strings(out)
	return out
}

func TestRecipesYAMLSubsetParser(t *testing.T) {
	good := "a: 1\nb:\n  - x\n  - name: n\n    v: \"q # not a comment\"\n  -\n    deep: yes # comment\nc: ''\n"
	v, err := recipeYAML(good)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"a": "1", "c": "", "b": []any{"x",
		map[string]any{"name": "n", "v": "q # not a comment"}, map[string]any{"deep": "yes"}}}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("got %#v", v)
	}
	for _, bad := range []string{"a: 1\n  b: 2\n", "a:\n\t- x\n", "a: [1, 2]\n", "a: 1\na: 2\n", "- x\ny: 1\n", "a:\n  - x\n   - y\n"} {
		if _, err := recipeYAML(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestRecipesLinuxKit(t *testing.T) {
	doc := recipeLoadYAML(t, "linuxkit/vipd.yml")
	services, _ := recipeAt(doc, "services").([]any)
	var svc any
	for _, s := range services {
		if recipeAt(s, "name") == "vipd" {
			svc = s
		}
	}
	if svc == nil {
		t.Fatal("no service named vipd")
	}
	if got := recipeAt(svc, "net"); got != "host" {
		t.Errorf("net = %v, want host", got)
	}
	if img, _ := recipeAt(svc, "image").(string); img == "" {
		t.Error("no image")
	}
	if got := recipeSortedStrings(recipeAt(svc, "capabilities")); !slices.Equal(got, []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW"}) {
		t.Errorf("capabilities = %q, want exactly CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW", got)
	}
	// A kernel section would replace the image's whole command line
	// (linuxkit build keeps the last file's cmdline), console= and all.
	if k := recipeAt(doc, "kernel"); k != nil {
		t.Errorf("a kernel section (%v): merged into an image, it replaces the image's kernel command line", k)
	}
	binds, _ := recipeAt(svc, "binds").([]any)
	var command []string
	if c, ok := recipeAt(svc, "command").([]any); ok {
		command = recipeStrings(c)
	}
	if slices.Contains(command, "vip.log=kmsg") {
		// The device the way LinuxKit gives one to a service: its node
		// and its device-cgroup rule, from the devices list.
		var kmsg any
		devices, _ := recipeAt(svc, "devices").([]any)
		for _, d := range devices {
			if recipeAt(d, "path") == "/dev/kmsg" {
				kmsg = d
			}
		}
		if kmsg == nil || recipeAt(kmsg, "type") != "c" || recipeAt(kmsg, "major") != "1" || recipeAt(kmsg, "minor") != "11" {
			t.Errorf("vip.log=kmsg without /dev/kmsg (c 1:11) in devices: %v", devices)
		} else if mode, _ := recipeAt(kmsg, "mode").(string); !regexp.MustCompile(`^0[0-7]{3}$`).MatchString(mode) {
			t.Errorf("/dev/kmsg mode %q: want a quoted octal mode, such as \"0600\" (LinuxKit needs one)", mode)
		}
	}
	if !slices.ContainsFunc(recipeStrings(binds), func(b string) bool { return strings.HasSuffix(b, ":/run/vipd") || strings.HasSuffix(b, ":/run") }) {
		t.Errorf("no bind for /run/vipd (the state file): %q", recipeStrings(binds))
	}
}

func TestRecipesKubeadm(t *testing.T) {
	doc := recipeLoadYAML(t, "kubeadm/vipd.yaml")
	if recipeAt(doc, "kind") != "Pod" || recipeAt(doc, "apiVersion") != "v1" {
		t.Errorf("not a v1 Pod: %v %v", recipeAt(doc, "apiVersion"), recipeAt(doc, "kind"))
	}
	spec := recipeAt(doc, "spec")
	if got := recipeAt(spec, "hostNetwork"); got != "true" {
		t.Errorf("hostNetwork = %v, want true", got)
	}
	// kubeadm's own static pods: system-node-critical, and its value
	// written out (ComponentPod in cmd/kubeadm/app/util/staticpod).
	if got := recipeAt(spec, "priorityClassName"); got != "system-node-critical" {
		t.Errorf("priorityClassName = %v", got)
	}
	if got := recipeAt(spec, "priority"); got != "2000001000" {
		t.Errorf("priority = %v, want 2000001000 (system-node-critical's, as kubeadm writes it)", got)
	}
	containers, _ := recipeAt(spec, "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := containers[0]
	caps := recipeAt(c, "securityContext", "capabilities")
	if got := recipeSortedStrings(recipeAt(caps, "drop")); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop = %q, want [ALL]", got)
	}
	if got := recipeSortedStrings(recipeAt(caps, "add")); !slices.Equal(got, []string{"BPF", "NET_ADMIN", "NET_RAW"}) {
		t.Errorf("capabilities.add = %q, want exactly BPF, NET_ADMIN and NET_RAW", got)
	}
	if got := recipeAt(c, "securityContext", "allowPrivilegeEscalation"); got != "false" {
		t.Errorf("allowPrivilegeEscalation = %v, want false (no_new_privs)", got)
	}

	// every volume: name -> host path and type; every mount: container
	// path -> (host path, type, read-only)
	type mount struct {
		host, kind string
		readOnly   bool
	}
	hostPaths := map[string]mount{}
	vols, _ := recipeAt(spec, "volumes").([]any)
	for _, v := range vols {
		name, _ := recipeAt(v, "name").(string)
		path, _ := recipeAt(v, "hostPath", "path").(string)
		kind, _ := recipeAt(v, "hostPath", "type").(string)
		hostPaths[name] = mount{host: path, kind: kind}
	}
	mounts := map[string]mount{}
	vms, _ := recipeAt(c, "volumeMounts").([]any)
	for _, m := range vms {
		name, _ := recipeAt(m, "name").(string)
		at, _ := recipeAt(m, "mountPath").(string)
		mt := hostPaths[name]
		mt.readOnly = recipeAt(m, "readOnly") == "true"
		mounts[at] = mt
	}
	if m := mounts["/run/vipd"]; m.host != "/run/vipd" {
		t.Errorf("/run/vipd is not the host's /run/vipd: %+v", m)
	}
	args := recipeStrings(recipeAt(c, "args"))
	tls := 0
	tlsFiles := map[string]bool{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "vip.etcd.ca", "vip.etcd.cert", "vip.etcd.key":
			tls++
			tlsFiles[v] = true
			// Each file on its own, read-only, at its host path: a mount
			// of the directory would show the container the etcd CA's key.
			m, ok := mounts[v]
			if !ok || m.host != v || m.kind != "File" || !m.readOnly || !strings.HasPrefix(v, "/etc/kubernetes/pki/etcd/") {
				t.Errorf("%s: %s is not a read-only hostPath of type File of the host's same file (%+v)", a, v, m)
			}
		case "vip.etcd":
			for _, ep := range strings.Split(v, ",") {
				if !strings.HasPrefix(ep, "https://") {
					t.Errorf("%s: etcd endpoint %s is not https", a, ep)
				}
			}
		}
	}
	if tls != 3 {
		t.Errorf("want vip.etcd.ca, vip.etcd.cert and vip.etcd.key in args, got %q", args)
	}
	// Nothing else of the host's PKI: no directory above those files, no
	// private key of a CA.
	for at, m := range mounts {
		if (strings.HasPrefix(m.host, "/etc/kubernetes") || strings.HasPrefix(at, "/etc/kubernetes")) && !(tlsFiles[m.host] && at == m.host) {
			t.Errorf("%s mounts the host's %q (%s), which vipd does not read", at, m.host, m.kind)
		}
	}
}

// recipeEntries are each recipe's main file: the one that says how the
// recipe is tested.
var recipeEntries = []string{
	"busybox/inittab",
	"dracut/90vipd/module-setup.sh",
	"mkinitcpio/install/vipd",
	"u-root.md",
	"linuxkit/vipd.yml",
	"systemd/vipd.service",
	"kubeadm/vipd.yaml",
}

// TestRecipesSayHowTested: each recipe says whether a test boots or runs
// it, or only checks it, in a line starting "Tested:" (after the comment
// mark), so that nobody mistakes a syntax check for a proof.
func TestRecipesSayHowTested(t *testing.T) {
	tested := regexp.MustCompile(`(?m)^(# )?Tested: \S`)
	for _, name := range recipeEntries {
		if !tested.MatchString(recipeRead(t, name)) {
			t.Errorf("%s: no \"Tested:\" line saying whether it is booted in a test or only checked", name)
		}
	}
}

// recipeKnownKeys reads the vip.* keys from the settings table in
// ../../kcmdline.go.
func recipeKnownKeys(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile("../../kcmdline.go")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, m := range regexp.MustCompile(`\{key:\s*"(vip\.[a-z0-9.]+)"`).FindAllStringSubmatch(string(src), -1) {
		keys[m[1]] = true
	}
	for _, k := range []string{"vip.address", "vip.etcd", "vip.log", "vip.config"} {
		if !keys[k] {
			t.Fatalf("kcmdline.go: %s not found in the settings table (found %d keys): has the table's shape changed?", k, len(keys))
		}
	}
	return keys
}

var recipeKeyRe = regexp.MustCompile(`(^|[^A-Za-z0-9_.-])(vip\.[a-z][a-z0-9.]*[a-z0-9])`)

func TestRecipesKeys(t *testing.T) {
	known := recipeKnownKeys(t)
	used := map[string]int{}
	for _, rel := range recipeFiles(t) {
		for i, line := range strings.Split(recipeRead(t, rel), "\n") {
			for _, m := range recipeKeyRe.FindAllStringSubmatch(line, -1) {
				key := m[2]
				used[key]++
				if !known[key] {
					t.Errorf("docs/%s:%d: %s is not a vipd setting", rel, i+1, key)
				}
			}
		}
	}
	if used["vip.address"] == 0 || used["vip.etcd"] == 0 {
		t.Errorf("the recipes name no vip.address or vip.etcd: is the key pattern broken? (%v)", used)
	}
	t.Logf("%d known keys; the recipes use %d of them", len(known), len(used))
}
