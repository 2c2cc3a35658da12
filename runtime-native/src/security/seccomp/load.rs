//! Loading a compiled filter into the calling process: through libseccomp, or with seccomp(2)
//! when the program is our own (the ENOSYS stub) or needs a flag libseccomp lacks.

use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::ScmpFilterContext;

use super::{Filter, SeccompError, R};

/// libseccomp's program for `ctx`, as the kernel would get it from `seccomp_load`.
pub(super) fn export(ctx: &ScmpFilterContext) -> R<Vec<libc::sock_filter>> {
    use std::io::{Read, Seek};
    let f = memfd().map_err(|e| SeccompError::Export(e.to_string()))?;
    ctx.export_bpf(&f)
        .map_err(|e| SeccompError::Export(e.to_string()))?;
    let mut file = std::fs::File::from(f);
    let mut v = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut v))
        .map_err(|e| SeccompError::Export(e.to_string()))?;
    if !v.len().is_multiple_of(8) {
        return Err(SeccompError::Export(format!(
            "{} bytes is not a program",
            v.len()
        )));
    }
    // Host byte order, as libseccomp writes it.
    Ok(v.chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn memfd() -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(c"amphi-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Filter {
    /// The filter as the kernel gets it: `struct sock_filter` instructions (8 bytes each).
    #[cfg(test)]
    pub(crate) fn bpf(&self) -> R<Vec<u8>> {
        let prog = match &self.patched {
            Some(p) => p.clone(),
            None => export(&self.ctx)?,
        };
        Ok(prog
            .iter()
            .flat_map(|i| {
                let mut b = Vec::with_capacity(8);
                b.extend_from_slice(&i.code.to_ne_bytes());
                b.extend_from_slice(&[i.jt, i.jf]);
                b.extend_from_slice(&i.k.to_ne_bytes());
                b
            })
            .collect())
    }

    /// Loads the filter into the calling process. With notify rules, returns the notify fd.
    pub(super) fn load(&self) -> R<Option<OwnedFd>> {
        if let Some(prog) = &self.patched {
            return self.load_own(prog);
        }
        if self.wait_killable && self.notify {
            return self.load_own(&export(&self.ctx)?);
        }
        self.ctx
            .load()
            .map_err(|e| SeccompError::Load(e.to_string()))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self.ctx.get_notify_fd().map_err(SeccompError::NotifyFd)?;
        // SAFETY: libseccomp hands us a new fd, which we own from here on.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Loads `prog` with seccomp(2) and the flags `seccomp_load` would pass for this context,
    /// plus the ones libseccomp 2.5 cannot set (no_new_privs stays the runtime's business, as
    /// in [`compile`]).
    fn load_own(&self, prog: &[libc::sock_filter]) -> R<Option<OwnedFd>> {
        let mut flags: libc::c_ulong = 0;
        if self.ctx.get_ctl_log().unwrap_or(false) {
            flags |= libc::SECCOMP_FILTER_FLAG_LOG;
        }
        if self.ctx.get_ctl_ssb().unwrap_or(false) {
            flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        }
        // The kernel takes it only with a listener; it changes nothing without one.
        if self.wait_killable && self.notify {
            flags |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        }
        if self.notify {
            flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        }
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) reads the program, which outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let hint =
                if self.wait_killable && self.notify && e.raw_os_error() == Some(libc::EINVAL) {
                    " (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs Linux >= 5.19)"
                } else {
                    ""
                };
            return Err(SeccompError::Load(format!("{e}{hint}")));
        }
        if !self.notify {
            return Ok(None);
        }
        // SAFETY: with NEW_LISTENER seccomp(2) returns a new fd, which we own from here on.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(r as i32) }))
    }
}
