// Package bench holds the benchmark harness of caddy-llm-failover (see
// BENCHMARKS.md): run.sh drives the fake upstream (./fakeupstream), the
// load generator (./load) and a Caddy built with the plugin (./cmd/caddy);
// hotpath_test.go measures one request through an in-process Caddy, with
// and without llm_failover, with -benchmem:
//
//	go test ./bench -run '^$' -bench HotPath -benchmem -benchtime 2000x
package bench
