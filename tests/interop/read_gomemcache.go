// Reads every key of a k2mc-mock --expect file back with gomemcache
// (Debian's golang-github-bradfitz-gomemcache-dev): memcache.New(servers...),
// which places keys with its ServerList (crc32 modulo).
// Usage: go run read_gomemcache.go SERVERS EXPECT
// Prints "found=N absent=N missing=N wrong=N"; exit 0 only if all is right.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"
)

func main() {
	mc := memcache.New(strings.Split(os.Args[1], ",")...)
	f, err := os.Open(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	found, absent, missing, wrong := 0, 0, 0, 0
	in := bufio.NewScanner(f)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		p := strings.SplitN(in.Text(), " ", 3)
		it, err := mc.Get(p[1])
		switch {
		case err == memcache.ErrCacheMiss && p[0] == "D":
			absent++
		case err == memcache.ErrCacheMiss:
			missing++
		case err != nil:
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		case p[0] == "S" && string(it.Value) == p[2]:
			found++
		default:
			wrong++
		}
	}
	fmt.Printf("gomemcache: found=%d absent=%d missing=%d wrong=%d\n", found, absent, missing, wrong)
	if found == 0 || missing > 0 || wrong > 0 {
		os.Exit(1)
	}
}
