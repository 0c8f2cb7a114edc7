package boot

// docs/busybox/vipd-respawn run for real, with a fake vipd (a sh script
// that counts its runs and exits with a chosen status), under busybox sh
// (what the image runs) and the system's POSIX sh; and busybox's own
// `rc stop` with it, in a PID namespace of its own.
//
//	cd test/boot && go test -count=1 -run TestRecipesRespawn -v .

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// respawnShells are the distinct shells to run the wrapper with: busybox
// sh first, then dash and sh when they are not the same program.
func respawnShells(t *testing.T) [][]string {
	seen := map[string]bool{}
	var out [][]string
	for _, sh := range recipeShells() {
		real, err := filepath.EvalSymlinks(sh[0])
		if err != nil {
			real = sh[0]
		}
		key := real + " " + strings.Join(sh[1:], " ")
		if !seen[key] {
			seen[key] = true
			out = append(out, sh)
		}
	}
	if len(out) == 0 || !strings.HasSuffix(out[0][0], "busybox") {
		t.Fatal("no busybox: install Debian's busybox-static (test/install-deps boot-test)")
	}
	return out
}

// fakeVipd writes a script named vipd in dir that appends its pid to
// dir/runs, prints one line on stderr as vipd does on bad input, and
// exits with status code.
func fakeVipd(t *testing.T, dir string, code int) string {
	t.Helper()
	path := filepath.Join(dir, "vipd")
	script := fmt.Sprintf("#!/bin/sh\necho $$ >>%q\necho 'vipd: vip.ttl=\"0\": fake bad setting' >&2\nexit %d\n", filepath.Join(dir, "runs"), code)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// TestRecipesRespawn: each exit status of vipd, run under vipd-respawn for
// 5 s. Exit 2 (bad configuration) must give vipd's one line and one line of
// the wrapper's, and no second run (the next try is 30 s later); exit 1
// must be restarted, after 1 s and then 2 s (runs at about 0, 1 and 3 s:
// three, where a restart once a second would make five); exit 0 (a SIGTERM
// by hand) once a second.
func TestRecipesRespawn(t *testing.T) {
	wrapper, err := filepath.Abs(filepath.Join(recipeDocs, "busybox", "vipd-respawn"))
	if err != nil {
		t.Fatal(err)
	}
	const window = 5 * time.Second
	cases := []struct {
		code       int
		runs       func(int) bool
		want       string
		wrapperMsg []string // the wrapper's lines, in order
	}{
		{2, func(n int) bool { return n == 1 }, "1", []string{`vipd exited 2 \(bad configuration: .*\); next try in 30s$`}},
		{1, func(n int) bool { return n == 3 }, "3", []string{`vipd exited 1; starting it again in 1s$`, `vipd exited 1; starting it again in 2s$`, `vipd exited 1; starting it again in 4s$`}},
		{0, func(n int) bool { return n >= 4 }, "at least 4", nil},
	}
	var wg sync.WaitGroup
	for _, sh := range respawnShells(t) {
		for _, c := range cases {
			name := fmt.Sprintf("%s/exit%d", filepath.Base(strings.Join(sh, " ")), c.code)
			dir := t.TempDir()
			fake := fakeVipd(t, dir, c.code)
			cmd := exec.Command(sh[0], append(sh[1:], wrapper, fake)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			// Its own process group, so that the wrapper and whatever it
			// runs (the fake, an external sleep) are killed together.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(window)
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				cmd.Wait()
				runs := countLines(filepath.Join(dir, "runs"))
				if !c.runs(runs) {
					t.Errorf("%s: vipd ran %d times in %v, want %s\nstderr:\n%s", name, runs, window, c.want, stderr.String())
				}
				var mine, fakes []string
				for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
					switch {
					case strings.HasPrefix(l, "vipd-respawn: "):
						mine = append(mine, l)
					case strings.HasPrefix(l, "vipd: "):
						fakes = append(fakes, l)
					}
				}
				if len(fakes) != runs {
					t.Errorf("%s: %d lines of vipd's for %d runs:\n%s", name, len(fakes), runs, stderr.String())
				}
				if len(mine) != len(c.wrapperMsg) {
					t.Errorf("%s: the wrapper printed %q, want %d lines matching %q", name, mine, len(c.wrapperMsg), c.wrapperMsg)
				} else {
					for i, re := range c.wrapperMsg {
						if !regexp.MustCompile(re).MatchString(mine[i]) {
							t.Errorf("%s: the wrapper's line %d is %q, want %s", name, i+1, mine[i], re)
						}
					}
				}
				t.Logf("%s: %d runs in %v; the wrapper said %q", name, runs, window, mine)
			}()
		}
	}
	wg.Wait()
}

// TestRecipesRespawnStop: docs/busybox/rc's stop, run by busybox sh in a
// PID namespace of its own (so that its pidof and kill see only the
// processes of the test), with vipd-respawn running a fake vipd that exits
// 0 on SIGTERM, as vipd does. pidof must tell the wrapper from vipd (it
// matches a script by its file name), and stop must end both for good:
// with the wrapper left running, it would start vipd again a second later.
func TestRecipesRespawnStop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace (unshare --pid)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare (util-linux)")
	}
	bb := busyboxPath(t)
	docs, err := filepath.Abs(recipeDocs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "vipd")
	// A fake that runs until SIGTERM, then exits 0; its name is vipd, so
	// pidof vipd finds it.
	script := fmt.Sprintf("#!/bin/sh\necho $$ >>%[1]q/runs\ntrap 'echo $$ >>%[1]q/terms; exit 0' TERM\nwhile :; do sleep 0.1; done\n", dir)
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The wrapper is started through its #! line, as busybox init does, so
	// that its process name is its file name. Everything in the namespace
	// dies with its first process, the busybox sh below.
	inside := `
d=$1 docs=$2 fake=$3
"$docs/busybox/vipd-respawn" "$fake" 2>"$d/wrapper.err" &
i=0
while [ ! -s "$d/runs" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "loop=$(pidof vipd-respawn) vipd=$(pidof vipd)" >"$d/before"
sh "$docs/busybox/rc" stop
sleep 2
echo "loop=$(pidof vipd-respawn) vipd=$(pidof vipd)" >"$d/after"
`
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", bb, "sh", "-c", inside, "sh", dir, docs, fake)
	// busybox sh runs its applets (pidof, kill, sleep) ahead of PATH, as in
	// the image; rc's #!/bin/sh would be the host's sh, so rc runs under
	// busybox sh explicitly.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bb)+":/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unshare: %v\n%s", err, out)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	before, after := read("before"), read("after")
	t.Logf("before rc stop: %s; 2 s after: %s", before, after)
	m := regexp.MustCompile(`^loop=(\d+) vipd=(\d+)$`).FindStringSubmatch(before)
	if m == nil || m[1] == m[2] {
		t.Errorf("before rc stop, pidof found %q: want one vipd-respawn and one vipd, different processes", before)
	}
	if after != "loop= vipd=" {
		t.Errorf("2 s after rc stop, pidof still finds %q", after)
	}
	if runs, terms := read("runs"), read("terms"); strings.Count(runs, "\n") != 0 || runs == "" || terms != runs {
		t.Errorf("vipd ran as %q and got SIGTERM as %q: want one run, ended by rc stop's SIGTERM", runs, terms)
	}
	if e := read("wrapper.err"); e != "" {
		t.Errorf("the wrapper said %q: vipd exited 0, on which it says nothing", e)
	}
	if len(bytes.TrimSpace(out)) > 0 {
		t.Logf("output: %s", out)
	}
}
