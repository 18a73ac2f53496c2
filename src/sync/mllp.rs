//! A blocking MLLP client: one HL7 message out, one framed ACK back, over TCP or TLS.
//!
//! Framing is `0x0B message 0x1C 0x0D`. The client connects lazily and keeps the connection for
//! the next message. Whether a failure may be retried, and whether the receiver might already
//! have stored the message, is part of every error ([`MllpError::is_retryable`],
//! [`MllpError::outcome_unknown`]): the outbox resends "outcome unknown" messages, and the
//! note's document number (TXA-12) stays the same, so a receiver that deduplicates on it files
//! the note once.
//!
//! Peers differ in how long they keep a connection: some keep it for any number of messages,
//! some (hl7apy's `MLLPServer`) close it after every ACK, some close idle connections after a
//! while. Before reusing a connection the client checks, without blocking, whether the peer has
//! closed it (or sent something unasked) and then reconnects transparently: nothing was written,
//! so nothing can be duplicated. That check alone would race a peer that closes right after its
//! ACK (the next message can be written before the peer's close arrives, and is then lost with
//! an unknown outcome), so until it knows which kind of peer it has, the client gives the peer
//! until [`PROBE_CLOSE_AFTER_ACK`] after its ACK to close before reusing the connection (only a
//! burst pays this, once per client); a peer that closes after every ACK then gets a new
//! connection per message.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::hl7::{self, Ack, Hl7Error};
use super::tls::{describe_handshake_error_for, rustls_error_of, TlsFiles};

/// MLLP start block.
pub const START_BLOCK: u8 = 0x0B;
/// MLLP end block, followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1C;
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// The largest reply accepted: an ACK is a few hundred bytes; anything near this is not one.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// A peer that closes a connection within this long after its ACK is taken to close after
/// every ACK (rather than after an idle timeout).
const CLOSES_AFTER_ACK_WINDOW: Duration = Duration::from_secs(1);

/// How long after its ACK a peer of unknown habit is given to close the connection before the
/// client reuses it. hl7apy's server closes within a millisecond or two.
pub const PROBE_CLOSE_AFTER_ACK: Duration = Duration::from_millis(100);

/// The longest wait, on a new TLS 1.3 connection presenting a client certificate, for the
/// server's verdict on that certificate (see `await_certificate_verdict`).
pub const POST_HANDSHAKE_VERDICT: Duration = Duration::from_millis(250);

/// What the client has learned about the peer's connection handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerHabit {
    Unknown,
    KeepsConnections,
    ClosesAfterAck,
}

#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("the MLLP destination {addr:?} is not HOST:PORT; fix the destination's address")]
    BadAddress { addr: String },

    #[error("the server name {name:?} for {addr} is not a valid DNS name or IP address; fix the destination's TLS server name")]
    BadServerName { addr: String, name: String },

    #[error("could not connect to the MLLP receiver at {addr}: {source}; check that the EHR's interface engine is running and listening there (not delivered; will retry)")]
    Connect { addr: String, source: io::Error },

    #[error("TLS with the MLLP receiver at {addr} failed: {message}")]
    Tls { addr: String, message: String },

    #[error("sending to {addr} failed before the whole message was written: {source} (not delivered; will retry)")]
    Write { addr: String, source: io::Error },

    #[error("no ACK from {addr} within {timeout:?} of sending message {control_id}: outcome unknown, the receiver may have stored it (will resend); if this repeats, check the receiver or raise the timeout")]
    Timeout {
        addr: String,
        control_id: String,
        timeout: Duration,
    },

    #[error("{addr} closed the connection after message {control_id} was sent and before any ACK: outcome unknown, the receiver may have stored it (will resend)")]
    ClosedWithoutAck { addr: String, control_id: String },

    #[error("reading the ACK for message {control_id} from {addr} failed: {source}: outcome unknown (will resend)")]
    Read {
        addr: String,
        control_id: String,
        source: io::Error,
    },

    #[error("malformed MLLP reply from {addr} to message {control_id}: {detail}: outcome unknown (will resend); check that the port is an MLLP listener")]
    MalformedFrame {
        addr: String,
        control_id: String,
        detail: String,
    },

    #[error("the reply from {addr} to message {control_id} is not an HL7 ACK: {source}: outcome unknown (will resend)")]
    BadAck {
        addr: String,
        control_id: String,
        source: Hl7Error,
    },

    #[error("{addr} acknowledged control id {got:?} while message {expected} was waiting: the connection is out of step (a late ACK of an earlier message?); outcome unknown, reconnecting and resending")]
    ControlIdMismatch {
        addr: String,
        expected: String,
        got: String,
    },

    #[error("the message cannot be sent over MLLP: {0}")]
    InvalidMessage(&'static str),
}

