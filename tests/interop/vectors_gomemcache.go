// Placement vectors from gomemcache's ServerList (Debian's
// golang-github-bradfitz-gomemcache-dev): the server each key maps to, as
// PickServer chooses it. Usage: go run vectors_gomemcache.go SERVERS < keys,
// one key a line; prints one server index (into SERVERS) a line. Nothing is
// connected: PickServer only computes. ServerList never drops a server, so
// there is no DOWN argument.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"
)

func main() {
	var ss memcache.ServerList
	if err := ss.SetServers(strings.Split(os.Args[1], ",")...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Each walks the servers in SetServers' order
	index := map[net.Addr]int{}
	ss.Each(func(a net.Addr) error { index[a] = len(index); return nil })
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		addr, err := ss.PickServer(in.Text())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(index[addr])
	}
}
