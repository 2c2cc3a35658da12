//! Framed messages over SEQPACKET sockets, with fds passed by SCM_RIGHTS.
//!
//! A message is a header datagram (`u64` LE length, plus any fds) followed by the payload in
//! chunks of at most [`CHUNK`] bytes, so large specs fit regardless of the socket buffer size.
//! Payloads are JSON. Used between the caller and the spawner (requests/replies) and between
//! the caller and each container process (the sync protocol).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Largest payload accepted (a spec with big annotations still fits easily).
pub const MAX_MSG: usize = 8 << 20;
const CHUNK: usize = 32 << 10;
const MAX_FDS: usize = 64;

/// Messages a container process sends to the caller.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChildMsg {
    /// A warning to log (the child has no logger of its own).
    Log(String),
    /// The pty master travels with this message.
    PtyMaster,
    /// Set up; waiting for Start.
    Ready,
    /// Setup or exec failed; the message is for the user.
    Failed(String),
    /// Namespaces and mounts are ready: run the `prestart`/`createRuntime` hooks (hooks.rs)
    /// and answer `HooksDone`.
    RuntimeHooks,
}

/// Messages the caller sends to a container process.
#[derive(Debug, Serialize, Deserialize)]
pub enum ParentMsg {
    Start,
    /// The runtime hooks ran (hooks.rs).
    HooksDone,
    /// From the spawner: the new user namespace's id maps are written (userns.rs).
    UserNsMapped,
}

fn send_all(fd: RawFd, buf: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    let iov = [IoSlice::new(buf)];
    let cmsg;
    let cmsgs: &[ControlMessage] = if fds.is_empty() {
        &[]
    } else {
        cmsg = [ControlMessage::ScmRights(fds)];
        &cmsg
    };
    loop {
        match sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends raw bytes plus fds as one framed message.
pub fn send_raw(fd: RawFd, data: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    if data.len() > MAX_MSG {
        return Err(Errno::EMSGSIZE);
    }
    let header = (data.len() as u64).to_le_bytes();
    send_all(fd, &header, fds)?;
    for chunk in data.chunks(CHUNK) {
        send_all(fd, chunk, &[])?;
    }
    Ok(())
}

fn recv_one(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, Errno> {
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let res = recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match res {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let n = msg.bytes;
        let flags = msg.flags;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(rfds) = c {
                    for f in rfds {
                        // SAFETY: the kernel just installed these fds for us.
                        fds.push(unsafe { OwnedFd::from_raw_fd(f) });
                    }
                }
            }
        }
        if flags.contains(MsgFlags::MSG_TRUNC) || flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(Errno::EMSGSIZE);
        }
        return Ok(n);
    }
}

/// Receives one framed message. `Ok(None)` means the peer closed the socket (EOF).
/// A message's bytes and the fds that came with it.
pub type Received = (Vec<u8>, Vec<OwnedFd>);

pub fn recv_raw(fd: RawFd) -> Result<Option<Received>, Errno> {
    let mut fds = Vec::new();
    let mut header = [0u8; 8];
    let n = recv_one(fd, &mut header, &mut fds)?;
    if n == 0 {
        return Ok(None);
    }
    if n != 8 {
        return Err(Errno::EPROTO);
    }
    let len = u64::from_le_bytes(header) as usize;
    if len > MAX_MSG {
        return Err(Errno::EMSGSIZE);
    }
    let mut data = vec![0u8; len];
    let mut off = 0;
    while off < len {
        let end = (off + CHUNK).min(len);
        let n = recv_one(fd, &mut data[off..end], &mut fds)?;
        if n == 0 {
            return Err(Errno::EPIPE);
        }
        off += n;
    }
    Ok(Some((data, fds)))
}

/// A framed JSON message that could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("encode message: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("send message: {0}")]
    Send(#[source] Errno),
    #[error("receive message: {0}")]
    Receive(#[source] Errno),
    #[error("decode message: {0}")]
    Decode(#[source] serde_json::Error),
}

pub fn send<T: Serialize>(fd: &impl AsRawFd, msg: &T, fds: &[RawFd]) -> Result<(), Error> {
    let data = serde_json::to_vec(msg).map_err(Error::Encode)?;
    send_raw(fd.as_raw_fd(), &data, fds).map_err(Error::Send)
}

pub fn recv<T: DeserializeOwned>(fd: &impl AsRawFd) -> Result<Option<(T, Vec<OwnedFd>)>, Error> {
    match recv_raw(fd.as_raw_fd()).map_err(Error::Receive)? {
        None => Ok(None),
        Some((data, fds)) => {
            let msg = serde_json::from_slice(&data).map_err(Error::Decode)?;
            Ok(Some((msg, fds)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn large_message_with_fds() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let big = "x".repeat(300_000);
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let t = std::thread::spawn(move || {
            send(&a, &ChildMsg::Failed(big), &[devnull.as_raw_fd()]).unwrap();
            drop(a);
        });
        let (msg, fds) = recv::<ChildMsg>(&b).unwrap().unwrap();
        t.join().unwrap();
        match msg {
            ChildMsg::Failed(s) => assert_eq!(s.len(), 300_000),
            _ => panic!(),
        }
        assert_eq!(fds.len(), 1);
        assert!(recv::<ChildMsg>(&b).unwrap().is_none());
    }
}