impl MllpError {
    /// Worth trying again later. Configuration errors (address, TLS identity or trust) and
    /// malformed outgoing messages are not: they need a person.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            MllpError::BadAddress { .. }
                | MllpError::BadServerName { .. }
                | MllpError::Tls { .. }
                | MllpError::InvalidMessage(_)
        )
    }

    /// A short fixed code for the outbox status and the audit log (no addresses, no text).
    pub fn code(&self) -> &'static str {
        match self {
            MllpError::BadAddress { .. } => "bad address",
            MllpError::BadServerName { .. } => "bad server name",
            MllpError::Connect { .. } => "connect failed",
            MllpError::Tls { .. } => "tls refused",
            MllpError::Write { .. } => "write failed",
            MllpError::Timeout { .. } => "no ack (timeout, outcome unknown)",
            MllpError::ClosedWithoutAck { .. } => "closed without ack (outcome unknown)",
            MllpError::Read { .. } => "read failed (outcome unknown)",
            MllpError::MalformedFrame { .. } => "malformed frame (outcome unknown)",
            MllpError::BadAck { .. } => "not an ack (outcome unknown)",
            MllpError::ControlIdMismatch { .. } => "ack for another message (outcome unknown)",
            MllpError::InvalidMessage(_) => "invalid message",
        }
    }

    /// The message was written whole and no valid ACK came back: the receiver may have it.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            MllpError::Timeout { .. }
                | MllpError::ClosedWithoutAck { .. }
                | MllpError::Read { .. }
                | MllpError::MalformedFrame { .. }
                | MllpError::BadAck { .. }
                | MllpError::ControlIdMismatch { .. }
        )
    }
}

/// The TLS server name for a destination: the configured one, else the host part of
/// `HOST:PORT` (an IP address is checked against the certificate's IP SANs).
pub fn server_name(addr: &str, configured: Option<&str>) -> Result<ServerName<'static>, MllpError> {
    let name = match configured {
        Some(n) => n.to_string(),
        None => {
            let (host, _port) = addr.rsplit_once(':').ok_or_else(|| MllpError::BadAddress {
                addr: addr.to_string(),
            })?;
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        }
    };
    ServerName::try_from(name.clone()).map_err(|_| MllpError::BadServerName {
        addr: addr.to_string(),
        name,
    })
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Conn {
    stream: Stream,
    /// Bytes read past the end of the last frame (there should be none).
    pending: Vec<u8>,
    last_ack: Instant,
}

/// Applies one overall deadline to a sequence of reads.
struct DeadlineReader<'a> {
    stream: &'a mut Stream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.tcp().set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Why a frame could not be read; mapped to [`MllpError`] with the address and control id.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// End of stream; `partial` when some bytes of a reply had arrived.
    Eof {
        partial: bool,
    },
    TooLarge,
    Malformed(&'static str),
    Io(io::Error),
}

