package classify

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// decErrorBody is a realistic small error body.
const decErrorBody = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CTestDecode"}`

// decLongText returns n bytes of deterministic, compressible but not
// trivially repetitive text, so compressed streams span many blocks.
func decLongText(n int) []byte {
	words := []string{"quota", "limit", "credit", "overloaded", "tokens", "stream", "error", "claude",
		"message", "provider", "balance", "request", "{", "}", "\"", "\\n", "é", "日本"}
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(7) == 0 {
			fmt.Fprintf(&b, "%d", r.Int64())
		}
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// decCompress writes p through the compressor newWriter makes.
func decCompress(t testing.TB, p []byte, newWriter func(io.Writer) (io.WriteCloser, error)) []byte {
	var b bytes.Buffer
	w, err := newWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decGzip(t testing.TB, p []byte) []byte {
	return decCompress(t, p, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriter(w), nil })
}

func decZlib(t testing.TB, p []byte) []byte {
	return decCompress(t, p, func(w io.Writer) (io.WriteCloser, error) { return zlib.NewWriter(w), nil })
}

func decFlate(t testing.TB, p []byte, level int) []byte {
	return decCompress(t, p, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, level) })
}

func decBrotli(t testing.TB, p []byte) []byte {
	return decCompress(t, p, func(w io.Writer) (io.WriteCloser, error) {
		return brotli.NewWriterLevel(w, brotli.DefaultCompression), nil
	})
}

func decZstd(t testing.TB, p []byte) []byte {
	return decCompress(t, p, func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) })
}

type decCodec struct {
	encoding string
	encode   func(testing.TB, []byte) []byte
}

var decCodecs = []decCodec{
	{"gzip", decGzip},
	{"x-gzip", decGzip},
	{"deflate", decZlib}, // RFC 9110 deflate is zlib
	{"deflate", func(t testing.TB, p []byte) []byte { return decFlate(t, p, flate.DefaultCompression) }}, // raw, as some servers send
	{"br", decBrotli},
	{"zstd", decZstd},
	{"identity", func(_ testing.TB, p []byte) []byte { return p }},
	{"", func(_ testing.TB, p []byte) []byte { return p }},
}

func TestDecodeBodyRoundTrip(t *testing.T) {
	t.Parallel()
	long := decLongText(200 << 10)
	for i, c := range decCodecs {
		for _, plain := range [][]byte{[]byte(decErrorBody), long, {}} {
			name := fmt.Sprintf("%d-%s-%d", i, c.encoding, len(plain))
			t.Run(name, func(t *testing.T) {
				enc := c.encode(t, plain)
				if c.encoding != "" && c.encoding != "identity" && len(plain) > 1000 && len(enc) >= len(plain) {
					t.Fatalf("encoder did not compress: %d -> %d", len(plain), len(enc))
				}
				got, err := DecodeBody(c.encoding, enc, 1<<20)
				if err != nil {
					t.Fatalf("DecodeBody(%q): %v", c.encoding, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("DecodeBody(%q) = %d bytes %.60q..., want %d bytes %.60q...", c.encoding, len(got), got, len(plain), plain)
				}
			})
		}
	}
}

func TestDecodeBodyEncodingNameForms(t *testing.T) {
	t.Parallel()
	gz := decGzip(t, []byte(decErrorBody))
	for _, enc := range []string{"GZIP", " gzip ", "Gzip", "X-GZIP", "\tgzip\t"} {
		got, err := DecodeBody(enc, gz, 1<<20)
		if err != nil || string(got) != decErrorBody {
			t.Errorf("DecodeBody(%q) = %q, %v; want the decoded body", enc, got, err)
		}
	}
	br := decBrotli(t, []byte(decErrorBody))
	if got, err := DecodeBody("BR", br, 1<<20); err != nil || string(got) != decErrorBody {
		t.Errorf("DecodeBody(BR) = %q, %v", got, err)
	}
	if got, err := DecodeBody("IDENTITY", []byte("abc"), 1<<20); err != nil || string(got) != "abc" {
		t.Errorf("DecodeBody(IDENTITY) = %q, %v", got, err)
	}
}

func TestDecodeBodyRawDeflateLevels(t *testing.T) {
	t.Parallel()
	// every level of raw DEFLATE must be told apart from zlib
	for _, plain := range [][]byte{[]byte(decErrorBody), decLongText(70 << 10), []byte("x")} {
		for level := flate.HuffmanOnly; level <= flate.BestCompression; level++ {
			enc := decFlate(t, plain, level)
			got, err := DecodeBody("deflate", enc, 1<<20)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("raw deflate level %d, %d bytes: got %d bytes, err %v", level, len(plain), len(got), err)
			}
		}
		for _, level := range []int{zlib.NoCompression, zlib.BestSpeed, zlib.DefaultCompression, zlib.BestCompression} {
			var b bytes.Buffer
			w, _ := zlib.NewWriterLevel(&b, level)
			_, _ = w.Write(plain)
			_ = w.Close()
			got, err := DecodeBody("deflate", b.Bytes(), 1<<20)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("zlib level %d, %d bytes: got %d bytes, err %v", level, len(plain), len(got), err)
			}
		}
	}
}

