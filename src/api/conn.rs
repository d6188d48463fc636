//! One client connection, spoken as HTTP/1.1 by hand on `httparse`: request heads read against a
//! deadline, bodies framed by `Content-Length` or chunked and capped, keep-alive and pipelining, the
//! `100 Continue` interim answer, and every response written with a `Content-Length` and a deadline.
//!
//! Knows nothing of routes, tokens or the backend: each request goes to [`App::respond`], and its
//! [`ApiReply`] comes back to be written. Knows nothing of other connections either: the server
//! hands in a [`Tracker`] that records which [`Phase`] the connection is in (so the server can
//! close idle or stalled ones to admit new clients) and says when to stop.
//!
//! Time limits, all `server.readTimeout` (`limit` below), so that one client can never hold a
//! connection for long without making progress:
//! - no first byte of a request within `limit` of the previous response (or the accept): closed;
//! - the whole head (request line + headers) not received within `limit` of its first byte: 408,
//!   closed — a client trickling one byte at a time is cut off, whatever its pace;
//! - the body not received within `limit` of its start: 400, closed;
//! - a response not taken by the client within `limit`: closed.

use super::app::App;
use super::reply::{ApiReply, ErrorCode, ReplyBody};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request line and headers together; a longer head is answered 431.
pub(super) const MAX_HEAD: usize = 8 * 1024;
/// Header fields in one head; more is answered 431.
pub(super) const MAX_HEADERS: usize = 100;
/// A chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;
/// Bytes read from the socket at a time (and the most buffered beyond a head).
const READ_CHUNK: usize = 8 * 1024;
/// After an error answer, how long and how much of the rest of the request we read and discard
/// before closing, so that the close is a FIN the client can read our answer before, not a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Where a connection is, in the order the server prefers to close them when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Phase {
    /// Answered with `Connection: close`, discarding what the client still sends.
    Closing,
    /// Waiting for the first byte of a request (a fresh or a kept-alive connection).
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// A complete head: reading the body, handling, or writing the response. Never closed early.
    Busy,
}

/// What a connection reports to the server that owns it.
pub(super) trait Tracker {
    /// Records the phase the connection enters. False when it must end now: the server closed it
    /// to make room, or the server is stopping and the connection is not in the middle of a request.
    fn enter(&self, phase: Phase) -> bool;
    /// The server is stopping: finish the current request, then close.
    fn stopping(&self) -> bool;
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    Empty,
    Length(u64),
    Chunked,
}

/// What the transport knows about a request once its head is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub method: String,
    /// The path alone (still percent-encoded); `/` for an absolute-form target without one.
    pub path: String,
    /// The part after `?`, if any.
    pub query: Option<String>,
    /// The first `Authorization` header value.
    pub authorization: Option<Vec<u8>>,
    pub framing: Framing,
    /// Close after the answer: `Connection: close`, or HTTP/1.0.
    pub close: bool,
    /// `Expect: 100-continue` (HTTP/1.1): the client waits for `100 Continue` before the body.
    pub expect_continue: bool,
}

/// A request the transport refuses before any handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reject {
    pub status: u16,
    pub msg: String,
}

impl Reject {
    fn new(status: u16, msg: impl Into<String>) -> Reject {
        Reject {
            status,
            msg: msg.into(),
        }
    }

