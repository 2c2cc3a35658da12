//! The few bpf(2) commands runtime-native needs, as raw syscalls: load a program, attach it to
//! a cgroup, list what is attached there, detach. Each wrapper has one job and returns the
//! kernel's errno; callers say on what it failed.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;

/// `enum bpf_prog_type`.
pub(crate) const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`.
pub(crate) const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs on one cgroup; all of them must allow.
pub(crate) const BPF_F_ALLOW_MULTI: u32 = 2;

/// `struct bpf_insn`: opcode, dst (low nibble) and src (high nibble) registers, offset,
/// immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn dst(&self) -> u8 {
        self.regs & 0x0f
    }
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

// Every attr struct is laid out without implicit padding: the kernel refuses an attr whose
// bytes past the fields it knows are not zero, and padding bytes are never initialised.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to the name.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    typ: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<ProgLoadAttr>() == 72);
    assert!(size_of::<AttachAttr>() == 20);
    assert!(size_of::<QueryAttr>() == 32);
    assert!(size_of::<GetIdAttr>() == 12);
    assert!(size_of::<InfoAttr>() == 16);
    assert!(size_of::<ProgInfo>() == 80);
};

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded #[repr(C)] prefix of `union bpf_attr` for `cmd`,
    // and its size is passed; the kernel treats the missing tail as zero. Pointers inside it
    // are set by the callers to buffers that outlive this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn name_bytes(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = name.len().min(15);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// BPF_PROG_LOAD. On a verifier rejection the error carries the end of the verifier's log.
pub(crate) fn prog_load(prog_type: u32, insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"Apache\0";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name_bytes(name),
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd_from(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EINVAL)) => {
            // Again, with the verifier's log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(fd_from(fd));
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(io::Error::new(
                e.kind(),
                format!("{e}; verifier: {}", tail.join(" | ")),
            ))
        }
        Err(e) => Err(e),
    }
}

/// BPF_PROG_ATTACH of `prog` to the cgroup open as `cgroup`.
pub(crate) fn prog_attach(
    cgroup: BorrowedFd,
    prog: BorrowedFd,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    attach_cmd(BPF_PROG_ATTACH, cgroup, prog, attach_type, flags)
}

/// BPF_PROG_DETACH of the attached program `prog` from the cgroup open as `cgroup`.
pub(crate) fn prog_detach(
    cgroup: BorrowedFd,
    prog: BorrowedFd,
    attach_type: u32,
) -> io::Result<()> {
    attach_cmd(BPF_PROG_DETACH, cgroup, prog, attach_type, 0)
}

/// BPF_PROG_ATTACH or BPF_PROG_DETACH: both take the same attr, which names the cgroup, the
/// program and the attach type (`flags` only matter to an attach).
fn attach_cmd(
    cmd: libc::c_int,
    cgroup: BorrowedFd,
    prog: BorrowedFd,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        ..Default::default()
    };
    bpf(cmd, &mut attr).map(drop)
}

/// BPF_PROG_QUERY: the ids of the programs attached to this cgroup itself (not inherited).
pub(crate) fn prog_query(cgroup: BorrowedFd, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // prog_cnt now holds how many there are.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && ids.len() < 1 << 16 => {
                ids = vec![0u32; (attr.prog_cnt as usize).max(ids.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    }
}

/// BPF_PROG_GET_FD_BY_ID.
pub(crate) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        id,
        ..Default::default()
    };
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_from)
}

/// The name a program was loaded with (BPF_OBJ_GET_INFO_BY_FD).
pub(crate) fn prog_name(prog: BorrowedFd) -> io::Result<String> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}
