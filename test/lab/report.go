package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Report collects the Markdown tables of a benchmark or soak run, printing
// each as it is made.
type Report struct {
	MD strings.Builder
}

// Table prints a Markdown table and keeps it.
func (r *Report) Table(title string, header []string, rows [][]string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%s\n\n| %s |\n|%s\n", title, strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, row := range rows {
		fmt.Fprintf(&sb, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Print(sb.String())
	r.MD.WriteString(sb.String())
}

// Append appends the tables to path under a comment naming the run; a
// relative path is taken from the module root (where make runs), not from
// the test's package directory. It returns the absolute path.
func (r *Report) Append(path, run string) (string, error) {
	if !filepath.IsAbs(path) {
		root, err := ModuleRoot()
		if err != nil {
			return "", err
		}
		path = filepath.Join(root, path)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "\n<!-- %s, %s -->\n%s", run, time.Now().UTC().Format(time.RFC3339), r.MD.String())
	return path, err
}

// Median is the middle value (the upper one of an even count).
func Median(vals []time.Duration) time.Duration {
	if len(vals) == 0 {
		return 0
	}
	v := slices.Clone(vals)
	slices.Sort(v)
	return v[len(v)/2]
}

// RSS is the resident set of the node's daemon process, in bytes.
func RSS(b testing.TB, nd *Node) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", nd.Cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// WriteFile writes content to path or fails the test.
func WriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The health check of the bench's service fault, also used by the reload
// scenarios. ServiceCheckSettle is how long a service must have been up
// before its node counts as healthy again: rise results, one interval
// apart, and a margin for the first one and for the news to reach the
// election.
const (
	ServiceCheckInterval = time.Second
	ServiceCheckFall     = 3
	ServiceCheckRise     = 2
	ServiceCheckSettle   = ServiceCheckRise*ServiceCheckInterval + time.Second
)

// ServiceCheckWords are the vip.check* words of that check.
var ServiceCheckWords = []string{"vip.check=" + CheckURL, "vip.check.interval=" + ServiceCheckInterval.String(),
	fmt.Sprintf("vip.check.fall=%d", ServiceCheckFall), fmt.Sprintf("vip.check.rise=%d", ServiceCheckRise)}
