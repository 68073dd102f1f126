//! Response bodies: empty, in memory, or streamed from an open file as a list
//! of segments (whole file, one range, or the parts of multipart/byteranges).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::tree::Wait;
use crate::fileid::FileId;
use futures_util::stream;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};

/// Every response body. Empty and in-memory bodies (every cached file,
/// every error page) are plain values, so answering one allocates nothing
/// and hyper sees their exact length; only streams are boxed.
#[derive(Debug)]
pub enum Body {
    /// No bytes.
    Empty,
    /// One buffer, handed over whole on the first poll.
    Full(Option<Bytes>),
    /// Parts of one buffer (ranges of a cached file and the multipart
    /// headers between them): the whole buffer is held while any part is,
    /// so it is charged whole ([`Body::charge`]).
    Slices {
        /// The buffer the parts are cut from.
        whole: Bytes,
        /// What is left to send.
        parts: VecDeque<Segment>,
    },
    /// A large in-memory body (charged), handed on in frames of at most
    /// [`CHUNK_HTTP2`], each of which marks the connection's delivery when
    /// it is dropped (written): hyper then hands h2 one frame per window
    /// instead of the whole body on one byte of window, and the send
    /// deadline sees a slow reader's progress frame by frame.
    Framed {
        /// What is left to send (its charge rides on it).
        rest: Bytes,
        /// Where delivery is marked.
        rooms: Arc<Rooms>,
    },
    /// Frames produced as hyper asks for them (file chunks, multipart parts).
    Stream(BoxBody<Bytes, io::Error>),
}

impl Body {
    /// The bytes of memory this body holds until it is sent, for the
    /// budget: `None` when it holds none of its own (empty, streamed from a
    /// file within the budget already).
    pub fn held(&self) -> Option<usize> {
        match self {
            Body::Full(Some(b)) => Some(b.len()),
            Body::Slices { whole, .. } => Some(whole.len()),
            _ => None,
        }
    }

    /// This body with `charge` riding on its bytes: given back when hyper
    /// (or h2's send buffer) has dropped the last of them.
    pub fn charge(self, charge: Charge) -> Body {
        match self {
            Body::Full(Some(b)) if b.len() > CHUNK_HTTP2 => Body::Framed {
                rooms: Arc::clone(&charge.rooms),
                rest: charged(b, charge),
            },
            Body::Full(Some(b)) => Body::Full(Some(charged(b, charge))),
            Body::Slices { whole, parts } => Body::Slices {
                whole: charged(whole, charge),
                parts,
            },
            other => other,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Framed { rest, rooms } if !rest.is_empty() => {
                let part = rest.split_to(rest.len().min(CHUNK_HTTP2));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(Delivering {
                    bytes: part,
                    rooms: Arc::clone(rooms),
                })))))
            }
            Body::Framed { .. } => Poll::Ready(None),
            Body::Slices { whole, parts } => Poll::Ready(parts.pop_front().map(|seg| {
                Ok(Frame::data(match seg {
                    Segment::Bytes(b) => b,
                    Segment::File { offset, len } => {
                        whole.slice(offset as usize..(offset + len) as usize)
                    }
                }))
            })),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Framed { rest, .. } => rest.is_empty(),
            Body::Slices { parts, .. } => parts.is_empty(),
            Body::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Framed { rest, .. } => SizeHint::with_exact(rest.len() as u64),
            Body::Slices { parts, .. } => SizeHint::with_exact(
                parts
                    .iter()
                    .map(|p| match p {
                        Segment::Bytes(b) => b.len() as u64,
                        Segment::File { len, .. } => *len,
                    })
                    .sum(),
            ),
            Body::Stream(s) => s.size_hint(),
        }
    }
}

/// Bytes read per blocking call on HTTP/1: large, because each chunk costs a
/// trip to the blocking pool and a wake-up (smaller chunks measured slower on
/// large files, benches/README.md). hyper pulls the next chunk only once the
/// last is written.
pub const CHUNK_HTTP1: usize = 1024 * 1024;
/// On HTTP/2, where one connection carries many streams and hyper reads a
/// stream's body before the client has granted window to send it: the
/// protocol's default stream window, so a stream holds about what it may send.
pub const CHUNK_HTTP2: usize = 64 * 1024;

/// What one connection's response bodies may hold in user memory, and the
/// process-wide [`Pool`] they also draw from: file chunks are read, and
/// in-memory bodies (a cached file, a compressed variant, a listing) are
/// handed to hyper, only with room in both, and give it back when hyper
/// drops the bytes (written, or the stream reset). A client that stops
/// reading (a zero HTTP/2 window on every stream, a full socket) stops the
/// reads, and its later streams wait for room instead of growing the
/// memory; the send timeout then ends it.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Rooms>);

