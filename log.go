package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// logger writes one line per event. Early in boot there is no syslog, so
// vipd can write to /dev/kmsg, where `dmesg` and the console show it.
type logger struct {
	mu   sync.Mutex
	w    io.Writer
	kmsg bool
}

// kmsg priorities (syslog levels).
const (
	levelErr  = 3
	levelWarn = 4
	levelInfo = 6
)

// openLogger picks the destination for vip.log: "stderr", "kmsg" or
// "auto" (see kmsgByDefault), with stderr the process's standard error.
func openLogger(mode string, stderr *os.File) (*logger, error) {
	if mode == "stderr" || (mode == "auto" && !kmsgByDefault(stderr)) {
		return &logger{w: stderr}, nil
	}
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		if mode == "kmsg" {
			return nil, fmt.Errorf("cannot open /dev/kmsg: %w", err)
		}
		return &logger{w: stderr}, nil
	}
	return &logger{w: f, kmsg: true}, nil
}

// Device numbers fixed by Linux (Documentation/admin-guide/devices.txt),
// so that no /dev is needed to recognise them early in boot.
var (
	devConsole = unix.Mkdev(5, 1)
	devNull    = unix.Mkdev(1, 3)
)

// kmsgByDefault says whether vip.log=auto writes to /dev/kmsg: only when
// nobody would read stderr, as under a minimal init (stderr is
// /dev/console, where the kernel's log shows too), or when stderr is
// /dev/null or closed. A file, a pipe, a socket (the journal's) or a
// terminal someone runs vipd in is read by whoever set it up: stderr.
func kmsgByDefault(stderr *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(stderr.Fd()), &st); err != nil {
		return true // closed
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && (st.Rdev == devConsole || st.Rdev == devNull)
}

func (l *logger) printf(level int, format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kmsg {
		// Each write is one kernel log record.
		fmt.Fprintf(l.w, "<%d>vipd: %s\n", level, msg)
		return
	}
	tag := map[int]string{levelErr: "error: ", levelWarn: "warning: ", levelInfo: ""}[level]
	fmt.Fprintf(l.w, "%s vipd: %s%s\n", time.Now().Format("2006-01-02T15:04:05.000Z07:00"), tag, msg)
}

func (l *logger) errorf(format string, args ...any) { l.printf(levelErr, format, args...) }
func (l *logger) warnf(format string, args ...any)  { l.printf(levelWarn, format, args...) }
func (l *logger) infof(format string, args ...any)  { l.printf(levelInfo, format, args...) }

// fail reports a failure before the daemon loop on stderr, where the
// caller (a script, -check, an init that captures it) sees it whatever
// vip.log says, and also in the log when that is /dev/kmsg, the console
// of a minimal init.
func (l *logger) fail(stderr io.Writer, format string, args ...any) {
	fmt.Fprintf(stderr, "vipd: "+format+"\n", args...)
	if l != nil && l.kmsg {
		l.errorf(format, args...)
	}
}