/// Reads one MLLP frame. `pending` holds bytes already read (and keeps what follows the frame).
/// Bytes before the start block are skipped (some engines send a stray CR/LF), but counted
/// against `limit` like the frame itself, so a peer cannot make this read forever.
pub(crate) fn read_frame<R: Read>(
    reader: &mut R,
    pending: &mut Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut skipped = 0usize;
    let mut chunk = [0u8; 8192];
    // Where the scan for the end block resumes, so each byte is looked at once.
    let mut scan_from = 0usize;
    loop {
        match pending.iter().position(|&b| b == START_BLOCK) {
            None => {
                skipped += pending.len();
                pending.clear();
                scan_from = 0;
            }
            Some(0) => {}
            Some(start) => {
                skipped += start;
                pending.drain(..start);
                scan_from = 0;
            }
        }
        if skipped > limit {
            return Err(FrameError::TooLarge);
        }
        if !pending.is_empty() {
            let from = scan_from.max(1);
            if let Some(rel) = pending[from..]
                .iter()
                .position(|&b| b == END_BLOCK || b == START_BLOCK)
            {
                let at = from + rel;
                if pending[at] == START_BLOCK {
                    return Err(FrameError::Malformed("a start block inside a frame"));
                }
                match pending.get(at + 1) {
                    Some(&CARRIAGE_RETURN) => {
                        let frame = pending[1..at].to_vec();
                        pending.drain(..at + 2);
                        return Ok(frame);
                    }
                    Some(_) => {
                        return Err(FrameError::Malformed(
                            "the end block 0x1C is not followed by 0x0D",
                        ))
                    }
                    // The CR has not arrived yet: read more and look again from the end block.
                    None => scan_from = at,
                }
            } else {
                scan_from = pending.len();
            }
            if pending.len() > limit + 2 {
                return Err(FrameError::TooLarge);
            }
        }
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        };
        if n == 0 {
            return Err(FrameError::Eof {
                partial: !pending.is_empty() || skipped > 0,
            });
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// A blocking MLLP client for one destination. Not `Sync`: one sender owns it.
pub struct MllpClient {
    addr: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    tls_files: Option<TlsFiles>,
    timeout: Duration,
    conn: Option<Conn>,
    habit: PeerHabit,
    connects: u64,
}

impl std::fmt::Debug for MllpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpClient")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.is_some())
            .field("habit", &self.habit)
            .field("connects", &self.connects)
            .finish()
    }
}

impl MllpClient {
    /// `timeout` bounds the connect (with the TLS handshake), the write, and the wait for the ACK
    /// (each on its own).
    pub fn new(
        addr: String,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        timeout: Duration,
    ) -> MllpClient {
        MllpClient {
            addr,
            tls,
            tls_files: None,
            timeout,
            conn: None,
            habit: PeerHabit::Unknown,
            connects: 0,
        }
    }

    /// The files the TLS configuration came from, so TLS errors can name them.
    pub fn with_tls_files(mut self, files: TlsFiles) -> MllpClient {
        self.tls_files = Some(files);
        self
    }