/// The connection's room, its client's share and the pool's, behind the
/// one `Arc` every [`Charge`] holds: a charge costs one reference count,
/// not one per room.
#[derive(Debug)]
pub struct Rooms {
    conn: Pool,
    /// The client address's share of the pool ([`CLIENT_SHARE`]), shared
    /// by its connections: many connections from one address cannot
    /// together hold the whole pool.
    client: Option<Arc<Pool>>,
    pool: Option<Arc<Pool>>,
    /// When held bytes last made progress (coarse ms): a charge given back
    /// or a frame of a large body written, or the holding began. The send
    /// deadline runs from here while anything is held, so bytes h2 keeps
    /// for a client that grants no window are bounded in time however
    /// busy the connection is otherwise (a HEAD is not a byte delivered).
    delivered_ms: AtomicU64,
    /// Charges waiting for room in the pool: that wait is the server's, not
    /// the client's stall (a wait for the client's own share is its own).
    waiting: AtomicUsize,
}

/// The part of `limits.max_response_memory` one client address may hold
/// (one eighth): nine clients each at their share still leave room.
pub const CLIENT_SHARE: u64 = 8;

/// Each client address's share of the response memory ([`CLIENT_SHARE`]),
/// one for all of its connections while any of them lives (held in
/// `State`).
#[derive(Debug, Default)]
pub struct Shares(
    std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::sync::Weak<Pool>>>,
);

impl Shares {
    /// The share of `ip`, `bytes` large when it is made; its waits are
    /// counted in `waits`.
    pub fn of(
        &self,
        ip: std::net::IpAddr,
        bytes: u64,
        waits: &prometheus::IntCounter,
    ) -> Arc<Pool> {
        let ip = ip.to_canonical();
        let mut shares = self.0.lock().expect("shares lock");
        if let Some(p) = shares.get(&ip).and_then(std::sync::Weak::upgrade) {
            return p;
        }
        // Addresses whose connections have all gone are dropped as the map
        // doubles, so it stays about as large as the addresses connected.
        if shares.len() >= 64 && shares.len().is_power_of_two() {
            shares.retain(|_, w| w.strong_count() > 0);
        }
        let mut p = Pool::new(bytes, None);
        p.waits = Some(waits.clone());
        let p = Arc::new(p);
        shares.insert(ip, Arc::downgrade(&p));
        p
    }
}

/// A frame of a [`Body::Framed`]: marks delivery when written and dropped.
struct Delivering {
    bytes: Bytes,
    rooms: Arc<Rooms>,
}

impl AsRef<[u8]> for Delivering {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        self.rooms
            .delivered_ms
            .store(crate::clock::coarse_now_ms(), Ordering::Relaxed);
    }
}

impl Budget {
    /// A budget of `bytes` (rounded down to KiB, at least one chunk's worth
    /// of the smaller chunk), alone (tests, benchmarks).
    pub fn new(bytes: u64) -> Budget {
        Budget::with_pool(bytes, None, None)
    }

    /// A connection's budget of `bytes` that also draws from `pool`, and
    /// from its client's share when it has one.
    pub fn within(bytes: u64, pool: &Arc<Pool>, client: Option<Arc<Pool>>) -> Budget {
        Budget::with_pool(bytes, Some(Arc::clone(pool)), client)
    }

    fn with_pool(bytes: u64, pool: Option<Arc<Pool>>, client: Option<Arc<Pool>>) -> Budget {
        let bytes = bytes.clamp(CHUNK_HTTP2 as u64, (u32::MAX as u64 >> 4) * 1024);
        Budget(Arc::new(Rooms {
            conn: Pool::new(bytes, None),
            client,
            pool,
            delivered_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
        }))
    }

    /// While the connection's bodies hold bytes: when they last made
    /// progress (coarse ms); `None` when they hold nothing.
    pub fn holding_since(&self) -> Option<u64> {
        let r = &self.0;
        (r.conn.used.load(Ordering::Relaxed) > 0).then(|| r.delivered_ms.load(Ordering::Relaxed))
    }

