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

pub type Body = BoxBody<Bytes, io::Error>;

/// Bytes read per blocking call. Measured at w5 (32 MiB, 4 connections):
/// 128 KiB chunks moved 0.75x nginx's MB/s, 1 MiB chunks 1.19x; the thread-pool
/// round trip and the per-chunk wake-ups were the difference. A slow client
/// holds at most about one chunk in user memory (hyper pulls the next only
/// once the last is written).
const CHUNK: u64 = 1024 * 1024;

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
/// The buffer is not zeroed first: a profile of w5 showed 14% of the server
/// core in `memset` for buffers that `pread` overwrites anyway. `pread`
/// writes into the spare capacity and the length is set to what it wrote.
pub fn read_exact_at(file: &File, want: usize, offset: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    while buf.len() < want {
        let filled = buf.len();
        let at = offset + filled as u64;
        let at = libc::off_t::try_from(at).map_err(io::Error::other)?;
        let spare = &mut buf.spare_capacity_mut()[..want - filled];
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by
        // `buf`; pread writes at most that many bytes and returns how many.
        let n =
            unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            0 => break,
            n if n > 0 => {
                // SAFETY: pread initialized the first `n` bytes of the spare
                // capacity, and n <= spare.len() <= capacity - len.
                unsafe { buf.set_len(filled + n as usize) };
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(buf)
}