func TestDecodeBodyUnknownEncoding(t *testing.T) {
	t.Parallel()
	for _, enc := range []string{"compress", "lz4", "gzip, br", "snappy", "*"} {
		got, err := DecodeBody(enc, []byte(decErrorBody), 1<<20)
		if err == nil {
			t.Errorf("DecodeBody(%q) = %q, nil; want an error", enc, got)
			continue
		}
		if !strings.Contains(err.Error(), "unsupported") {
			t.Errorf("DecodeBody(%q) error %q does not say unsupported", enc, err)
		}
		if got != nil {
			t.Errorf("DecodeBody(%q) returned %q with its error", enc, got)
		}
	}
}

func TestDecodeBodyGarbage(t *testing.T) {
	t.Parallel()
	garbage := []byte("this is not compressed at all, it is plain text")
	for _, enc := range []string{"gzip", "br", "zstd", "deflate"} {
		got, err := DecodeBody(enc, garbage, 1<<20)
		if err == nil {
			t.Errorf("DecodeBody(%q, plain text) = %q, nil; want an error", enc, got)
		}
	}
	if _, err := DecodeBody("gzip", nil, 1<<20); err == nil {
		t.Error("DecodeBody(gzip, empty) = nil error; want an error")
	}
}

func TestDecodeBodyTruncatedGzipYieldsPrefix(t *testing.T) {
	t.Parallel()
	plain := decLongText(256 << 10)
	enc := decGzip(t, plain)
	for _, frac := range []float64{0.25, 0.5, 0.9, 0.999} {
		cut := enc[:int(float64(len(enc))*frac)]
		got, err := DecodeBody("gzip", cut, 1<<20)
		if err != nil {
			t.Fatalf("cut at %.1f%%: %v", frac*100, err)
		}
		if len(got) == 0 || len(got) >= len(plain) {
			t.Fatalf("cut at %.1f%%: got %d of %d bytes", frac*100, len(got), len(plain))
		}
		if !bytes.HasPrefix(plain, got) {
			t.Fatalf("cut at %.1f%%: result is not a prefix of the body", frac*100)
		}
		// most of what was sent is decodable
		if min := int(float64(len(plain)) * frac / 2); len(got) < min {
			t.Errorf("cut at %.1f%%: only %d bytes decoded, want at least %d", frac*100, len(got), min)
		}
	}
	// a truncated small error body: still classifiable text
	small := decGzip(t, []byte(decErrorBody+strings.Repeat(" ", 4000)))
	got, err := DecodeBody("gzip", small[:len(small)-8], 1<<20) // trailer cut
	if err != nil || !strings.HasPrefix(string(got), decErrorBody) {
		t.Fatalf("gzip without trailer: %q, %v", got, err)
	}
}

func TestDecodeBodyTruncatedOthersYieldPrefixOrError(t *testing.T) {
	t.Parallel()
	plain := decLongText(128 << 10)
	for i, c := range decCodecs {
		enc := c.encode(t, plain)
		for _, frac := range []float64{0, 0.1, 0.5, 0.95} {
			cut := enc[:int(float64(len(enc))*frac)]
			got, err := DecodeBody(c.encoding, cut, 1<<20)
			if err != nil {
				if got != nil {
					t.Errorf("%d %s cut %.0f%%: data %d bytes returned with error %v", i, c.encoding, frac*100, len(got), err)
				}
				continue
			}
			if !bytes.HasPrefix(plain, got) {
				t.Errorf("%d %s cut %.0f%%: %d bytes that are not a prefix", i, c.encoding, frac*100, len(got))
			}
		}
	}
}

