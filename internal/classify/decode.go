package classify

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// MaxZstdWindow caps the window a zstd body is decoded with. The decoder
// allocates the window a frame declares, whatever the body's size: a few
// hundred bytes declaring 64 MiB would cost that much per decode. A body
// the cap cannot decode (a single-segment frame declaring more content)
// is not decoded, and its status alone classifies it.
const MaxZstdWindow = 2 << 20

// zstdSource is a zstd body whose first frame declares no larger a window
// than reading limit bytes of it needs: no match reaches further back than
// the output decoded so far, and decoding stops within a block (128 KiB at
// most) of limit. Many encoders declare 8 MiB or more for any input; the
// body itself is not copied.
func zstdSource(body []byte, limit int) io.Reader {
	const magic, singleSegment = 0xFD2FB528, 1 << 5
	if len(body) < 6 || binary.LittleEndian.Uint32(body) != magic || body[4]&singleSegment != 0 {
		return bytes.NewReader(body)
	}
	need := min(uint64(limit)+128<<10, MaxZstdWindow)
	if zstdWindow(body[5]) <= need {
		return bytes.NewReader(body)
	}
	header := [6]byte(body[:6])
	for d := 0; d < 256; d++ { // the smallest window descriptor that holds need
		if zstdWindow(byte(d)) >= need {
			header[5] = byte(d)
			break
		}
	}
	return io.MultiReader(bytes.NewReader(header[:]), bytes.NewReader(body[6:]))
}

// zstdWindow is the window size a frame's Window_Descriptor byte declares
// (RFC 8878, 3.1.1.1.2).
func zstdWindow(d byte) uint64 {
	base := uint64(1) << (10 + d>>3)
	return base + base/8*uint64(d&7)
}

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
		zr, err := zstd.NewReader(zstdSource(body, limit), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxZstdWindow), zstd.WithDecoderMaxMemory(MaxZstdWindow))
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
