// Package scenario holds the whole-cluster tests: real vipd processes in
// network namespaces against a real etcd (the lab, vipd/test/lab), checked
// through the lab's own observer. They need root; as another user each
// test skips in one line.
package scenario

import (
	"os"
	"testing"

	"vipd/test/lab"
)

// TestMain first deletes namespaces that killed runs left behind.
func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }
