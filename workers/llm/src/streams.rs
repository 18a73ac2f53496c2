//! Keeps llama.cpp away from the protocol stream and the diagnostic stream.
//!
//! llama.cpp's log callback can be silenced, but some of its code writes to the C `stderr`
//! directly: the GBNF parser prints the whole grammar when it fails, the C++ terminate handler
//! prints exception text (a grammar exception carries generated text), and `ggml_abort` flushes
//! the C `stdout`, which on a worker is the frame stream. So at start-up the worker takes private
//! duplicates of fds 1 and 2 for itself and points fds 1 and 2 at a pipe whose contents a thread
//! reads and throws away, counting only the bytes. Nothing written by native code can then reach
//! the daemon, and nothing Rust writes through `println!`/`eprintln!` can either: every frame
//! goes through [`Streams::protocol`] and every diagnostic line through [`crate::diag`].
//!
//! This module opens no file: the pipe and the duplicates are anonymous descriptors.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("could not duplicate the worker's stdout/stderr: {0}")]
    Duplicate(io::Error),
    #[error("could not create the pipe that swallows llama.cpp's own output: {0}")]
    Pipe(io::Error),
    #[error("could not redirect fd {fd} to the discard pipe: {source}")]
    Redirect { fd: i32, source: io::Error },
    #[error("could not start the thread that drains llama.cpp's own output: {0}")]
    Thread(io::Error),
}

/// The worker's private ends of its standard streams.
pub struct Streams {
    /// Where frames go: a duplicate of the original stdout.
    pub protocol: BufWriter<File>,
    /// The original stderr, handed to [`crate::diag`].
    pub diag: File,
    /// Bytes native code wrote to fds 1 and 2 (and which were dropped).
    pub swallowed: Arc<AtomicU64>,
}

/// Duplicates stdout and stderr for the worker's own use, then points fds 1 and 2 at a pipe that
/// a background thread drains. Call before llama.cpp is initialised.
pub fn isolate() -> Result<Streams, StreamsError> {
    let protocol = dup(io::stdout().as_fd())?;
    let diag = dup(io::stderr().as_fd())?;

    let (mut reader, writer) = io::pipe().map_err(StreamsError::Pipe)?;
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: `writer` is an open pipe end we own for the whole call, and `fd` is 1 or 2,
        // which no Rust object owns (std's `Stdout`/`Stderr` refer to the number, not to an
        // `OwnedFd`), so replacing what they point at invalidates no handle. The worker's own
        // copies were taken above with `try_clone_to_owned`, which gives new numbers.
        let rc = unsafe { libc::dup2(writer.as_raw_fd(), fd) };
        if rc < 0 {
            return Err(StreamsError::Redirect {
                fd,
                source: io::Error::last_os_error(),
            });
        }
    }
    // fds 1 and 2 now hold the write end open; this handle is no longer needed.
    drop(writer);

    let swallowed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&swallowed);
    std::thread::Builder::new()
        .name("native-output-drain".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    // Only possible if fds 1 and 2 were closed, i.e. the process is exiting.
                    Ok(0) => return,
                    Ok(n) => {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Stop draining rather than spin; writers then fail instead of blocking
                    // only once the pipe is full, and the error is already as loud as it gets.
                    Err(_) => return,
                }
            }
        })
        .map_err(StreamsError::Thread)?;

    Ok(Streams {
        protocol: BufWriter::new(protocol),
        diag,
        swallowed,
    })
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Result<File, StreamsError> {
    let owned: OwnedFd = fd.try_clone_to_owned().map_err(StreamsError::Duplicate)?;
    Ok(File::from(owned))
}