    pub(super) fn reply(&self) -> ApiReply {
        ApiReply::error(ErrorCode::BadRequest, self.msg.clone()).with_status(self.status)
    }
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is incomplete (and still
/// under [`MAX_HEAD`]), else the head and how many bytes it took. Pure.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Reject> {
    let too_large = || {
        Reject::new(
            431,
            format!("the request line and headers are larger than {MAX_HEAD} bytes"),
        )
    };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(
                431,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => return Err(Reject::new(400, format!("malformed request: {e}"))),
    };
    if len > MAX_HEAD {
        return Err(too_large());
    }
    // A complete parse sets all three.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject::new(400, "malformed request line"));
    };
    let http10 = minor == 0;
    let Some((path, query)) = split_target(target) else {
        return Err(Reject::new(
            400,
            format!("request target {target:?} is not a path"),
        ));
    };

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut hosts = 0;
    let mut close = http10;
    let mut expect_continue = false;
    let mut authorization = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A repeated field, or a list, is accepted only when every value agrees.
            for v in h.value.split(|&b| b == b',') {
                let n = parse_length(v).ok_or_else(|| {
                    Reject::new(
                        400,
                        format!(
                            "Content-Length {:?} is not a number",
                            String::from_utf8_lossy(h.value)
                        ),
                    )
                })?;
                if length.is_some_and(|l| l != n) {
                    return Err(Reject::new(400, "conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in tokens(h.value) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(Reject::new(
                        501,
                        format!(
                            "Transfer-Encoding {:?} is not supported: send chunked or Content-Length",
                            String::from_utf8_lossy(h.value)
                        ),
                    ));
                }
                chunked = true;
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            if tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close")) {
                close = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            // Other expectations are ignored, as RFC 9110 §10.1.1 allows.
            expect_continue |=
                !http10 && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("authorization") && authorization.is_none() {
            authorization = Some(h.value.to_vec());
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Reject::new(
            400,
            "the request needs exactly one Host header",
        ));
    }
    // Both framings at once is how requests are smuggled past proxies (RFC 9112 §6.1).
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(Reject::new(
                400,
                "Content-Length and Transfer-Encoding together",
            ))
        }
        (true, None) if http10 => {
            return Err(Reject::new(400, "Transfer-Encoding in an HTTP/1.0 request"))
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Empty,
    };
    let head = Head {
        method: method.to_string(),
        path,
        query,
        authorization,
        framing,
        close,
        expect_continue: expect_continue && framing != Framing::Empty,
    };
    Ok(Some((head, len)))
}

/// Origin form (`/p?q`), absolute form (`http://host/p?q`, which servers must accept) or `*`.
fn split_target(target: &str) -> Option<(String, Option<String>)> {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if target.starts_with('/') || target == "*" {
        target
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        let after = &target[target.find("//")? + 2..];
        match after.find(['/', '?']) {
            Some(i) if after[i..].starts_with('/') => &after[i..],
            Some(i) => return Some(("/".into(), Some(after[i + 1..].to_string()))),
            None => "/",
        }
    } else {
        return None;
    };
    Some(match rest.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (rest.to_string(), None),
    })
}

/// Digits only (no sign, no spaces inside), at most 19 of them: always fits a u64.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated, trimmed, non-empty members of a header value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A chunk-size line without its line ending: hex digits, then optional `;extensions` (ignored).
/// Pure.
pub(super) fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = size.trim_ascii();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "chunk size {:?} is not a hexadecimal number",
            String::from_utf8_lossy(line)
        ));
    }
    let text = std::str::from_utf8(size).map_err(|e| e.to_string())?;
    u64::from_str_radix(text, 16).map_err(|e| e.to_string())
}

/// What the handler did with the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyState {
    /// Read to its end.
    Consumed,
    /// Not touched: drained (at most `max_body` bytes) so the connection can be reused.
    Unread,
    /// Too large, broken, or unknown after a panic: close without reading more.
    Abandon,
}

