//! HTTP/2 control frames from the client, counted as they are read: a
//! connection that sends far more WINDOW_UPDATE, PRIORITY, SETTINGS, PING,
//! RST_STREAM, empty DATA or unknown frames than its requests and the
//! bytes it was sent explain is closed, as nginx closes such floods (h2
//! answers each of them, and never ends the connection for them: 2.5 s of
//! CPU per 5 s per connection was measured). The allowance is
//! [`BASE`] plus [`PER_REQUEST`] per HEADERS frame plus one per
//! [`PER_BYTES`] bytes written to the client; WINDOW_UPDATE frames have
//! an allowance of their own, [`BASE`] plus one per
//! [`PER_WINDOW_UPDATE_BYTES`] written, since a client with a small
//! window returns it after every few hundred bytes it receives (nghttp
//! with a 1 KiB window sends two per KiB, and nginx serves it).

/// Control frames any connection may send.
pub const BASE: u64 = 1024;
/// Control frames each request (HEADERS frame) adds.
pub const PER_REQUEST: u64 = 64;
/// Bytes written to the client per control frame they add.
pub const PER_BYTES: u64 = 4096;
/// Bytes written to the client per WINDOW_UPDATE they allow.
pub const PER_WINDOW_UPDATE_BYTES: u64 = 256;

/// The client preface, which comes before the first frame.
const PREFACE_LEN: u8 = 24;

/// Where the reader is in the client's byte stream.
#[derive(Debug)]
pub struct Frames {
    /// Preface bytes still to pass.
    preface_left: u8,
    /// The frame header read so far.
    head: [u8; 9],
    have: u8,
    /// Payload bytes of the current frame still to pass.
    skip: u32,
    /// Control frames seen, WINDOW_UPDATE aside.
    control: u64,
    /// WINDOW_UPDATE frames seen.
    window_updates: u64,
    /// HEADERS frames seen.
    requests: u64,
}

/// The client sent more control frames than its allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood;

impl Default for Frames {
    fn default() -> Self {
        Frames {
            preface_left: PREFACE_LEN,
            head: [0; 9],
            have: 0,
            skip: 0,
            control: 0,
            window_updates: 0,
            requests: 0,
        }
    }
}

impl Frames {
    /// Reads `bytes` (the next the client sent); `written`: bytes written
    /// to the client so far.
    pub fn feed(&mut self, mut bytes: &[u8], written: u64) -> Result<(), Flood> {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = bytes.len().min(self.preface_left as usize);
                self.preface_left -= n as u8;
                bytes = &bytes[n..];
            } else if self.skip > 0 {
                let n = bytes.len().min(self.skip as usize);
                self.skip -= n as u32;
                bytes = &bytes[n..];
            } else {
                let n = bytes.len().min(9 - self.have as usize);
                self.head[self.have as usize..self.have as usize + n].copy_from_slice(&bytes[..n]);
                self.have += n as u8;
                bytes = &bytes[n..];
                if self.have == 9 {
                    self.have = 0;
                    self.frame();
                }
            }
        }
        let allowance = BASE + PER_REQUEST * self.requests + written / PER_BYTES;
        let updates = BASE + written / PER_WINDOW_UPDATE_BYTES;
        match self.control > allowance || self.window_updates > updates {
            true => Err(Flood),
            false => Ok(()),
        }
    }

    /// A whole frame header has been read.
    fn frame(&mut self) {
        let h = &self.head;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let (kind, flags) = (h[3], h[4]);
        self.skip = len;
        const END_STREAM: u8 = 0x1;
        match kind {
            // HEADERS: a request.
            1 => self.requests += 1,
            // DATA carrying bytes, or ending a stream, is a request's body.
            0 if len > 0 || flags & END_STREAM != 0 => {}
            // CONTINUATION is bounded by the header list size; GOAWAY ends
            // the connection anyway.
            7 | 9 => {}
            8 => self.window_updates += 1,
            // Empty DATA, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE,
            // PING and unknown types: nothing for us to do but answer or
            // ignore them.
            _ => self.control += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_window_update_flood_is_cut_and_requests_and_data_earn_room() {
        let mut f = Frames::default();
        f.feed(PREFACE, 0).unwrap();
        f.feed(&frame(4, 0, 0, &[]), 0).unwrap();
        let wu = frame(8, 0, 0, &1u32.to_be_bytes());
        for _ in 0..BASE {
            f.feed(&wu, 0).unwrap();
        }
        assert_eq!(f.feed(&wu, 0), Err(Flood));
        // Other control frames have their own allowance.
        let mut p = Frames::default();
        p.feed(PREFACE, 0).unwrap();
        let ping = frame(6, 0, 0, &[0; 8]);
        for _ in 0..BASE {
            p.feed(&ping, 0).unwrap();
        }
        assert_eq!(p.feed(&ping, 0), Err(Flood));
        // A small-window download earns its updates: two per KiB sent.
        let mut d = Frames::default();
        d.feed(PREFACE, 0).unwrap();
        for k in 0..20_000u64 {
            d.feed(&wu, 1024 * (k / 2 + 1)).unwrap();
        }
        // The same count after 100 requests and 8 MiB sent is fine.
        let mut g = Frames::default();
        g.feed(PREFACE, 0).unwrap();
        for s in 0..100u32 {
            g.feed(&frame(1, 0x5, 2 * s + 1, b"\x82"), 0).unwrap();
        }
        let ping = frame(6, 0, 0, &[0; 8]);
        for _ in 0..BASE * 4 {
            g.feed(&ping, 8 << 20).unwrap();
        }
    }

    #[test]
    fn frames_split_anywhere_are_read_the_same() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0, 0, 1, &[7; 300]));
        for _ in 0..5 {
            bytes.extend(frame(2, 0, 1, &[0; 5]));
        }
        bytes.extend(frame(0, 1, 1, &[]));
        for step in [1, 2, 7, 9, 10, 333] {
            let mut f = Frames::default();
            for chunk in bytes.chunks(step) {
                f.feed(chunk, 0).unwrap();
            }
            assert_eq!(
                (f.control, f.requests, f.skip, f.have),
                (5, 0, 0, 0),
                "{step}"
            );
        }
    }
}
