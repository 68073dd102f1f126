//! Response bodies: empty, in memory, or streamed from an open file as a list
//! of segments (whole file, one range, or the parts of multipart/byteranges).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};

pub type Body = BoxBody<Bytes, io::Error>;

/// Bytes read per blocking call: big enough that the thread-pool round trip
/// is amortized, small enough that a slow client holds little memory.
const CHUNK: u64 = 128 * 1024;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A piece of a streamed body.
#[derive(Debug, Clone)]
pub enum Segment {
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File {
        offset: u64,
        len: u64,
    },
}

/// Streams `segments` out of `file`. If the file turns out shorter than
/// promised (truncated after we opened it), the body ends with an error, which
/// makes hyper abort the connection: the client sees a failed transfer, never
/// a short body that looks complete.
pub fn file(file: File, segments: Vec<Segment>) -> Body {
    let state = (Arc::new(file), VecDeque::from(segments));
    let s = stream::unfold(state, |(file, mut segs)| async move {
        let seg = segs.pop_front()?;
        let item = match seg {
            Segment::Bytes(b) => Ok(Frame::data(b)),
            Segment::File { offset, len } => {
                let want = len.min(CHUNK) as usize;
                let f = Arc::clone(&file);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    let mut filled = 0;
                    while filled < want {
                        match f.read_at(&mut buf[filled..], offset + filled as u64) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    buf.truncate(filled);
                    Ok(buf)
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                match read {
                    Ok(buf) if buf.len() == want => {
                        let n = buf.len() as u64;
                        if n < len {
                            segs.push_front(Segment::File {
                                offset: offset + n,
                                len: len - n,
                            });
                        }
                        Ok(Frame::data(Bytes::from(buf)))
                    }
                    Ok(_) => {
                        segs.clear();
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while it was being sent",
                        ))
                    }
                    Err(e) => {
                        segs.clear();
                        Err(e)
                    }
                }
            }
        };
        Some((item, (file, segs)))
    });
    BodyExt::boxed(StreamBody::new(s))
}