/// Why a read from the client ended early.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The deadline passed.
    Timeout(Duration),
    /// The client closed the connection.
    Closed,
    /// The bytes do not follow the chunked coding.
    Malformed(String),
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout(limit) => write!(f, "not received within {limit:?}"),
            ReadError::Closed => f.write_str("the client closed the connection"),
            ReadError::Malformed(msg) => write!(f, "bad chunked encoding: {msg}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Serves one connection until it closes. Returns when the client leaves, breaks a limit, asks to
/// close, or the tracker says to stop.
///
/// `stream` is shared with the server, which may shut it down from another thread.
pub(super) fn serve(stream: Arc<TcpStream>, limit: Duration, app: &App, tracker: &dyn Tracker) {
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(2 * READ_CHUNK),
        start: 0,
        limit,
    };
    loop {
        if !tracker.enter(Phase::Idle) {
            return;
        }
        // The first byte of the next request (it may already be here, pipelined).
        if conn.pending().is_empty() && conn.fill(Instant::now() + limit, READ_CHUNK).is_err() {
            return;
        }
        if !tracker.enter(Phase::Head) {
            return;
        }
        let head = match conn.read_head(Instant::now() + limit) {
            Ok(head) => head,
            Err(HeadError::Reject(reject)) => {
                log::debug!(component = "api", status = reject.status; "refused: {}", reject.msg);
                let _ = conn.write_reply(reject.reply(), true, false);
                conn.linger(tracker);
                return;
            }
            Err(HeadError::Read(ReadError::Timeout(_))) => {
                let msg = format!("the request head did not arrive within {limit:?}");
                log::debug!(component = "api", status = 408; "dropped a slow client: {msg}");
                let reply = ApiReply::error(ErrorCode::BadRequest, msg).with_status(408);
                let _ = conn.write_reply(reply, true, false);
                return;
            }
            Err(HeadError::Read(_)) => return,
        };
        if !tracker.enter(Phase::Busy) {
            return;
        }
        let mut body = Body::new(&mut conn, &head);
        let (reply, state) = app.respond(&head, &mut body);
        let clean = body.settle(state, app.max_body());
        let close = head.close || !clean || tracker.stopping();
        let head_only = head.method == "HEAD";
        if conn.write_reply(reply, close, head_only).is_err() {
            return;
        }
        if close {
            if !clean {
                conn.linger(tracker);
            }
            return;
        }
    }
}

enum HeadError {
    Reject(Reject),
    Read(ReadError),
}

struct Conn {
    stream: Arc<TcpStream>,
    /// Received bytes; those from `start` on are not used yet (the rest of a head, a body, or
    /// pipelined requests). Consuming moves `start`, so many small chunks cost no copying.
    buf: Vec<u8>,
    start: usize,
    limit: Duration,
}

impl Conn {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads at most `max` more bytes into `buf`, waiting no later than `deadline`.
    fn fill(&mut self, deadline: Instant, max: usize) -> Result<usize, ReadError> {
        if self.start > 0 && self.buf.len() + max > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + max.max(1), 0);
        let got = read_by(&self.stream, &mut self.buf[start..], deadline, self.limit);
        self.buf.truncate(start + *got.as_ref().unwrap_or(&0));
        got
    }

    fn read_head(&mut self, deadline: Instant) -> Result<Head, HeadError> {
        loop {
            if let Some((head, len)) = parse_head(self.pending()).map_err(HeadError::Reject)? {
                self.consume(len);
                return Ok(head);
            }
            // Never buffer more than the cap while looking for the end of the head.
            let room = MAX_HEAD.saturating_sub(self.pending().len());
            self.fill(deadline, room).map_err(HeadError::Read)?;
        }
    }

    /// One line (without its CRLF or LF), at most `max` bytes.
    fn read_line(&mut self, deadline: Instant, max: usize) -> Result<Vec<u8>, ReadError> {
        let mut searched = 0;
        loop {
            let pending = self.pending();
            if let Some(i) = pending[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                let line = pending[..end]
                    .strip_suffix(b"\r")
                    .unwrap_or(&pending[..end]);
                let line = line.to_vec();
                self.consume(end + 1);
                return Ok(line);
            }
            searched = pending.len();
            if searched > max {
                return Err(ReadError::Malformed(format!(
                    "a line longer than {max} bytes"
                )));
            }
            self.fill(deadline, READ_CHUNK)?;
        }
    }

    fn write_reply(&mut self, reply: ApiReply, close: bool, head_only: bool) -> io::Result<()> {
        let deadline = Instant::now() + self.limit;
        let (head, body) = encode_parts(&reply, close);
        if head_only || body.is_empty() {
            return write_by(&self.stream, &head, deadline);
        }
        if body.len() <= 16 * 1024 {
            // Small answers go out in one write (one segment).
            let mut all = head;
            all.extend_from_slice(&body);
            return write_by(&self.stream, &all, deadline);
        }
        write_by(&self.stream, &head, deadline)?;
        write_by(&self.stream, &body, deadline)
    }

    /// Closes politely after an answer sent before the request was read to its end: stop sending,
    /// then read and drop what the client still sends, briefly, so our answer is not lost to a
    /// reset. The server may close the connection earlier to make room ([`Phase::Closing`]).
    fn linger(&mut self, tracker: &dyn Tracker) {
        if !tracker.enter(Phase::Closing) {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + self.limit.min(LINGER_TIME);
        let mut scratch = [0u8; READ_CHUNK];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match read_by(&self.stream, &mut scratch, deadline, self.limit) {
                Ok(n) => dropped += n,
                Err(_) => return,
            }
        }
    }
}