    /// Whether a charge is waiting for room in the pool (the server's wait,
    /// not the client's).
    pub fn waiting(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed) > 0
    }

    /// `kib` taken in the connection's room: the holding's progress clock
    /// starts if nothing else was held.
    fn began(&self, kib: u32) {
        let rooms = &self.0;
        if rooms.conn.used.load(Ordering::Relaxed) == kib as u64 {
            rooms
                .delivered_ms
                .store(crate::clock::coarse_now_ms(), Ordering::Relaxed);
        }
    }

    /// A charge of `kib` now held in every room.
    fn charge_of(&self, kib: u32) -> Charge {
        let rooms = &self.0;
        self.began(kib);
        Charge {
            rooms: Arc::clone(rooms),
            kib,
            rode: false,
        }
    }

    fn kib(&self) -> u64 {
        self.0.conn.max_kib.load(Ordering::Relaxed)
    }

    /// The chunk to read for `want` bytes: at most `chunk`, and never more
    /// than the whole budget.
    fn chunk(&self, want: u64, chunk: usize) -> usize {
        want.min(chunk as u64).min(self.kib() * 1024) as usize
    }

    /// KiB charged for `bytes`: at least one, at most the whole budget (a
    /// body larger than the budget then holds all of it while it lives).
    fn kib_for(&self, bytes: usize) -> u32 {
        (bytes.div_ceil(1024).max(1) as u64).min(self.kib()) as u32
    }

    /// Room for `bytes` now, if both the connection and the pool have it.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let kib = self.kib_for(bytes);
        let rooms = &self.0;
        if !rooms.conn.try_take(kib) {
            return None;
        }
        if let Some(c) = &rooms.client {
            if !c.try_take(kib) {
                rooms.conn.give_back(kib);
                return None;
            }
        }
        if let Some(p) = &rooms.pool {
            if !p.try_take(kib) {
                if let Some(c) = &rooms.client {
                    c.give_back(kib);
                }
                rooms.conn.give_back(kib);
                return None;
            }
        }
        Some(self.charge_of(kib))
    }

    /// Room for `bytes`, waiting until the connection and then the pool
    /// have it.
    pub async fn charge(&self, bytes: usize) -> Charge {
        let kib = self.kib_for(bytes);
        let rooms = &self.0;
        rooms.conn.take(kib).await;
        self.began(kib);
        // The connection's room is held from here: a charge dropped while
        // it waits for the pool (the request went away) gives it back.
        let mut held = Taken {
            rooms,
            kib,
            client: false,
        };
        // The client's share is the client's own: its bytes are what keeps
        // it full.
        if let Some(c) = &rooms.client {
            c.take(kib).await;
            held.client = true;
        }
        if let Some(p) = &rooms.pool {
            rooms.waiting.fetch_add(1, Ordering::AcqRel);
            let _unwait = Unwait(&rooms.waiting);
            p.take(kib).await;
        }
        std::mem::forget(held);
        self.charge_of(kib)
    }

    /// Whether `charge` covers a body of `bytes`.
    pub fn covers(&self, charge: &Charge, bytes: usize) -> bool {
        charge.kib >= self.kib_for(bytes)
    }
}

impl Default for Budget {
    /// For bodies made outside a connection (tests, benchmarks): 64 MiB.
    fn default() -> Budget {
        Budget::new(64 << 20)
    }
}

/// Room held in a connection's budget and the pool, given back when
/// dropped.
#[derive(Debug)]
pub struct Charge {
    rooms: Arc<Rooms>,
    kib: u32,
    /// It rode on bytes handed on ([`charged`]): given back, they were
    /// delivered (or dropped with their stream). Room taken and given back
    /// unused is no progress.
    rode: bool,
}

/// The rooms of a charge still waiting for the pool's.
struct Taken<'a> {
    rooms: &'a Rooms,
    kib: u32,
    /// The client's share is taken too.
    client: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.rooms.conn.give_back(self.kib);
        if let (true, Some(c)) = (self.client, &self.rooms.client) {
            c.give_back(self.kib);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let r = &self.rooms;
        if self.rode {
            r.delivered_ms
                .store(crate::clock::coarse_now_ms(), Ordering::Relaxed);
        }
        r.conn.give_back(self.kib);
        if let Some(c) = &r.client {
            c.give_back(self.kib);
        }
        if let Some(p) = &r.pool {
            p.give_back(self.kib);
        }
    }
}

/// `bytes` carrying `charge`: hyper (and h2's send buffer) hold the charge
/// exactly as long as they hold any slice of the bytes.
pub fn charged(bytes: Bytes, mut charge: Charge) -> Bytes {
    charge.rode = true;
    Bytes::from_owner(Charged {
        bytes,
        _charge: charge,
    })
}

