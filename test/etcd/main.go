// Command etcd is the pinned etcd server used by vipd's tests and demo. It is
// built from the Go module proxy because the server module's replace
// directives make `go install go.etcd.io/etcd/server/v3@version` fail.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
