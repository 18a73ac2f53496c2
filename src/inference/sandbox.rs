//! The inference workers' confinement, applied in the forked child before it executes the
//! worker: a parent-death signal, no new privileges, an empty network namespace where the kernel
//! lets us make one, and a seccomp filter under which `socket(2)` fails with EPERM for every
//! address family but AF_UNIX (and `io_uring_setup(2)`, which could open sockets without it).
//! The workers talk over stdin/stdout pipes; they need no network, and with this filter a
//! compromised model parser cannot get one even where namespaces are unavailable.
//!
//! Everything is built before the fork: the code that runs in the child makes raw syscalls on
//! memory it already owns, allocates nothing and takes no locks. Both layers are best effort in
//! the child and checked from the parent (`in_own_network_namespace`, [`socket_filter_active`]),
//! so a kernel without them still runs the box, with a warning in the log.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// `AUDIT_ARCH_*` of this build (the kernel's `EM_*` machine, 64-bit, little-endian): a system
/// call made through another ABI (32-bit `int 0x80`, say) has other numbers and is refused.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 system calls on x86_64 carry this bit in their number and would dodge the socket rule.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets into the kernel's `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// The low 32 bits of `args[0]` (little-endian): `socket`'s `int domain`.
const OFFSET_ARG0_LOW: u32 = 16;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

fn load(offset: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn ret(k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A compiled seccomp program, made in the parent so the child only has to install it.
pub struct SocketFilter {
    program: Vec<libc::sock_filter>,
}

impl SocketFilter {
    pub fn new() -> Self {
        // Layout (the x32 check exists on x86_64 only):
        //   ld arch; other ABI → deny; ld nr; [x32 → deny]; socket → domain;
        //   io_uring_setup → deny; allow
        //   domain: ld arg0; AF_UNIX → allow, else deny
        let x32 = usize::from(cfg!(target_arch = "x86_64"));
        let domain = 6 + x32;
        let allow = domain + 2;
        let deny = allow + 1;
        // Jumps are forward and short (the program has a dozen instructions), so they fit a u8.
        let to = |from: usize, target: usize| (target - from - 1) as u8;
        let mut program = Vec::with_capacity(deny + 1);
        program.push(load(OFFSET_ARCH));
        program.push(jump(libc::BPF_JEQ, AUDIT_ARCH, 0, to(1, deny)));
        program.push(load(OFFSET_NR));
        #[cfg(target_arch = "x86_64")]
        program.push(jump(libc::BPF_JGE, X32_SYSCALL_BIT, to(3, deny), 0));
        let at = program.len();
        program.push(jump(
            libc::BPF_JEQ,
            libc::SYS_socket as u32,
            to(at, domain),
            0,
        ));
        let at = program.len();
        program.push(jump(
            libc::BPF_JEQ,
            libc::SYS_io_uring_setup as u32,
            to(at, deny),
            0,
        ));
        program.push(ret(RET_ALLOW));
        debug_assert_eq!(program.len(), domain);
        program.push(load(OFFSET_ARG0_LOW));
        program.push(jump(
            libc::BPF_JEQ,
            libc::AF_UNIX as u32,
            0,
            to(domain + 1, deny),
        ));
        program.push(ret(RET_ALLOW));
        program.push(ret(RET_EPERM));
        debug_assert_eq!(program.len(), deny + 1);
        Self { program }
    }
}

impl Default for SocketFilter {
    fn default() -> Self {
        Self::new()
    }
}

/// Arranges for `command`'s child to be confined between fork and exec.
pub fn confine(command: &mut Command, filter: SocketFilter) {
    let program = filter.program;
    // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
    // (prctl, unshare), which are async-signal-safe; it allocates nothing (the filter was built
    // before the fork and `sock_fprog` lives on the stack) and takes no locks.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Also what lets an unprivileged process install a seccomp filter.
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            // Best effort: an empty network namespace where the kernel lets us make one.
            // Whether it took is checked from the parent after the spawn.
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET);
            }
            let fprog = libc::sock_fprog {
                len: u16::try_from(program.len()).unwrap_or(0),
                filter: program.as_ptr().cast_mut(),
            };
            // The kernel copies the program; `fprog` and `program` only need to outlive the
            // call. Best effort like the namespace, checked from the parent.
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            );
            Ok(())
        });
    }
}

/// Whether the process `pid` runs under more seccomp filters than this one, i.e. the worker's
/// filter took (the daemon may itself run under systemd's `SystemCallFilter=`).
pub fn socket_filter_active(pid: u32) -> bool {
    let filters = |path: &str| -> Option<u32> {
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))?
            .trim()
            .parse()
            .ok()
    };
    match (
        filters("/proc/self/status"),
        filters(&format!("/proc/{pid}/status")),
    ) {
        (Some(ours), Some(theirs)) => theirs > ours,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn confined_python(code: &str) -> std::process::Output {
        let mut command = Command::new("python3");
        command.args(["-c", code]).env_clear().stdin(Stdio::null());
        confine(&mut command, SocketFilter::new());
        command.output().expect("python3 runs")
    }

    #[test]
    fn a_confined_child_cannot_open_network_sockets() {
        let output = confined_python(
            "import errno, socket\n\
             for family, kind in [(socket.AF_INET, socket.SOCK_STREAM),\n\
                                  (socket.AF_INET6, socket.SOCK_DGRAM),\n\
                                  (socket.AF_NETLINK, socket.SOCK_RAW),\n\
                                  (socket.AF_PACKET, socket.SOCK_RAW)]:\n\
             \x20   try:\n\
             \x20       socket.socket(family, kind)\n\
             \x20       raise SystemExit('opened %s' % family)\n\
             \x20   except PermissionError as e:\n\
             \x20       assert e.errno == errno.EPERM, e\n\
             socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()\n\
             print('confined')\n",
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), "confined", "{stderr}");
    }

    #[test]
    fn an_unconfined_child_can_still_open_them() {
        // The control: the same probe without the filter, so the test above proves the filter.
        let output = Command::new("python3")
            .args([
                "-c",
                "import socket; socket.socket().close(); print('open')",
            ])
            .output()
            .expect("python3 runs");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "open");
    }

    #[test]
    fn the_parent_sees_the_filter_in_the_child() {
        let mut command = Command::new("sleep");
        command.arg("5").stdin(Stdio::null());
        confine(&mut command, SocketFilter::new());
        let mut child = command.spawn().expect("sleep runs");
        let active = socket_filter_active(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(active);

        let mut plain = Command::new("sleep").arg("5").spawn().expect("sleep runs");
        let active = socket_filter_active(plain.id());
        let _ = plain.kill();
        let _ = plain.wait();
        assert!(!active);
    }
}