/// One `read` that returns by `deadline`: the socket timeout is set to the time left each time.
fn read_by(
    mut stream: &TcpStream,
    into: &mut [u8],
    deadline: Instant,
    limit: Duration,
) -> Result<usize, ReadError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout(limit));
        }
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        match stream.read(into) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The timeout surfaces as either kind depending on the platform.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Writes everything by `deadline`, however slowly the client reads.
fn write_by(mut stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    /// Bytes of the body (or of the current chunk) still to come: `Body::left`.
    Data,
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: the next chunk-size line.
    ChunkSize,
    /// Chunked: trailer fields up to the empty line.
    Trailers,
    Done,
}

/// The body of the current request, read on demand (and only then is `100 Continue` sent).
pub(super) struct Body<'c> {
    conn: &'c mut Conn,
    framing: Framing,
    pos: Pos,
    left: u64,
    /// Body bytes delivered so far (decoded, for chunked).
    taken: u64,
    continue_pending: bool,
    deadline: Option<Instant>,
}

impl<'c> Body<'c> {
    fn new(conn: &'c mut Conn, head: &Head) -> Body<'c> {
        let (pos, left) = match head.framing {
            Framing::Empty | Framing::Length(0) => (Pos::Done, 0),
            Framing::Length(n) => (Pos::Data, n),
            Framing::Chunked => (Pos::ChunkSize, 0),
        };
        Body {
            conn,
            framing: head.framing,
            pos,
            left,
            taken: 0,
            continue_pending: head.expect_continue && pos != Pos::Done,
            deadline: None,
        }
    }

    /// The length the client declared (`Content-Length`), only ever compared, never allocated.
    pub(super) fn declared_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Empty | Framing::Chunked => None,
        }
    }

    /// The whole body when it is at most `max` bytes; `Ok(None)` when it is longer (reading stops
    /// there). The buffer grows with what arrives, never with what the client declared.
    pub(super) fn read_capped(&mut self, max: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let mut out = Vec::new();
        let complete = self.pump(max as u64, &mut |bytes| out.extend_from_slice(bytes))?;
        Ok(complete.then_some(out))
    }

    /// After the handler: true when the request was read to its end, so the connection can serve
    /// the next one.
    fn settle(mut self, state: BodyState, max_body: usize) -> bool {
        match state {
            BodyState::Consumed => self.pos == Pos::Done,
            BodyState::Abandon => false,
            BodyState::Unread if self.pos == Pos::Done => true,
            // The client waits for our word before sending the body; it has the answer instead.
            BodyState::Unread if self.continue_pending => false,
            BodyState::Unread => matches!(self.pump(max_body as u64, &mut |_| {}), Ok(true)),
        }
    }

    /// Feeds body bytes to `sink` until the end (`Ok(true)`) or until more than `max` bytes in all
    /// would be needed (`Ok(false)`, and what is over is never read).
    fn pump(&mut self, max: u64, sink: &mut dyn FnMut(&[u8])) -> Result<bool, ReadError> {
        let limit = self.conn.limit;
        if self.continue_pending {
            self.continue_pending = false;
            write_by(
                &self.conn.stream,
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Instant::now() + limit,
            )
            .map_err(ReadError::Io)?;
        }
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + limit);
        loop {
            match self.pos {
                Pos::Done => return Ok(true),
                Pos::Data if self.left == 0 => {
                    self.pos = match self.framing {
                        Framing::Chunked => Pos::ChunkEnd,
                        Framing::Empty | Framing::Length(_) => Pos::Done,
                    };
                }
                Pos::Data => {
                    if self.taken.saturating_add(self.left) > max {
                        return Ok(false);
                    }
                    if self.conn.pending().is_empty() {
                        let want = self.left.min(READ_CHUNK as u64) as usize;
                        self.conn.fill(deadline, want)?;
                    }
                    let pending = self.conn.pending();
                    let n =
                        usize::try_from(self.left).map_or(pending.len(), |l| l.min(pending.len()));
                    sink(&pending[..n]);
                    self.conn.consume(n);
                    self.left -= n as u64;
                    self.taken += n as u64;
                }
                Pos::ChunkEnd => {
                    let line = self.conn.read_line(deadline, 2)?;
                    if !line.is_empty() {
                        return Err(ReadError::Malformed("no CRLF after a chunk".into()));
                    }
                    self.pos = Pos::ChunkSize;
                }
                Pos::ChunkSize => {
                    let line = self.conn.read_line(deadline, MAX_CHUNK_LINE)?;
                    let size = parse_chunk_size(&line).map_err(ReadError::Malformed)?;
                    if size == 0 {
                        self.pos = Pos::Trailers;
                    } else {
                        self.left = size;
                        self.pos = Pos::Data;
                    }
                }
                Pos::Trailers => {
                    // Trailer fields are read and ignored; together they count against the head cap.
                    let mut total = 0;
                    loop {
                        let line = self.conn.read_line(deadline, MAX_HEAD)?;
                        if line.is_empty() {
                            break;
                        }
                        total += line.len();
                        if total > MAX_HEAD {
                            return Err(ReadError::Malformed("trailer fields too large".into()));
                        }
                    }
                    self.pos = Pos::Done;
                }
            }
        }
    }
}

