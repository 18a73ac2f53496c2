//! Talking to systemd: readiness, status, the watchdog and stop notifications (the `sd_notify`
//! protocol: one datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`), and the
//! heartbeat the daemon's threads keep so the watchdog is fed only while they make progress.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op. A failed send is logged at debug
//! and never stops the daemon: systemd itself notices a missing `READY=1` or watchdog ping.
//! Status strings carry counts and states only, never patient data.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where notifications go.
#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    /// A Linux abstract socket (`@name` in `$NOTIFY_SOCKET`): no file, the name is the address.
    Abstract(Vec<u8>),
}

#[derive(Debug)]
struct Connection {
    socket: UnixDatagram,
    target: Target,
}

/// The daemon's line to systemd. Cheap to share by reference; sending takes `&self`.
#[derive(Debug, Default)]
pub struct Notifier {
    connection: Option<Connection>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. Without a socket (or with
    /// one that cannot be used) the notifier does nothing.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        Self::from_values(
            socket.as_deref(),
            watchdog_usec.as_deref(),
            watchdog_pid.as_deref(),
            std::process::id(),
        )
    }

    fn from_values(
        socket: Option<&std::ffi::OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Self {
        let connection = socket.and_then(|name| {
            let target = parse_target(name)?;
            match UnixDatagram::unbound() {
                Ok(socket) => Some(Connection { socket, target }),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot create the systemd notification socket");
                    None
                }
            }
        });
        Self {
            watchdog: connection
                .as_ref()
                .and_then(|_| watchdog_interval(watchdog_usec, watchdog_pid, own_pid)),
            connection,
        }
    }

    /// Whether notifications go anywhere (the daemon runs under systemd `Type=notify`).
    pub fn is_active(&self) -> bool {
        self.connection.is_some()
    }

    /// Startup is complete: systemd starts units ordered after this one.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A one-line status `systemctl status` shows. Counts and states only.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// The interval within which systemd expects a ping, when the unit has `WatchdogSec=` and
    /// the watchdog is meant for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn ping_watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Asks systemd to wait `by` longer (from now) before it gives up on the current start or
    /// stop; sent again while draining makes progress.
    pub fn extend_timeout(&self, by: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }

    fn send(&self, message: &str) {
        let Some(connection) = &self.connection else {
            return;
        };
        let sent = match &connection.target {
            Target::Path(path) => connection.socket.send_to(message.as_bytes(), path),
            Target::Abstract(name) => send_abstract(&connection.socket, name, message.as_bytes()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
    }
}

fn parse_target(name: &std::ffi::OsStr) -> Option<Target> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'/') => Some(Target::Path(name.into())),
        Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
        _ => {
            // systemd only ever sets an absolute path or an abstract name; anything else
            // (`vsock:`, a relative path) is not ours to guess at.
            tracing::debug!("NOTIFY_SOCKET is neither a path nor an abstract name; ignored");
            None
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    // A watchdog set up for another process (a wrapper that exec'd us, say) is not ours to feed.
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec = usec?.trim().parse::<u64>().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Newlines would start a new `KEY=VALUE` assignment in the datagram.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Proof of life from a thread that does the daemon's work. The thread `beat`s when it passes
/// a point of progress, or declares a step that may legitimately take long (`busy_for`) with the
/// most that step can take; the watchdog keeps being fed while the last beat is recent or the
/// declared step is within its budget.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last_ms: AtomicU64,
    /// Milliseconds since `origin` until which a declared long step counts as alive.
    busy_until_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy_until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The thread made progress now; any long step it declared is over.
    pub fn beat(&self) {
        self.last_ms.store(self.now_ms(), Ordering::SeqCst);
        self.busy_until_ms.store(0, Ordering::SeqCst);
    }

    /// The thread starts a step that may take up to `budget` without beating.
    pub fn busy_for(&self, budget: Duration) {
        let now = self.now_ms();
        let budget = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::SeqCst);
        self.busy_until_ms
            .store(now.saturating_add(budget), Ordering::SeqCst);
    }

    /// Whether the thread showed life within `within`, or is inside a declared step's budget.
    pub fn is_alive(&self, within: Duration) -> bool {
        let now = self.now_ms();
        let within = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(self.last_ms.load(Ordering::SeqCst)) < within
            || now < self.busy_until_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn bound_socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, path, socket)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let (_dir, path, socket) = bound_socket();
        let notifier = Notifier::from_values(Some(path.as_os_str()), Some("30000000"), None, 1);
        assert!(notifier.is_active());
        notifier.ready("3 encounters\nstored");
        let ready = receive(&socket);
        assert_eq!(ready, "READY=1\nSTATUS=3 encounters stored");
        notifier.status("idle");
        assert_eq!(receive(&socket), "STATUS=idle");
        notifier.ping_watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
        notifier.stopping();
        assert_eq!(receive(&socket), "STOPPING=1");
        notifier.extend_timeout(Duration::from_secs(90));
        assert_eq!(receive(&socket), "EXTEND_TIMEOUT_USEC=90000000");
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "edge-scribe-test-{}-{:?}",
            std::process::id(),
            Instant::now()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let env = format!("@{name}");
        let notifier = Notifier::from_values(Some(OsStr::new(&env)), None, None, 1);
        notifier.ping_watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
        assert_eq!(notifier.watchdog_interval(), None);
    }

    #[test]
    fn without_a_socket_everything_is_a_no_op() {
        let notifier = Notifier::from_values(None, Some("1000000"), None, 1);
        assert!(!notifier.is_active());
        // A watchdog nobody can feed is no watchdog.
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready("x");
        notifier.ping_watchdog();
        notifier.stopping();
    }

    #[test]
    fn a_vanished_socket_is_not_fatal() {
        let (dir, path, socket) = bound_socket();
        let notifier = Notifier::from_values(Some(path.as_os_str()), None, None, 1);
        drop(socket);
        drop(dir);
        notifier.ready("gone");
        notifier.ping_watchdog();
    }

    #[test]
    fn the_watchdog_honours_watchdog_pid_and_rejects_junk() {
        let usec = Some("2000000");
        assert_eq!(
            watchdog_interval(usec, Some("42"), 42),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_interval(usec, Some("43"), 42), None);
        assert_eq!(watchdog_interval(usec, Some("junk"), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval(None, None, 42), None);
    }

    #[test]
    fn relative_notify_socket_is_ignored() {
        let notifier = Notifier::from_values(Some(OsStr::new("notify.sock")), None, None, 1);
        assert!(!notifier.is_active());
    }

    #[test]
    fn a_heartbeat_goes_stale_unless_a_declared_step_is_within_budget() {
        let heartbeat = Heartbeat::new();
        heartbeat.beat();
        assert!(heartbeat.is_alive(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!heartbeat.is_alive(Duration::from_millis(10)));
        heartbeat.busy_for(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(30));
        assert!(heartbeat.is_alive(Duration::from_millis(10)));
        heartbeat.beat();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!heartbeat.is_alive(Duration::from_millis(10)));
    }
}