struct Charged {
    bytes: Bytes,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Room counted in KiB, taken and given back without a lock: one per
/// connection, and the process-wide bound on response memory
/// (`limits.max_response_memory`), which every connection's charges are
/// also taken from, so many connections each within their own budget
/// cannot together exhaust the host. Past it, bodies wait (counted in
/// `ruchy_serve_response_memory_waits_total`); they are not failed, and a
/// client that never reads is still ended by its send timeout, which gives
/// the room back.
///
/// A counter and a wake-up rather than a semaphore: a semaphore's release
/// takes a lock every time, and every response passes here twice.
#[derive(Debug)]
pub struct Pool {
    /// KiB charged now.
    used: AtomicU64,
    /// The bound in KiB; a reload may change the process-wide one.
    max_kib: AtomicU64,
    /// Charges waiting for room: releases wake them only when there are any.
    waiting: AtomicUsize,
    freed: tokio::sync::Notify,
    stats: Option<PoolStats>,
    /// Where a share's waits are counted (the pool's own are in `stats`).
    waits: Option<prometheus::IntCounter>,
}

/// The pool's Prometheus handles (the bytes in use are read at scrape
/// time, [`Pool::report`], not counted on every response).
#[derive(Debug, Clone)]
pub struct PoolStats {
    /// Bytes charged now.
    pub bytes: prometheus::IntGauge,
    /// The bound in bytes.
    pub limit: prometheus::IntGauge,
    /// Charges that had to wait for room.
    pub waits: prometheus::IntCounter,
}

impl Pool {
    /// A pool of `bytes`, reporting into `stats`.
    pub fn new(bytes: u64, stats: Option<PoolStats>) -> Pool {
        let pool = Pool {
            used: AtomicU64::new(0),
            max_kib: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            stats,
            waits: None,
        };
        pool.set_limit(bytes);
        pool
    }

    /// A new bound (a reload): charges already held keep their room; new
    /// ones wait until the total is under it.
    pub fn set_limit(&self, bytes: u64) {
        self.max_kib.store((bytes / 1024).max(1), Ordering::Relaxed);
        if let Some(s) = &self.stats {
            s.limit.set(bytes as i64);
        }
        self.freed.notify_waiters();
    }

    /// Bytes charged now.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed) * 1024
    }

    /// Sets the bytes gauge from the counter (before a scrape).
    pub fn report(&self) {
        if let Some(s) = &self.stats {
            s.bytes.set(self.used_bytes() as i64);
        }
    }

