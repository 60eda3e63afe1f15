package streaminspect

import "bytes"

// LastBoundary returns the end of the last complete event in b: the index
// just past the last empty line (LF LF, CRLF CRLF, LF CRLF or CR CR), or
// -1 when b holds none. b must start at an event boundary (the start of
// the stream, or just past an earlier boundary). A proxy that forwards
// only b[:LastBoundary(b)] and keeps the rest until more arrives can always
// end the stream with an event of its own that every parser reads whole.
//
// It may miss an exotic boundary (a lone CR after LF); that only delays
// forwarding until the next boundary it finds.
func LastBoundary(b []byte) int {
	end := -1
	if i := bytes.LastIndex(b, lflf); i >= 0 {
		end = i + 2
	}
	if bytes.IndexByte(b[max(end, 0):], '\r') < 0 {
		return end // the usual case: LF endings only
	}
	if i := bytes.LastIndex(b, lfcrlf); i >= 0 && i+3 > end {
		end = i + 3 // covers CRLF CRLF too
	}
	if i := bytes.LastIndex(b, crcr); i >= 0 && i+2 > end {
		end = i + 2
	}
	return end
}

var (
	lflf   = []byte("\n\n")
	lfcrlf = []byte("\n\r\n")
	crcr   = []byte("\r\r")
)