    /// Connections opened so far (for tests and metrics).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Closes the connection, if any; the next `send` opens a new one.
    pub fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.stream.tcp().shutdown(Shutdown::Both);
        }
    }

    /// Sends one HL7 message and returns the receiver's ACK, whose MSA-2 must be the message's
    /// MSH-10. AE and AR come back as `Ok`: what they mean is the caller's policy.
    pub fn send(&mut self, message: &str) -> Result<Ack, MllpError> {
        if message.bytes().any(|b| b == START_BLOCK || b == END_BLOCK) {
            return Err(MllpError::InvalidMessage(
                "it contains an MLLP block character (0x0B or 0x1C); escape the text",
            ));
        }
        let control_id = hl7::message_control_id(message).ok_or(MllpError::InvalidMessage(
            "it has no MSH segment with MSH-10",
        ))?;
        let mut frame = Vec::with_capacity(message.len() + 3);
        frame.push(START_BLOCK);
        frame.extend_from_slice(message.as_bytes());
        frame.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);

        let mut conn = self.take_live_connection()?;
        let reused = conn.is_some();
        let mut conn = match conn.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        if let Err(e) = write_frame(&mut conn.stream, &frame) {
            // A connection the peer dropped while idle can fail the write; the frame was not
            // complete, so the receiver cannot have processed it: reconnect once and resend.
            if reused && self.tls_failure(&e).is_none() {
                tracing::debug!(addr = %self.addr, "mllp: reused connection failed on write, reconnecting");
                conn = self.connect()?;
                write_frame(&mut conn.stream, &frame).map_err(|e| self.write_error(e))?;
            } else {
                return Err(self.write_error(e));
            }
        }

        let deadline = Instant::now() + self.timeout;
        let mut reader = DeadlineReader {
            stream: &mut conn.stream,
            deadline,
        };
        let reply = read_frame(&mut reader, &mut conn.pending, MAX_REPLY_BYTES);
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                let _ = conn.stream.tcp().shutdown(Shutdown::Both);
                return Err(self.read_error(e, &control_id));
            }
        };
        let text = String::from_utf8_lossy(&reply);
        let ack = hl7::parse_ack(&text).map_err(|source| MllpError::BadAck {
            addr: self.addr.clone(),
            control_id: control_id.clone(),
            source,
        })?;
        if ack.control_id != control_id {
            let _ = conn.stream.tcp().shutdown(Shutdown::Both);
            return Err(MllpError::ControlIdMismatch {
                addr: self.addr.clone(),
                expected: control_id,
                got: ack.control_id.chars().take(64).collect(),
            });
        }
        conn.last_ack = Instant::now();
        if self.habit == PeerHabit::ClosesAfterAck {
            // This peer closes after every ACK; close ours too rather than leave it half-open.
            let _ = conn.stream.tcp().shutdown(Shutdown::Both);
        } else {
            self.conn = Some(conn);
        }
        Ok(ack)
    }

    /// The kept connection if the peer has neither closed it nor sent anything unasked; checked
    /// without blocking. A connection with unexpected bytes is dropped: they can only be a stale
    /// ACK or a TLS close, and either would confuse the next exchange.
    fn take_live_connection(&mut self) -> Result<Option<Conn>, MllpError> {
        let Some(conn) = self.conn.take() else {
            return Ok(None);
        };
        let tcp = conn.stream.tcp();
        // While the peer's habit is unknown, give it until PROBE_CLOSE_AFTER_ACK after its ACK
        // to close; afterwards (and once known) the check does not block.
        let wait = match self.habit {
            PeerHabit::Unknown => PROBE_CLOSE_AFTER_ACK.saturating_sub(conn.last_ack.elapsed()),
            _ => Duration::ZERO,
        };
        let mut probe = [0u8; 1];
        let quiet = |r: io::Result<usize>| matches!(r, Err(ref e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        let alive = conn.pending.is_empty()
            && if wait.is_zero() {
                tcp.set_nonblocking(true).is_ok()
                    && quiet(tcp.peek(&mut probe))
                    && tcp.set_nonblocking(false).is_ok()
            } else {
                tcp.set_read_timeout(Some(wait)).is_ok() && quiet(tcp.peek(&mut probe))
            };
        if !alive {
            if conn.last_ack.elapsed() < CLOSES_AFTER_ACK_WINDOW {
                tracing::debug!(addr = %self.addr, "mllp: peer closes after each ACK; one connection per message from now on");
                self.habit = PeerHabit::ClosesAfterAck;
            }
            let _ = tcp.shutdown(Shutdown::Both);
            return Ok(None);
        }
        if self.habit == PeerHabit::Unknown {
            self.habit = PeerHabit::KeepsConnections;
        }
        Ok(Some(conn))
    }

    fn connect(&mut self) -> Result<Conn, MllpError> {
        let addrs: Vec<_> = self
            .addr
            .to_socket_addrs()
            .map_err(|_| MllpError::BadAddress {
                addr: self.addr.clone(),
            })?
            .collect();
        let mut last_err =
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let connect_err = |source| MllpError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let tcp = tcp.ok_or_else(|| connect_err(last_err))?;
        // An ACK waits on the message's last bytes; Nagle would hold them back.
        tcp.set_nodelay(true).map_err(connect_err)?;
        tcp.set_write_timeout(Some(self.timeout))
            .map_err(connect_err)?;
        tcp.set_read_timeout(Some(self.timeout))
            .map_err(connect_err)?;
        self.connects += 1;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((config, name)) => {
                let conn =
                    ClientConnection::new(Arc::clone(config), name.clone()).map_err(|e| {
                        MllpError::Tls {
                            addr: self.addr.clone(),
                            message: describe_handshake_error_for(&e, self.tls_files.as_ref()),
                        }
                    })?;
                let mut tls = StreamOwned::new(conn, tcp);
                // Finish the handshake now so its failures are told apart from the exchange's.
                while tls.conn.is_handshaking() {
                    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                        return Err(match self.tls_failure(&e) {
                            Some(message) => MllpError::Tls {
                                addr: self.addr.clone(),
                                message,
                            },
                            None => connect_err(e),
                        });
                    }
                }
                if let Some(message) = self.await_certificate_verdict(&mut tls) {
                    return Err(MllpError::Tls {
                        addr: self.addr.clone(),
                        message,
                    });
                }
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Conn {
            stream,
            pending: Vec::new(),
            last_ack: Instant::now(),
        })
    }

    /// In TLS 1.3 the server checks our certificate after our side of the handshake is done,
    /// so a refusal (an alert, or just a close: Python's ssl sends none) would otherwise arrive
    /// after the message was written and look like a lost ACK, "outcome unknown". The server's
    /// first records after the handshake are its session tickets or its refusal, so wait for
    /// them (at most [`POST_HANDSHAKE_VERDICT`]) before writing anything. A server that sends no
    /// tickets costs that wait once per connection. Returns the refusal, if any.
    fn await_certificate_verdict(
        &self,
        tls: &mut StreamOwned<ClientConnection, TcpStream>,
    ) -> Option<String> {
        let presents_cert = self
            .tls
            .as_ref()
            .is_some_and(|(config, _)| config.client_auth_cert_resolver.has_certs());
        if !presents_cert || tls.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        let deadline = Instant::now() + POST_HANDSHAKE_VERDICT.min(self.timeout);
        let refused = || {
            let client = self
                .tls_files
                .as_ref()
                .and_then(|f| f.client_cert.as_ref())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "this box's client certificate".to_string());
            format!(
                "the receiver closed the connection right after the TLS handshake: it refused \
                 {client} (issued by a CA it does not trust, expired, or without the clientAuth \
                 usage); have the clinic's CA (the one the receiver trusts) issue this box's \
                 certificate (nothing was sent)"
            )
        };
        while tls.conn.tls13_tickets_received() == 0 && !tls.conn.wants_write() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tls.sock.set_read_timeout(Some(left)).is_err() {
                return None;
            }
            match tls.conn.read_tls(&mut tls.sock) {
                Ok(0) => return Some(refused()),
                Ok(_) => match tls.conn.process_new_packets() {
                    Err(e) => {
                        return Some(describe_handshake_error_for(&e, self.tls_files.as_ref()))
                    }
                    Ok(state) if state.peer_has_closed() => return Some(refused()),
                    // Application data before our message: not ours to judge here.
                    Ok(state) if state.plaintext_bytes_to_read() > 0 => return None,
                    Ok(_) => {}
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Some(refused())
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn tls_failure(&self, e: &io::Error) -> Option<String> {
        rustls_error_of(e).map(|err| describe_handshake_error_for(err, self.tls_files.as_ref()))
    }

    fn write_error(&self, e: io::Error) -> MllpError {
        match self.tls_failure(&e) {
            Some(message) => MllpError::Tls {
                addr: self.addr.clone(),
                message,
            },
            None => MllpError::Write {
                addr: self.addr.clone(),
                source: e,
            },
        }
    }

    fn read_error(&self, e: FrameError, control_id: &str) -> MllpError {
        let addr = self.addr.clone();
        let control_id = control_id.to_string();
        match e {
            FrameError::Eof { partial: false } => MllpError::ClosedWithoutAck { addr, control_id },
            FrameError::Eof { partial: true } => MllpError::MalformedFrame {
                addr,
                control_id,
                detail: "the connection closed in the middle of a reply".into(),
            },
            FrameError::TooLarge => MllpError::MalformedFrame {
                addr,
                control_id,
                detail: format!("more than {MAX_REPLY_BYTES} bytes without a complete frame"),
            },
            FrameError::Malformed(detail) => MllpError::MalformedFrame {
                addr,
                control_id,
                detail: detail.into(),
            },
            FrameError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                MllpError::Timeout {
                    addr,
                    control_id,
                    timeout: self.timeout,
                }
            }
            // With TLS 1.3 the server judges our certificate after our side of the handshake is
            // done, so its refusal arrives as an alert on the first read. It refused the session,
            // so it did not process the message; the cause is configuration, not the network.
            FrameError::Io(e) => match self.tls_failure(&e) {
                Some(message) => MllpError::Tls { addr, message },
                None if e.kind() == io::ErrorKind::UnexpectedEof => {
                    MllpError::ClosedWithoutAck { addr, control_id }
                }
                None => MllpError::Read {
                    addr,
                    control_id,
                    source: e,
                },
            },
        }
    }
}

fn write_frame(stream: &mut Stream, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame)?;
    stream.flush()
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// xorshift64*: deterministic randomness for fuzz-style tests without a dependency.
    pub(crate) struct XorShift(pub u64);

    impl XorShift {
        #[allow(clippy::should_implement_trait)]
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::XorShift;
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::thread;

    const MSG: &str = "MSH|^~\\&|ES|CL|EHR|H|20250101||MDM^T02^MDM_T02|C1|P|2.5\rEVN|T02\r";

    fn ack_for(id: &str, code: &str) -> Vec<u8> {
        let mut v = vec![START_BLOCK];
        v.extend_from_slice(
            format!("MSH|^~\\&|EHR|H|ES|CL|20250101||ACK|A-{id}|P|2.5\rMSA|{code}|{id}\r")
                .as_bytes(),
        );
        v.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        v
    }

    fn msg(id: &str) -> String {
        MSG.replace("|C1|", &format!("|{id}|"))
    }

    /// Reads one frame from a server-side socket and returns its control id.
    fn recv(sock: &mut TcpStream) -> Option<String> {
        let mut pending = Vec::new();
        let frame = read_frame(sock, &mut pending, MAX_REPLY_BYTES).ok()?;
        hl7::message_control_id(&String::from_utf8_lossy(&frame))
    }

    /// A one-shot server running `f` on each accepted connection in turn.
    fn serve(conns: usize, f: impl Fn(usize, TcpStream) + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for i in 0..conns {
                let (sock, _) = listener.accept().unwrap();
                f(i, sock);
            }
        });
        addr
    }

    fn client(addr: String, ms: u64) -> MllpClient {
        MllpClient::new(addr, None, Duration::from_millis(ms))
    }

    #[test]
    fn frames_split_into_bytes_with_garbage_before() {
        let addr = serve(1, |_, mut s| {
            while let Some(id) = recv(&mut s) {
                let mut bytes = b"\r\n junk".to_vec();
                bytes.extend(ack_for(&id, "AA"));
                for b in bytes {
                    s.write_all(&[b]).unwrap();
                    thread::sleep(Duration::from_micros(200));
                }
            }
        });
        let mut c = client(addr, 5000);
        for i in 0..3 {
            let id = format!("C{i}");
            let ack = c.send(&msg(&id)).unwrap();
            assert_eq!(ack.control_id, id);
        }
        assert_eq!(c.connects(), 1);
    }

    #[test]
    fn oversized_reply_is_refused() {
        let addr = serve(1, |_, mut s| {
            recv(&mut s);
            let mut big = vec![START_BLOCK];
            big.extend(std::iter::repeat_n(b'A', MAX_REPLY_BYTES + 10));
            let _ = s.write_all(&big);
            thread::sleep(Duration::from_millis(200));
        });
        let err = client(addr, 5000).send(&msg("C1")).unwrap_err();
        assert!(matches!(err, MllpError::MalformedFrame { .. }), "{err}");
        assert!(err.is_retryable() && err.outcome_unknown());
    }

    #[test]
    fn drop_timeout_and_mismatch_are_classified() {
        let addr = serve(3, |i, mut s| {
            let id = recv(&mut s).unwrap();
            match i {
                0 => drop(s),
                1 => thread::sleep(Duration::from_millis(600)),
                _ => s.write_all(&ack_for(&format!("{id}-other"), "AA")).unwrap(),
            }
        });
        let mut c = client(addr, 300);
        let err = c.send(&msg("C1")).unwrap_err();
        assert!(matches!(err, MllpError::ClosedWithoutAck { .. }), "{err}");
        assert!(err.to_string().contains("outcome unknown"));
        let t0 = Instant::now();
        let err = c.send(&msg("C2")).unwrap_err();
        assert!(matches!(err, MllpError::Timeout { .. }), "{err}");
        assert!(
            t0.elapsed() < Duration::from_millis(550),
            "{:?}",
            t0.elapsed()
        );
        let err = c.send(&msg("C3")).unwrap_err();
        assert!(matches!(err, MllpError::ControlIdMismatch { .. }), "{err}");
        assert!(err.is_retryable());
    }

    #[test]
    fn reconnects_when_the_peer_closed_an_idle_connection() {
        let addr = serve(2, |_, mut s| {
            let id = recv(&mut s).unwrap();
            s.write_all(&ack_for(&id, "AA")).unwrap();
            // Close after the ACK, as hl7apy's server does.
        });
        let mut c = client(addr, 2000);
        c.send(&msg("C1")).unwrap();
        // No pause: the client must not race the peer's close.
        let ack = c.send(&msg("C2")).unwrap();
        assert_eq!(ack.control_id, "C2");
        assert_eq!(c.connects(), 2);
        assert_eq!(c.habit, PeerHabit::ClosesAfterAck);
    }

    #[test]
    fn connect_refused_is_retryable_and_not_outcome_unknown() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = client(format!("127.0.0.1:{port}"), 500)
            .send(&msg("C1"))
            .unwrap_err();
        assert!(matches!(err, MllpError::Connect { .. }), "{err}");
        assert!(err.is_retryable() && !err.outcome_unknown());
        let err = client("nonsense".into(), 500).send(&msg("C1")).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[test]
    fn refuses_messages_that_would_break_framing() {
        let mut c = client("127.0.0.1:9".into(), 100);
        assert!(matches!(
            c.send("MSH|^~\\&|\u{1c}"),
            Err(MllpError::InvalidMessage(_))
        ));
        assert!(matches!(c.send("PID|1"), Err(MllpError::InvalidMessage(_))));
    }

    #[test]
    fn frame_reader_edge_cases() {
        let read = |bytes: &[u8]| {
            let mut pending = Vec::new();
            read_frame(&mut Cursor::new(bytes.to_vec()), &mut pending, 64).map(|f| (f, pending))
        };
        assert_eq!(
            read(b"\x0bAB\x1c\x0dXY").unwrap(),
            (b"AB".to_vec(), b"XY".to_vec())
        );
        assert_eq!(read(b"\r\n\x0b\x1c\x0d").unwrap().0, b"".to_vec());
        assert!(matches!(
            read(b"\x0bAB\x1cX"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            read(b"\x0bA\x0bB\x1c\x0d"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            read(b"\x0bAB"),
            Err(FrameError::Eof { partial: true })
        ));
        assert!(matches!(read(b""), Err(FrameError::Eof { partial: false })));
        assert!(matches!(read(&[b'x'; 100]), Err(FrameError::TooLarge)));
        let mut long = vec![START_BLOCK];
        long.extend([b'a'; 100]);
        assert!(matches!(read(&long), Err(FrameError::TooLarge)));
    }

    /// A reader handing out its bytes in random small pieces.
    struct Choppy {
        data: Vec<u8>,
        at: usize,
        rng: XorShift,
    }

    impl Read for Choppy {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let left = self.data.len() - self.at;
            let n = (1 + self.rng.next() as usize % 7).min(left).min(buf.len());
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// 10,000 random byte strings (fixed seed) through the frame reader in random pieces: no
    /// panic, and whenever it returns a frame, that frame is exactly what was between the blocks.
    #[test]
    fn frame_reader_fuzz() {
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        let alphabet = [START_BLOCK, END_BLOCK, CARRIAGE_RETURN, b'M', b'|', 0, 0xff];
        for _ in 0..10_000 {
            let len = (rng.next() % 64) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(2) {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    } else {
                        (r >> 16) as u8
                    }
                })
                .collect();
            let mut reader = Choppy {
                data: data.clone(),
                at: 0,
                rng: XorShift(rng.next() | 1),
            };
            let mut pending = Vec::new();
            if let Ok(frame) = read_frame(&mut reader, &mut pending, 48) {
                let start = data.iter().position(|&b| b == START_BLOCK).unwrap();
                assert_eq!(&data[start + 1..start + 1 + frame.len()], &frame[..]);
                assert_eq!(data[start + 1 + frame.len()], END_BLOCK);
                let _ = hl7::parse_ack(&String::from_utf8_lossy(&frame));
            }
        }
    }
}
