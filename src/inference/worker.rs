//! Supervision of one inference worker process.
//!
//! A [`SupervisedWorker`] starts its executable on first use, waits for its `Ready` message, and
//! sends it one request at a time over the framed protocol. A worker that crashes, closes its
//! stream, talks nonsense or takes longer than the request's deadline is killed and restarted
//! with exponential backoff, and the request is sent again — so the caller sees either the answer
//! or, after `max_attempts`, one error saying what went wrong each time. A `Failed` reply is the
//! worker's considered answer (e.g. a bad grammar) and is returned, not retried.
//!
//! Workers start with an empty environment, `/` as working directory, no new privileges, a
//! parent-death signal so they never outlive the daemon, a seccomp filter that refuses network
//! sockets (`sandbox.rs`), and (where the kernel allows) their own empty network namespace. This
//! module blocks; callers keep it off the async runtime.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use edge_scribe_protocol::{
    read_frame, write_frame, Frame, FrameError, Request, Response, PROTOCOL_VERSION,
};

use crate::config::WorkerSettings;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the {engine} worker executable {program} was not found; build it with `cargo build --release --workspace` or set workers.dir")]
    Missing {
        engine: &'static str,
        program: PathBuf,
    },
    #[error("the {engine} worker could not be started: {source}")]
    Spawn {
        engine: &'static str,
        source: std::io::Error,
    },
    #[error("the {engine} worker did not report ready within {seconds} s (model too large for this box, or a broken model file?)")]
    StartupTimeout { engine: &'static str, seconds: u64 },
    #[error("the {engine} worker speaks protocol {got}, the daemon {PROTOCOL_VERSION}; reinstall so both come from one build")]
    VersionMismatch { engine: &'static str, got: u32 },
    #[error("the {engine} worker exited ({status})")]
    Exited {
        engine: &'static str,
        status: String,
    },
    #[error("the {engine} worker did not answer within {seconds} s and was killed")]
    Hung { engine: &'static str, seconds: u64 },
    #[error("the {engine} worker stream broke: {source}")]
    Protocol {
        engine: &'static str,
        source: FrameError,
    },
    #[error("the {engine} worker failed the request: {message}")]
    Failed {
        engine: &'static str,
        message: String,
    },
    #[error("the {engine} worker failed {attempts} times in a row; last: {last}")]
    GaveUp {
        engine: &'static str,
        attempts: u32,
        last: Box<WorkerError>,
    },
}

/// How to start a worker and how patient to be with it.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Short name used in logs and errors: "asr" or "llm".
    pub engine: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub settings: WorkerSettings,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Result<Frame<Response>, FrameError>>,
    network_isolated: bool,
}

pub struct SupervisedWorker {
    spec: WorkerSpec,
    running: Option<Running>,
    next_id: u64,
    starts: u32,
    consecutive_failures: u32,
}

/// A one-line description of a reply for errors and logs: its kind, never its content.
pub fn describe(response: &Response) -> String {
    match response {
        Response::Ready { .. } => "ready".into(),
        Response::Transcription { id, segments, .. } => {
            format!("transcription #{id} with {} segments", segments.len())
        }
        Response::Generated { id, .. } => format!("generation #{id}"),
        Response::Failed { id, .. } => format!("failure #{id}"),
    }
}

fn reply_id(response: &Response) -> Option<u64> {
    match response {
        Response::Ready { .. } => None,
        Response::Transcription { id, .. }
        | Response::Generated { id, .. }
        | Response::Failed { id, .. } => Some(*id),
    }
}

impl SupervisedWorker {
    pub fn new(spec: WorkerSpec) -> Self {
        Self {
            spec,
            running: None,
            next_id: 1,
            starts: 0,
            consecutive_failures: 0,
        }
    }

    /// Times the worker was started again after its first start.
    pub fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }

    /// The running worker's process id, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Whether the running worker has a network namespace of its own (no network at all).
    pub fn network_isolated(&self) -> Option<bool> {
        self.running.as_ref().map(|r| r.network_isolated)
    }

    /// Starts the worker now rather than at the first request, so model loading overlaps other work.
    pub fn start(&mut self) -> Result<(), WorkerError> {
        self.ensure_running().map(|_| ())
    }

    /// Sends a request built by `make` (given a fresh id) and waits for its answer, restarting the
    /// worker and resending as needed. `extra_timeout` is added to the configured base deadline.
    pub fn call(
        &mut self,
        make: impl Fn(u64) -> Request,
        payload: &[u8],
        extra_timeout: Duration,
    ) -> Result<Response, WorkerError> {
        let engine = self.spec.engine;
        let timeout = self.spec.settings.request_timeout + extra_timeout;
        let attempts = self.spec.settings.max_attempts.max(1);
        let mut last_error = None;
        for attempt in 1..=attempts {
            if self.consecutive_failures > 0 {
                std::thread::sleep(self.backoff());
            }
            match self.try_once(&make, payload, timeout) {
                Ok(response) => {
                    self.consecutive_failures = 0;
                    return Ok(response);
                }
                Err(e @ (WorkerError::Failed { .. } | WorkerError::Missing { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::warn!(engine, attempt, attempts, error = %e, "worker attempt failed; restarting");
                    self.kill();
                    self.consecutive_failures += 1;
                    last_error = Some(e);
                }
            }
        }
        Err(WorkerError::GaveUp {
            engine,
            attempts,
            last: Box::new(last_error.unwrap_or(WorkerError::Exited {
                engine,
                status: "unknown".into(),
            })),
        })
    }

    fn backoff(&self) -> Duration {
        let base = self.spec.settings.restart_backoff;
        let factor = 1u32 << self.consecutive_failures.saturating_sub(1).min(16);
        (base * factor).min(self.spec.settings.restart_backoff_max)
    }

    fn try_once(
        &mut self,
        make: &impl Fn(u64) -> Request,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Response, WorkerError> {
        let engine = self.spec.engine;
        let id = self.next_id;
        self.next_id += 1;
        let running = self.ensure_running()?;
        write_frame(&mut running.stdin, &make(id), payload)
            .map_err(|source| WorkerError::Protocol { engine, source })?;
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match running.replies.recv_timeout(remaining) {
                Ok(Ok(frame)) => match frame.message {
                    Response::Failed { id: got, message } if got == id => {
                        return Err(WorkerError::Failed { engine, message })
                    }
                    response if reply_id(&response) == Some(id) => return Ok(response),
                    // A late answer to a request that already timed out: skip it.
                    _ => continue,
                },
                Ok(Err(source)) => return Err(WorkerError::Protocol { engine, source }),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(WorkerError::Hung {
                        engine,
                        seconds: timeout.as_secs(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = running
                        .child
                        .wait()
                        .map_or("unknown".into(), describe_status);
                    return Err(WorkerError::Exited { engine, status });
                }
            }
        }
    }

    fn ensure_running(&mut self) -> Result<&mut Running, WorkerError> {
        let alive = match self.running.as_mut() {
            Some(running) => matches!(running.child.try_wait(), Ok(None)),
            None => false,
        };
        if !alive {
            self.kill();
            let running = self.spawn()?;
            self.running = Some(running);
        }
        self.running.as_mut().ok_or(WorkerError::Exited {
            engine: self.spec.engine,
            status: "not running".into(),
        })
    }

    fn spawn(&mut self) -> Result<Running, WorkerError> {
        let engine = self.spec.engine;
        if !self.spec.program.is_file() {
            return Err(WorkerError::Missing {
                engine,
                program: self.spec.program.clone(),
            });
        }
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .env_clear()
            // Both engines use OpenMP; its default spin-waiting makes two workers sharing a
            // small box's cores slow each other down many times over.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // No new privileges, parent-death signal, empty network namespace, no sockets but
        // AF_UNIX (src/inference/sandbox.rs); the filter is built here, before the fork.
        super::sandbox::confine(&mut command, super::sandbox::SocketFilter::new());
        let mut child = command
            .spawn()
            .map_err(|source| WorkerError::Spawn { engine, source })?;
        self.starts += 1;
        if self.starts > 1 {
            crate::metrics::Metrics::add(&crate::metrics::METRICS.worker_restarts, 1);
        }
        let pid = child.id();
        let network_isolated = in_own_network_namespace(pid);
        if !super::sandbox::socket_filter_active(pid) {
            tracing::warn!(
                engine,
                pid,
                "the worker's socket filter did not take (no seccomp?)"
            );
        }
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(WorkerError::Spawn {
                engine,
                source: std::io::Error::other("worker pipes were not created"),
            });
        };
        let (sender, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{engine}-worker-reader"))
            .spawn(move || {
                let mut stdout = BufReader::new(stdout);
                loop {
                    match read_frame::<_, Response>(&mut stdout) {
                        Ok(Some(frame)) => {
                            if sender.send(Ok(frame)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = sender.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|source| WorkerError::Spawn { engine, source })?;
        std::thread::Builder::new()
            .name(format!("{engine}-worker-stderr"))
            .spawn(move || {
                // Workers write counts and timings here, never transcript text.
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    tracing::debug!(target: "edge_scribe::worker", engine, pid, "{line}");
                }
            })
            .map_err(|source| WorkerError::Spawn { engine, source })?;

        let mut running = Running {
            child,
            stdin,
            replies,
            network_isolated,
        };
        let startup = self.spec.settings.startup_timeout;
        match running.replies.recv_timeout(startup) {
            Ok(Ok(Frame {
                message:
                    Response::Ready {
                        protocol_version,
                        engine: engine_name,
                        model,
                        threads,
                    },
                ..
            })) => {
                if protocol_version != PROTOCOL_VERSION {
                    let _ = running.child.kill();
                    let _ = running.child.wait();
                    return Err(WorkerError::VersionMismatch {
                        engine,
                        got: protocol_version,
                    });
                }
                tracing::info!(
                    engine,
                    pid,
                    backend = %engine_name,
                    model = %model,
                    threads,
                    network_isolated,
                    start = self.starts,
                    "inference worker ready"
                );
                Ok(running)
            }
            outcome => {
                let _ = running.child.kill();
                let status = running
                    .child
                    .wait()
                    .map_or("unknown".into(), describe_status);
                Err(match outcome {
                    Err(RecvTimeoutError::Timeout) => WorkerError::StartupTimeout {
                        engine,
                        seconds: startup.as_secs(),
                    },
                    Ok(Err(source)) => WorkerError::Protocol { engine, source },
                    _ => WorkerError::Exited { engine, status },
                })
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }

    /// Asks the worker to exit, and kills it if it does not within a second.
    pub fn shutdown(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = write_frame(&mut running.stdin, &Request::Shutdown, &[]);
            drop(running.stdin);
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = running.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

impl Drop for SupervisedWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown status".into(),
    }
}

fn in_own_network_namespace(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/net");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    matches!((ours, theirs), (Ok(a), Ok(b)) if a != b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn settings() -> WorkerSettings {
        WorkerSettings {
            dir: None,
            startup_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_millis(1500),
            timeout_per_audio_second: 0.0,
            max_attempts: 3,
            restart_backoff: Duration::from_millis(10),
            restart_backoff_max: Duration::from_millis(50),
        }
    }

    /// A worker written in Python that speaks the protocol and misbehaves on cue, so the
    /// supervision logic is tested against a real process (the real engines are tested in
    /// tests/ with real models).
    fn fake_worker(dir: &std::path::Path, behaviour: &str) -> PathBuf {
        let path = dir.join("fake-worker");
        let script = format!(
            r#"#!/usr/bin/env python3
import json, os, struct, sys, time
behaviour = {behaviour:?}
marker = sys.argv[1]
def send(msg):
    h = json.dumps(msg).encode()
    sys.stdout.buffer.write(struct.pack("<II", len(h), 0) + h)
    sys.stdout.buffer.flush()
send({{"type": "ready", "protocol_version": 1, "engine": "fake", "model": "m", "threads": 1}})
starts = 0
if os.path.exists(marker):
    starts = int(open(marker).read())
open(marker, "w").write(str(starts + 1))
while True:
    head = sys.stdin.buffer.read(8)
    if len(head) < 8:
        sys.exit(0)
    hl, pl = struct.unpack("<II", head)
    req = json.loads(sys.stdin.buffer.read(hl)); sys.stdin.buffer.read(pl)
    if req["type"] == "shutdown":
        sys.exit(0)
    if behaviour == "crash-first" and starts == 0:
        os._exit(3)
    if behaviour == "hang-first" and starts == 0:
        time.sleep(60)
    if behaviour == "always-crash":
        os._exit(4)
    if behaviour == "refuse":
        send({{"type": "failed", "id": req["id"], "message": "bad grammar"}})
        continue
    send({{"type": "generated", "id": req["id"], "text": "ok", "prompt_tokens": 1,
          "generated_tokens": 1, "prompt_ms": 0, "generation_ms": 0}})
"#
        );
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(script.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn worker(dir: &std::path::Path, behaviour: &str) -> SupervisedWorker {
        let program = fake_worker(dir, behaviour);
        SupervisedWorker::new(WorkerSpec {
            engine: "llm",
            program,
            args: vec![dir.join("starts").into_os_string()],
            settings: settings(),
        })
    }

    fn generate(id: u64) -> Request {
        Request::Generate {
            id,
            messages: vec![],
            grammar: None,
            max_tokens: 1,
            seed: 0,
            temperature: 0.0,
        }
    }

    fn starts(dir: &std::path::Path) -> u32 {
        std::fs::read_to_string(dir.join("starts"))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_crash_mid_request_is_retried_on_a_fresh_worker() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), "crash-first");
        let reply = w.call(generate, &[], Duration::ZERO).unwrap();
        assert!(matches!(reply, Response::Generated { .. }));
        assert_eq!(w.restarts(), 1);
        assert_eq!(starts(dir.path()), 2);
    }

    #[test]
    fn a_hung_worker_is_killed_and_the_request_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), "hang-first");
        let started = Instant::now();
        let reply = w.call(generate, &[], Duration::ZERO).unwrap();
        assert!(matches!(reply, Response::Generated { .. }));
        assert_eq!(w.restarts(), 1);
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_worker_that_always_crashes_gives_up_after_max_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), "always-crash");
        let err = w.call(generate, &[], Duration::ZERO).unwrap_err();
        assert!(
            matches!(err, WorkerError::GaveUp { attempts: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("exit code 4"), "{err}");
        assert_eq!(starts(dir.path()), 3);
    }

    #[test]
    fn a_refusal_is_returned_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), "refuse");
        let err = w.call(generate, &[], Duration::ZERO).unwrap_err();
        assert!(matches!(err, WorkerError::Failed { .. }), "{err}");
        assert_eq!(starts(dir.path()), 1);
    }

    #[test]
    fn a_missing_executable_says_how_to_build_it() {
        let mut w = SupervisedWorker::new(WorkerSpec {
            engine: "asr",
            program: PathBuf::from("/nonexistent/edge-scribe-asr-worker"),
            args: vec![],
            settings: settings(),
        });
        let err = w.call(generate, &[], Duration::ZERO).unwrap_err();
        assert!(
            err.to_string()
                .contains("cargo build --release --workspace"),
            "{err}"
        );
    }

    #[test]
    fn workers_get_no_inherited_environment_and_die_with_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), "ok");
        w.start().unwrap();
        let pid = w.pid().unwrap();
        assert_eq!(
            w.network_isolated(),
            Some(true),
            "worker shares the daemon's network"
        );
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert_eq!(
            environ, b"OMP_WAIT_POLICY=PASSIVE\0",
            "worker inherited an environment"
        );
        w.shutdown();
        assert!(w.pid().is_none());
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap()
                    .contains("zombie")
        );
    }
}
