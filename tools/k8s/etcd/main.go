// Command etcd is the upstream etcd server, built from the etcd server module
// at the exact version kube-apiserver was released against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