func TestDecodeBodyLimit(t *testing.T) {
	t.Parallel()
	plain := decLongText(100 << 10)
	for i, c := range decCodecs {
		enc := c.encode(t, plain)
		for _, limit := range []int{0, 1, 100, 64 << 10, len(plain) - 1, len(plain), len(plain) + 1} {
			got, err := DecodeBody(c.encoding, enc, limit)
			if err != nil {
				t.Errorf("%d %q limit %d: %v", i, c.encoding, limit, err)
				continue
			}
			want := min(limit, len(plain))
			if len(got) != want {
				t.Errorf("%d %q limit %d: got %d bytes, want %d", i, c.encoding, limit, len(got), want)
			}
			if !bytes.Equal(got, plain[:len(got)]) {
				t.Errorf("%d %q limit %d: not a prefix of the body", i, c.encoding, limit)
			}
		}
	}
}

// A compression bomb is bounded by the limit, not by the decoded size.
func TestDecodeBodyBombIsBounded(t *testing.T) {
	t.Parallel()
	zeros := make([]byte, 4<<20)
	for _, c := range []decCodec{{"gzip", decGzip}, {"br", decBrotli}, {"zstd", decZstd}, {"deflate", decZlib}} {
		enc := c.encode(t, zeros)
		got, err := DecodeBody(c.encoding, enc, 64<<10)
		if err != nil || len(got) != 64<<10 {
			t.Errorf("%s bomb: got %d bytes, err %v; want 64KiB", c.encoding, len(got), err)
		}
	}
}

// bigWindowZstd is a small zstd error body whose frame declares a 64 MiB
// window, in two raw blocks: a decoder that honours the declaration
// allocates the window (twice over) for the history between blocks.
func bigWindowZstd(t testing.TB) []byte {
	text := []byte(`{"type":"error","error":{"type":"overloaded_error","message":"` + string(decLongText(240)) + `"}}`)
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3} // magic; no content size; window 2^(10+16)
	block := func(p []byte, last bool) {
		h := uint32(len(p))<<3 | map[bool]uint32{true: 1}[last] // raw block
		b = append(b, byte(h), byte(h>>8), byte(h>>16))
		b = append(b, p...)
	}
	block(text[:100], false)
	block(text[100:], true)
	return b
}

// bigContentZstd is bigWindowZstd as a single-segment frame declaring
// 64 MiB of content, which its window must hold.
func bigContentZstd(t testing.TB) []byte {
	b := bigWindowZstd(t)
	return append([]byte{0x28, 0xb5, 0x2f, 0xfd, 2<<6 | 1<<5, 0, 0, 0, 4}, b[6:]...)
}

// A small body declaring a huge window is decoded with the window reading
// it needs, 32 at a time in little memory; one whose declared content
// needs a window past the cap is not decoded (its status alone classifies
// it).
func TestZstdWindowCapped(t *testing.T) {
	body := bigWindowZstd(t)
	if out, err := DecodeBody("zstd", body, MaxBody); err != nil || !strings.Contains(string(out), "overloaded_error") {
		t.Fatalf("a %d-byte body declaring a 64 MiB window: %q, %v", len(body), out, err)
	}
	if out, err := DecodeBody("zstd", bigContentZstd(t), MaxBody); err == nil {
		t.Fatalf("a single-segment frame declaring 64 MiB was decoded: %q", out)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = DecodeBody("zstd", body, 1<<20)
			_, _ = DecodeBody("zstd", bigContentZstd(t), 1<<20)
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("32 decodes each of a %d-byte body declaring a 64 MiB window and one declaring 64 MiB of content allocated %.1f MiB",
		len(body), float64(allocated)/(1<<20))
	if allocated > 96<<20 {
		t.Fatalf("64 decodes allocated %d bytes, want at most 96 MiB (about 3 MiB per decode)", allocated)
	}

	// an ordinary compressed error body still decodes
	small := decZstd(t, []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`))
	if out, err := DecodeBody("zstd", small, MaxBody); err != nil || !strings.Contains(string(out), "rate_limit_error") {
		t.Fatalf("an ordinary zstd body: %q, %v", out, err)
	}
}

// Decoding any zstd bytes stays within the limit and never needs a window
// past the cap.
func FuzzDecodeZstd(f *testing.F) {
	f.Add(decZstd(f, []byte(decErrorBody)))
	f.Add(bigWindowZstd(f))
	f.Add(bigContentZstd(f))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, _ := DecodeBody("zstd", body, MaxBody)
		if len(out) > MaxBody {
			t.Fatalf("decoded %d bytes past the limit %d", len(out), MaxBody)
		}
	})
}
