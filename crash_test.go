package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestCrashIsNotExit2: a Go panic in vipd ends by SIGABRT, not with the Go
// runtime's default exit status 2, which the supervisors in docs/ take for
// bad configuration and do not restart (systemd's RestartPreventExitStatus=2)
// or restart only after 30 s (busybox's vipd-respawn). The test binary runs
// itself twice, panicking in a goroutine: with crashBySignal (which vipd's
// main calls first), and without it, to show that the default is 2.
func TestCrashIsNotExit2(t *testing.T) {
	if mode := os.Getenv("VIPD_TEST_CRASH"); mode != "" {
		// No core file from the deliberate crash.
		syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
		if mode == "signal" {
			crashBySignal()
		}
		go func() { panic("deliberate test crash") }()
		select {}
	}
	for _, mode := range []string{"default", "signal"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashIsNotExit2$", "-test.count=1")
		cmd.Env = append(os.Environ(), "VIPD_TEST_CRASH="+mode)
		cmd.Dir = t.TempDir()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: the child did not fail: %v", mode, err)
		}
		if !strings.Contains(stderr.String(), "panic: deliberate test crash") {
			t.Errorf("%s: no panic traceback on stderr:\n%s", mode, stderr.String())
		}
		ws := ee.Sys().(syscall.WaitStatus)
		switch mode {
		case "default":
			if ws.Signaled() || ws.ExitStatus() != 2 {
				t.Errorf("without crashBySignal: %v, want exit status 2 (the Go runtime's default)", ee)
			}
		case "signal":
			if !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
				t.Errorf("with crashBySignal: %v, want killed by SIGABRT", ee)
			}
		}
		t.Logf("%s: %v", mode, ee)
	}
}
