//! Response bodies: empty, in memory, or streamed from an open file as a list
//! of segments (whole file, one range, or the parts of multipart/byteranges).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::fileid::FileId;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};

/// Every response body: boxed, so empty, in-memory and file bodies share one type.
pub type Body = BoxBody<Bytes, io::Error>;

/// Bytes read per blocking call: large, because each chunk costs a trip to
/// the blocking pool and a wake-up (smaller chunks measured slower on large
/// files, benches/README.md). A slow client holds at most about one chunk in
/// user memory (hyper pulls the next only once the last is written).
const CHUNK: u64 = 1024 * 1024;

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A piece of a streamed body.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes held in memory (multipart headers).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File {
        /// Where the bytes start in the file.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// Streams `segments` out of `file`, which must stay the `version` the
/// headers describe ([`FileId`]). After each chunk is read the file is checked again
/// (one fstat per MiB): if it was truncated, or rewritten in place, the body
/// ends with an error, which makes hyper abort the connection. The client
/// sees a failed transfer, never a short body that looks complete or one that
/// mixes two versions. (A file replaced by rename or deleted is no change to
/// the open file: its old bytes are sent whole.)
pub fn file(file: File, segments: Vec<Segment>, version: FileId) -> Body {
    let state = (Arc::new(file), VecDeque::from(segments));
    let s = stream::unfold(state, move |(file, mut segs)| async move {
        let seg = segs.pop_front()?;
        let item = match seg {
            Segment::Bytes(b) => Ok(Frame::data(b)),
            Segment::File { offset, len } => {
                let want = len.min(CHUNK) as usize;
                let f = Arc::clone(&file);
                let read = tokio::task::spawn_blocking(move || {
                    let buf = read_exact_at(&f, want, offset)?;
                    if FileId::of(&f.metadata()?) != version {
                        return Err(io::Error::other("file changed while it was being sent"));
                    }
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

/// Reads up to `want` bytes at `offset`, fewer only at end of file.
///
/// The buffer is not zeroed first (zeroing showed up in profiles of large
/// files, benches/README.md): `pread` writes into the spare capacity and the
/// length grows by what it wrote. The capacity may exceed `want`, so the
/// bytes past it are cut off at the end.
pub fn read_exact_at(file: &File, want: usize, offset: u64) -> io::Result<Vec<u8>> {
    use rustix::buffer::spare_capacity;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    while buf.len() < want {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(want);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_exact_at_reads_the_window_and_stops_at_end_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(read_exact_at(&f, 1000, 5).unwrap(), &data[5..1005]);
        assert_eq!(
            read_exact_at(&f, 200_000, 100_000).unwrap(),
            &data[100_000..]
        );
        assert_eq!(read_exact_at(&f, 10, 299_995).unwrap(), &data[299_995..]);
        assert!(read_exact_at(&f, 10, 400_000).unwrap().is_empty());
        assert!(read_exact_at(&f, 0, 0).unwrap().is_empty());
    }
}
