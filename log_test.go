package main

import (
	"bytes"
	"regexp"
	"testing"
)

func TestLogLines(t *testing.T) {
	var kmsg, plain bytes.Buffer
	k := &logger{w: &kmsg, kmsg: true}
	k.infof("leader -> candidate: %s\n", "lease lost")
	k.warnf("etcd unreachable")
	k.errorf("cannot add")
	// One record per write, with the syslog priority the kernel parses.
	want := "<6>vipd: leader -> candidate: lease lost\n<4>vipd: etcd unreachable\n<3>vipd: cannot add\n"
	if kmsg.String() != want {
		t.Fatalf("kmsg:\n got %q\nwant %q", kmsg.String(), want)
	}

	p := &logger{w: &plain}
	p.warnf("etcd unreachable")
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S* vipd: warning: etcd unreachable\n$`).MatchString(plain.String()) {
		t.Fatalf("stderr line %q", plain.String())
	}
}
