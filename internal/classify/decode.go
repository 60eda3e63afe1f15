package classify

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// DecodeBody undoes a Content-Encoding so the classifier can read an error
// body. Clients such as Claude Code send Accept-Encoding: gzip, deflate, br,
// zstd, so a provider may compress its error. At most limit decoded bytes
// are returned; a body cut short (the hold limit, a dropped connection)
// yields what could be decoded.
func DecodeBody(encoding string, body []byte, limit int) ([]byte, error) {
	encoding = strings.ToLower(strings.TrimSpace(encoding))
	if encoding == "" || encoding == "identity" {
		if len(body) > limit {
			body = body[:limit]
		}
		return body, nil
	}
	var r io.Reader
	switch encoding {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("gzip body: %w", err)
		}
		defer zr.Close()
		r = zr
	case "deflate":
		r = newDeflateReader(body)
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd body: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q", encoding)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && len(out) == 0 {
		return nil, fmt.Errorf("%s body: %w", encoding, err)
	}
	return out, nil
}

// newDeflateReader reads "deflate" as RFC 9110 defines it (zlib), falling
// back to raw DEFLATE, which some servers send instead.
func newDeflateReader(body []byte) io.Reader {
	if len(body) >= 2 && body[0]&0x0f == 8 && (uint16(body[0])<<8|uint16(body[1]))%31 == 0 {
		if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
			return zr
		}
	}
	return flate.NewReader(bytes.NewReader(body))
}
