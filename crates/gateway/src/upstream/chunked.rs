//! Decoding a `Transfer-Encoding: chunked` body (RFC 9112 §7.1) in place, from a buffer that
//! fills as bytes arrive. Chunk extensions and trailer fields are read and dropped.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (digits, extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk size was not hexadecimal, overflowed, or its line was too long.
    #[error("invalid chunk size line")]
    BadSize,
    /// A chunk was not followed by CRLF, or a line ended without CR.
    #[error("invalid chunk framing")]
    BadFraming,
    /// The trailer section was larger than allowed.
    #[error("trailer section too large")]
    TrailersTooLarge,
}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes (a chunk, or the part of one that has arrived).
    Data(Bytes),
    /// The buffer holds no complete next element: read more.
    NeedMore,
    /// The last chunk and the trailers were read; what follows in the buffer is not the body's.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size { size: u64, digits: u8 },
    /// After the size: whitespace or extensions up to CR.
    Extension { size: u64 },
    /// CR seen after the size line: LF next.
    SizeLf { size: u64 },
    /// Inside a chunk's data.
    Data { left: u64 },
    /// After a chunk's data: CR next.
    DataCr,
    /// After a chunk's data and CR: LF next.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// CR seen at the end of a trailer line.
    TrailerLf,
    /// CR seen on the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// An incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current size line or of the trailer section, for the limits.
    line: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
        }
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes from the front of `buf` and returns the next piece of body data,
    /// [`Step::NeedMore`] when `buf` runs out first, or [`Step::Done`] at the end of the body
    /// (bytes after the body stay in `buf`).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkedError> {
        loop {
            if let State::Data { left } = self.state {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                return Ok(Step::Data(data));
            }
            if self.state == State::Done {
                return Ok(Step::Done);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Step::NeedMore);
            };
            buf.advance(1);
            self.state = self.next(byte)?;
        }
    }

    /// The state after one framing byte.
    fn next(&mut self, byte: u8) -> Result<State, ChunkedError> {
        let state = match self.state {
            State::Size { size, digits } => {
                self.count_size_line()?;
                match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 15 hex digits hold any size we could ever buffer; more is an attack.
                        if digits >= 15 {
                            return Err(ChunkedError::BadSize);
                        }
                        let digit = u64::from(hex_value(byte));
                        State::Size {
                            size: size * 16 + digit,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkedError::BadSize),
                    b'\r' => State::SizeLf { size },
                    b';' | b' ' | b'\t' => State::Extension { size },
                    _ => return Err(ChunkedError::BadSize),
                }
            }
            State::Extension { size } => {
                self.count_size_line()?;
                match byte {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkedError::BadFraming),
                    _ => State::Extension { size },
                }
            }
            State::SizeLf { size } => {
                if byte != b'\n' {
                    return Err(ChunkedError::BadFraming);
                }
                self.line = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data { left: size }
                }
            }
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size { size: 0, digits: 0 },
            State::DataCr | State::DataLf => return Err(ChunkedError::BadFraming),
            State::TrailerStart => {
                self.count_trailer()?;
                match byte {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkedError::BadFraming),
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLine => {
                self.count_trailer()?;
                match byte {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkedError::BadFraming),
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLf if byte == b'\n' => State::TrailerStart,
            State::EndLf if byte == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => return Err(ChunkedError::BadFraming),
            State::Data { .. } | State::Done => unreachable!("handled by step"),
        };
        Ok(state)
    }

    fn count_size_line(&mut self) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > MAX_SIZE_LINE {
            return Err(ChunkedError::BadSize);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > MAX_TRAILERS {
            return Err(ChunkedError::TrailersTooLarge);
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `wire` to a decoder in pieces of the given sizes; returns the body and what was
    /// left after the end.
    fn decode_in_pieces(wire: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut offset = 0;
        let mut sizes = pieces.iter().copied().cycle();
        loop {
            match decoder.step(&mut buf)? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::Done => {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&wire[offset..]);
                    return Ok((body, rest));
                }
                Step::NeedMore => {
                    if offset == wire.len() {
                        return Err(ChunkedError::BadFraming);
                    }
                    let n = sizes.next().unwrap_or(1).max(1).min(wire.len() - offset);
                    buf.extend_from_slice(&wire[offset..offset + n]);
                    offset += n;
                }
            }
        }
    }

    fn encode(body: &[u8], chunk_sizes: &[usize], ext: bool, trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut sizes = chunk_sizes.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(1).max(1).min(rest.len());
            out.extend_from_slice(format!("{n:X}").as_bytes());
            if ext {
                out.extend_from_slice(b" ; name=\"va;lue\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        if trailers {
            out.extend_from_slice(b"Expires: never\r\nX-Sum: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn decodes_a_simple_body_and_leaves_what_follows() {
        let wire = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
        let (body, rest) = decode_in_pieces(wire, &[1000]).unwrap();
        assert_eq!(body, b"hello, world");
        assert_eq!(rest, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn rejects_bad_framing() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"0\r\n\rX",
        ] {
            assert!(decode_in_pieces(wire, &[3]).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn limits_size_lines_and_trailers() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        long_ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(
            decode_in_pieces(&long_ext, &[64]),
            Err(ChunkedError::BadSize)
        );
        let mut long_trailer = b"0\r\nX: ".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILERS));
        long_trailer.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            decode_in_pieces(&long_trailer, &[64]),
            Err(ChunkedError::TrailersTooLarge)
        );
    }

    proptest! {
        #[test]
        fn any_encoding_in_any_pieces_gives_the_body_back(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            chunk_sizes in proptest::collection::vec(1usize..300, 1..8),
            pieces in proptest::collection::vec(1usize..50, 1..8),
            ext in any::<bool>(),
            trailers in any::<bool>(),
        ) {
            let mut wire = encode(&body, &chunk_sizes, ext, trailers);
            wire.extend_from_slice(b"NEXT");
            let (decoded, rest) = decode_in_pieces(&wire, &pieces).unwrap();
            prop_assert_eq!(decoded, body);
            prop_assert_eq!(rest, b"NEXT".to_vec());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            wire in proptest::collection::vec(any::<u8>(), 0..300),
            pieces in proptest::collection::vec(1usize..20, 1..4),
        ) {
            let _ = decode_in_pieces(&wire, &pieces);
        }
    }
}
