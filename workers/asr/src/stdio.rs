//! Keeps stdout for protocol frames only.
//!
//! whisper.cpp can `printf` to stdout (its realtime and progress printing, debug dumps). Each is
//! switched off, but one stray line would desynchronize the daemon's frame reader, and a printed
//! line can be transcript text. So the worker moves its protocol stream to a private duplicate of
//! stdout and points file descriptor 1 at a pipe nobody reads: anything else printed there fails
//! with EPIPE (Rust ignores SIGPIPE) instead of reaching the daemon or a log.

use std::fs::File;
use std::io;

/// Returns a handle on the real stdout for frames, and detaches fd 1 from it.
#[cfg(unix)]
pub fn take_stdout_for_frames() -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on fd 1 only creates a new descriptor; it touches no
    // memory. The result is checked before use.
    let frames_fd = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if frames_fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: frames_fd was just returned by fcntl, is open, and nothing else owns it.
    let frames = unsafe { OwnedFd::from_raw_fd(frames_fd) };

    let mut pipe_fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    if unsafe { libc::pipe2(pipe_fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by pipe2 and are owned by nothing else; wrapping
    // them closes them when this function returns (dup2 below keeps its own copy on fd 1).
    let (read_end, write_end) = unsafe {
        (
            OwnedFd::from_raw_fd(pipe_fds[0]),
            OwnedFd::from_raw_fd(pipe_fds[1]),
        )
    };
    drop(read_end);
    // SAFETY: dup2 atomically replaces fd 1 with a copy of the pipe's write end; both
    // descriptors are valid. Nothing in this process has written to stdout yet, so no buffered
    // Rust output is lost.
    if unsafe { libc::dup2(write_end.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(frames))
}

#[cfg(not(unix))]
pub fn take_stdout_for_frames() -> io::Result<File> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the ASR worker runs on Unix only",
    ))
}