    fn try_take(&self, kib: u32) -> bool {
        // A charge larger than the whole pool may take it alone, or it
        // could never be served.
        let max = self.max_kib.load(Ordering::Relaxed);
        let kib = kib as u64;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                (u + kib <= max || u == 0).then_some(u + kib)
            })
            .is_ok()
    }

    async fn take(&self, kib: u32) {
        if self.try_take(kib) {
            return;
        }
        if let Some(w) = self
            .stats
            .as_ref()
            .map(|s| &s.waits)
            .or(self.waits.as_ref())
        {
            w.inc();
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _unwait = Unwait(&self.waiting);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a release in between is seen.
            freed.as_mut().enable();
            if self.try_take(kib) {
                return;
            }
            freed.await;
        }
    }

    fn give_back(&self, kib: u32) {
        self.used.fetch_sub(kib as u64, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

struct Unwait<'a>(&'a AtomicUsize);

impl Drop for Unwait<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where file-system work ran (`ruchy_serve_file_work_total{ran}`): inline on the
/// runtime's thread from the kernel's caches, or on the blocking pool
/// because it had to wait for the disk ([`Wait`]).
#[derive(Debug, Clone)]
pub struct Ran {
    /// Done inline.
    pub inline: prometheus::IntCounter,
    /// Done on the blocking pool.
    pub pool: prometheus::IntCounter,
}

/// A chunk read from a file, holding its room in the budget until dropped.
struct Held {
    buf: Vec<u8>,
    _room: Charge,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// No body.
pub fn empty() -> Body {
    Body::Empty
}

/// A body held in memory (an empty buffer is no body at all).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    let bytes = bytes.into();
    if bytes.is_empty() {
        Body::Empty
    } else {
        Body::Full(Some(bytes))
    }
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
///
/// Chunks are at most `chunk` bytes ([`CHUNK_HTTP1`], [`CHUNK_HTTP2`]) and
/// each waits for room in `budget` before it is read.
pub fn file(
    file: File,
    segments: Vec<Segment>,
    version: FileId,
    chunk: usize,
    budget: Budget,
    ran: Ran,
) -> Body {
    let state = (Arc::new(file), VecDeque::from(segments));
    let s = stream::unfold(state, move |(file, mut segs)| {
        let budget = budget.clone();
        let ran = ran.clone();
        async move {
            let seg = segs.pop_front()?;
            let item = match seg {
                Segment::Bytes(b) => Ok(Frame::data(b)),
                Segment::File { offset, len } => {
                    let want = budget.chunk(len, chunk);
                    let room = budget.charge(want).await;
                    let read = read_chunk(&file, want, offset, version, &ran).await;
                    match read {
                        Ok(buf) if buf.len() == want => {
                            let n = buf.len() as u64;
                            if n < len {
                                segs.push_front(Segment::File {
                                    offset: offset + n,
                                    len: len - n,
                                });
                            }
                            let mut room = room;
                            // Handed on: given back, it was delivered.
                            room.rode = true;
                            Ok(Frame::data(Bytes::from_owner(Held { buf, _room: room })))
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
        }
    });
    Body::Stream(BodyExt::boxed(StreamBody::new(s)))
}

/// `want` bytes of `file` at `offset`, checked to be still `version`:
/// read inline from the page cache, the rest (if any) on the blocking pool.
async fn read_chunk(
    file: &Arc<File>,
    want: usize,
    offset: u64,
    version: FileId,
    ran: &Ran,
) -> io::Result<Vec<u8>> {
    let same = move |f: &File| match version.same_bytes(&FileId::of(&f.metadata()?)) {
        true => Ok(()),
        false => Err(io::Error::other("file changed while it was being sent")),
    };
    let mut buf = Vec::with_capacity(want);
    match read_more_at(file, &mut buf, want, offset, Wait::Never) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        done => {
            ran.inline.inc();
            return done.and_then(|()| same(file)).map(|()| buf);
        }
    }
    ran.pool.inc();
    let f = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        read_more_at(&f, &mut buf, want, offset, Wait::Disk)?;
        same(&f)?;
        Ok(buf)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// A body streamed from `file` for `req`: chunks sized to the protocol, held
/// within the connection's [`Budget`].
pub fn file_for<B>(
    req: &http::Request<B>,
    open: File,
    segments: Vec<Segment>,
    version: FileId,
    budget: Budget,
    ran: Ran,
) -> Body {
    let chunk = if req.version() == http::Version::HTTP_2 {
        CHUNK_HTTP2
    } else {
        CHUNK_HTTP1
    };
    file(open, segments, version, chunk, budget, ran)
}

/// `segments` of `bytes` (a cached file) and the multipart headers between
/// them, as slices of the one buffer: nothing is copied per response.
pub fn slices(bytes: Bytes, segments: Vec<Segment>) -> Body {
    Body::Slices {
        whole: bytes,
        parts: segments.into(),
    }
}

/// Reads up to `want` bytes at `offset`, fewer only at end of file.
///
/// The buffer is not zeroed first (zeroing showed up in profiles of large
/// files, benches/README.md): `pread` writes into the spare capacity and the
/// length grows by what it wrote. The capacity may exceed `want`, so the
/// bytes past it are cut off at the end.
pub fn read_exact_at(file: &File, want: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(want);
    read_more_at(file, &mut buf, want, offset, Wait::Disk)?;
    Ok(buf)
}

/// Appends to `buf` the bytes of `file` from `offset + buf.len()` until it
/// holds `want` (fewer only at end of file). Under [`Wait::Never`] only
/// what the page cache holds (`RWF_NOWAIT`): `WouldBlock` at the first
/// byte that is not, with what was read kept in `buf`, so the blocking
/// pool goes on from there.
pub fn read_more_at(
    file: &File,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
    wait: Wait,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    buf.reserve(want.saturating_sub(buf.len()));
    while buf.len() < want {
        let at = offset + buf.len() as u64;
        let n = match wait {
            Wait::Disk => rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at)
                .map_err(io::Error::from),
            Wait::Never => {
                let spare = buf.spare_capacity_mut();
                let iov = libc::iovec {
                    iov_base: spare.as_mut_ptr().cast(),
                    iov_len: spare.len(),
                };
                // SAFETY: the one iovec points into `buf`'s spare capacity,
                // which the kernel only writes; the length is then grown by
                // exactly what it wrote.
                let n = unsafe {
                    libc::preadv2(file.as_raw_fd(), &iov, 1, at as i64, libc::RWF_NOWAIT)
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    let n = n as usize;
                    unsafe { buf.set_len(buf.len() + n) };
                    Ok(n)
                }
            }
        };
        match n {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EAGAIN: not in the page cache. EOPNOTSUPP: a file system
            // without RWF_NOWAIT (or a kernel before 4.14: EINVAL).
            Err(e)
                if wait == Wait::Never
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL)
                    ) =>
            {
                return Err(super::tree::would_block());
            }
            Err(e) => return Err(e),
        }
    }
    buf.truncate(want);
    Ok(())
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
