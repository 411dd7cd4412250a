//! The two tiny BPF programs that steer the encrypted path's traffic by CPU: an eBPF socket
//! filter for a multi-queue TAP (`TUNSETSTEERINGEBPF`: its return value picks the queue) and
//! a classic BPF program for a `SO_REUSEPORT` group of UDP sockets
//! (`SO_ATTACH_REUSEPORT_CBPF`: its return value picks the socket). Both return the CPU the
//! packet is handled on, modulo the group's size. Loaded with raw system calls: three and
//! four instructions do not need a BPF library. The routed path's forwarder
//! ([`super::bpf_forward`]) is loaded and attached here too.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    /// An instruction from its fields: opcode, destination and source registers, offset,
    /// immediate.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    #[cfg(test)]
    pub fn off(&self) -> i16 {
        self.off
    }

    #[cfg(test)]
    pub fn imm(&self) -> i32 {
        self.imm
    }

    pub fn set_off(&mut self, off: i16) {
        self.off = off;
    }

    /// A jump that depends on a comparison (not `ja`, a call or an exit).
    #[cfg(test)]
    pub fn is_conditional_jump(&self) -> bool {
        let class = self.code & 0x07;
        let op = self.code & 0xf0;
        (class == 0x05 || class == 0x06) && !matches!(op, 0x00 | 0x80 | 0x90)
    }
}

/// `bpf_get_smp_processor_id`, a helper every program type may call.
pub const FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;

/// r0 = helper `func`().
pub fn call(func: i32) -> Insn {
    Insn::new(0x85, 0, 0, 0, func) // BPF_JMP | BPF_CALL
}

/// r0 %= `k` (64-bit, unsigned).
pub fn mod_r0(k: i32) -> Insn {
    Insn::new(0x97, 0, 0, 0, k) // BPF_ALU64 | BPF_MOD | BPF_K
}

/// return r0.
pub fn exit() -> Insn {
    Insn::new(0x95, 0, 0, 0, 0) // BPF_JMP | BPF_EXIT
}

/// Loads `insns` as a socket filter program; the descriptor keeps it alive.
pub fn load_socket_filter(insns: &[Insn]) -> io::Result<OwnedFd> {
    load(BPF_PROG_TYPE_SOCKET_FILTER, insns)
}

/// Loads `insns` as a traffic-control classifier (direct action, for tcx).
pub fn load_classifier(insns: &[Insn]) -> io::Result<OwnedFd> {
    load(BPF_PROG_TYPE_SCHED_CLS, insns)
}

/// `bpf(BPF_PROG_LOAD)`. When the verifier refuses the program, loads it again with a log
/// and puts the log's end in the error: a refused program is a bug to read, not to guess.
fn load(prog_type: u32, insns: &[Insn]) -> io::Result<OwnedFd> {
    match prog_load(prog_type, insns, None) {
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            let mut log = vec![0u8; 64 * 1024];
            let again = prog_load(prog_type, insns, Some(&mut log));
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let tail: String = text.lines().rev().take(6).collect::<Vec<_>>().join(" | ");
            match again {
                Ok(fd) => Ok(fd),
                Err(e2) => Err(io::Error::new(e2.kind(), format!("{e2}: verifier: {tail}"))),
            }
        }
        other => other,
    }
}

fn prog_load(prog_type: u32, insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let license = c"GPL";
    // `union bpf_attr` for BPF_PROG_LOAD, zeroed past the fields set (the kernel checks).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    if let Some(log) = log {
        attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
        attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    }
    // SAFETY: the instructions, the license and the log `attr` points at are alive for the
    // call, and the kernel writes at most the log's given size into it.
    unsafe { bpf_new_fd(BPF_PROG_LOAD, &attr) }
}

/// Attaches classifier `prog` to the ingress of link `ifindex` (tcx, Linux 6.6+). The
/// returned link descriptor keeps it attached: dropping it (or the process ending, even by
/// SIGKILL) detaches it, so nothing is left in the kernel.
pub fn attach_tcx_ingress(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    // `union bpf_attr` for BPF_LINK_CREATE: prog_fd, target_ifindex, attach_type, flags.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_TCX_INGRESS.to_ne_bytes());
    // SAFETY: this `attr` holds no pointers.
    unsafe { bpf_new_fd(BPF_LINK_CREATE, &attr) }
}

/// `bpf(cmd, attr)` for a command that returns a new descriptor (a program, a link).
///
/// # Safety
/// Every pointer inside `attr` must be valid for what `cmd` reads or writes through it.
unsafe fn bpf_new_fd(cmd: libc::c_long, attr: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads `attr` (its size given, alive for the call); the pointers in
    // it are the caller's promise.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes the reuseport group of `sock` (its sockets in the order they were bound) hand each
/// datagram to socket `cpu % group`, `cpu` being where the kernel receives it.
pub fn steer_reuseport_by_cpu(sock: RawFd, group: usize) -> io::Result<()> {
    // Classic BPF: A = cpu (ancillary load); A %= group; return A.
    const SKF_AD_OFF: i32 = -0x1000;
    const SKF_AD_CPU: i32 = 36;
    let code = [
        libc::sock_filter {
            code: 0x20, // BPF_LD | BPF_W | BPF_ABS
            jt: 0,
            jf: 0,
            k: (SKF_AD_OFF + SKF_AD_CPU) as u32,
        },
        libc::sock_filter {
            code: 0x94, // BPF_ALU | BPF_MOD | BPF_K
            jt: 0,
            jf: 0,
            k: group as u32,
        },
        libc::sock_filter {
            code: 0x16, // BPF_RET | BPF_A
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: setsockopt reads one sock_fprog, which points at `code`, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &prog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruction_is_the_kernels_eight_bytes() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    /// Real kernel: the CPU-steering program loads (as root, as the router runs).
    #[test]
    fn the_steering_program_loads() {
        load_socket_filter(&[call(FUNC_GET_SMP_PROCESSOR_ID), mod_r0(4), exit()])
            .expect("load the steering program");
    }
}
