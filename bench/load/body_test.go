package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestMakeBody(t *testing.T) {
	for _, size := range []int{0, 200, 2000, 20000, 204800} {
		for _, stream := range []bool{false, true} {
			b := makeBody(size, stream)
			if size > 0 && len(b) != size {
				t.Errorf("size %d: got %d bytes", size, len(b))
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("size %d: not JSON: %v", size, err)
			}
			if m["stream"] != stream || m["model"] != benchModel {
				t.Errorf("size %d: stream=%v model=%v", size, m["stream"], m["model"])
			}
			if !bytes.HasPrefix(b, []byte(`{"model":`)) {
				t.Errorf("size %d: model is not the first key", size)
			}
			want := []byte(`"stream":false}`)
			if stream {
				want = []byte(`"stream":true}`)
			}
			if !bytes.HasSuffix(b, want) {
				t.Errorf("size %d: stream is not the last key", size)
			}
		}
	}
}

func TestDist(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	d := dist(ds)
	if d.P50 != 50 || d.P99 != 99 || d.Min != 1 || d.Max != 100 || d.Mean != 50.5 {
		t.Fatalf("%+v", d)
	}
}