/// The status line's reason phrase (clients ignore it; people reading a capture do not).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Headers the transport writes itself; a handler's copy would break the framing.
const OWN_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "keep-alive",
];

/// The bytes of a response: always a `Content-Length`, `Connection: close` when closing; for a
/// `HEAD` request the headers alone. Pure.
pub(super) fn encode(reply: ApiReply, close: bool, head_only: bool) -> Vec<u8> {
    let (mut out, body) = encode_parts(&reply, close);
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

/// The head of a response, and its body (borrowed when it is already encoded, so a large shared
/// body is written as it is, not copied behind the head).
pub(super) fn encode_parts(reply: &ApiReply, close: bool) -> (Vec<u8>, std::borrow::Cow<'_, [u8]>) {
    use std::borrow::Cow;
    // 1xx would be an interim answer and the client would wait for another.
    let status = if (200..=999).contains(&reply.status) {
        reply.status
    } else {
        500
    };
    let (content_type, body): (&str, Cow<'_, [u8]>) = match &reply.body {
        // Serialising a Value cannot fail.
        ReplyBody::Json(v) => (
            "application/json",
            Cow::Owned(serde_json::to_vec(v).unwrap_or_default()),
        ),
        ReplyBody::Raw {
            content_type,
            bytes,
        } => (content_type, Cow::Borrowed(bytes)),
        ReplyBody::Encoded { json, .. } => ("application/json", Cow::Borrowed(json)),
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    let mut header = |name: &str, value: &str| {
        if valid_name(name) && valid_value(value) {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        } else {
            log::warn!(component = "api"; "dropping an invalid response header {name:?}");
        }
    };
    header("Content-Type", content_type);
    header("Cache-Control", "no-store");
    header("X-Content-Type-Options", "nosniff");
    for (name, value) in &reply.headers {
        let lower = name.to_ascii_lowercase();
        if OWN_HEADERS.contains(&lower.as_str()) {
            log::warn!(component = "api"; "dropping a response header the server sets itself: {name:?}");
            continue;
        }
        header(name, value);
    }
    header("Content-Length", &body.len().to_string());
    if close {
        header("Connection", "close");
    }
    out.extend_from_slice(b"\r\n");
    (out, body)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(Head, usize)>, Reject> {
        parse_head(raw.as_bytes())
    }

    fn ok(raw: &str) -> Head {
        let (h, len) = head(raw).unwrap().expect("complete");
        assert_eq!(len, raw.len(), "{raw:?}");
        h
    }

    fn status(raw: &str) -> u16 {
        head(raw).expect_err(raw).status
    }

    #[test]
    fn heads_parse() {
        let h = ok("GET /api/containers?status=Error HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/api/containers");
        assert_eq!(h.query.as_deref(), Some("status=Error"));
        assert_eq!(h.authorization.as_deref(), Some(&b"Bearer x"[..]));
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.close && !h.expect_continue);

        let h = ok("POST /api/scan HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: keep-alive, close\r\nExpect: 100-Continue\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.close && h.expect_continue);
        let h = ok("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        // Expect without a body has nothing to wait for.
        assert!(!ok("GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        // HTTP/1.0: no Host needed, closes, never expects 100.
        let h = ok("POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
        assert!(h.close && !h.expect_continue);
        // Repeated but agreeing lengths, leading empty lines, absolute form.
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nContent-Length: 7, 7\r\n\r\n")
                .framing,
            Framing::Length(7)
        );
        assert_eq!(
            ok("\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").path,
            "/healthz"
        );
        let h = ok("GET HTTP://h:1/api/jobs?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            (h.path.as_str(), h.query.as_deref()),
            ("/api/jobs", Some("x=1"))
        );
        assert_eq!(ok("GET http://h HTTP/1.1\r\nHost: t\r\n\r\n").path, "/");
        let h = ok("GET http://h?a HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/", Some("a")));
        assert_eq!(ok("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n").path, "*");
        // The head ends where the body (or the next request) starts.
        let (_, len) = head("GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(len, 27);
    }

    #[test]
    fn incomplete_heads_wait_until_the_cap() {
        assert_eq!(head("GET /healthz HTTP/1.1\r\nHost: t\r\n").unwrap(), None);
        assert_eq!(head("G").unwrap(), None);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&long), 431);
        let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), 431);
    }

    #[test]
    fn bad_heads_are_refused() {
        for (raw, want) in [
            ("\x00\x01 garbage\r\n\r\n", 400),
            ("GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
            ("GET /healthz HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1 2\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET api/containers HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            ("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", 400),
        ] {
            assert_eq!(status(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"FF;name=value"), Ok(255));
        assert_eq!(parse_chunk_size(b"10 ; x"), Ok(16));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"+1",
            b"1 2",
            b"0x10",
            b"fffffffffffffffff",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let reply = ApiReply::raw(200, "text/plain", "hi").with_header("Allow", "GET");
        let text = String::from_utf8(encode(reply.clone(), false, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 2\r\n") && text.contains("\r\nAllow: GET\r\n"));
        assert!(
            !text.contains("Connection") && text.ends_with("\r\n\r\nhi"),
            "{text}"
        );
        let text = String::from_utf8(encode(reply, true, true)).unwrap();
        assert!(
            text.contains("Connection: close\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Length: 2\r\n"),
            "HEAD keeps the length: {text}"
        );

        // Injected or framing headers never reach the wire; odd statuses become 500.
        let evil = ApiReply::raw(100, "text/plain", "x")
            .with_header("X-A", "1\r\nSet-Cookie: a")
            .with_header("Content-Length", "99")
            .with_header("Bad Name", "1");
        let text = String::from_utf8(encode(evil, false, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
        assert!(!text.contains("Set-Cookie") && !text.contains("99") && !text.contains("Bad Name"));
    }
}
