//! CRI streaming (Exec, Attach, PortForward) as a client reaches it: the RPC returns a URL on
//! containerd's streaming server, and the client upgrades an HTTP request to that URL to a
//! WebSocket speaking Kubernetes' channel protocol (`v4.channel.k8s.io`: every binary message
//! starts with a channel byte; for exec/attach 0 stdin, 1 stdout, 2 stderr, 3 the final status
//! as JSON; for port forwarding 0 data and 1 errors of the first port, each opened with the
//! port number, two bytes little-endian).
//!
//! A minimal client over a blocking loopback `TcpStream`: the handshake, masked client frames,
//! fragmented and control frames from the server. No TLS (the test daemons serve plain HTTP on
//! 127.0.0.1).

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The channel protocol kubelet's streaming server speaks for exec, attach and port forward.
pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Largest message the client accepts (outputs here are a few KB).
const MAX_MESSAGE: usize = 16 << 20;

pub struct WebSocket {
    sock: TcpStream,
}

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("streaming URL {url:?} is not plain http://"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    Ok((host.to_string(), path.to_string()))
}

impl WebSocket {
    /// Connects to `url` and upgrades with `protocol`; `timeout` bounds every read.
    pub fn connect(url: &str, protocol: &str, timeout: Duration) -> Result<WebSocket> {
        let (host, path) = split_url(url)?;
        let mut sock =
            TcpStream::connect(&host).with_context(|| format!("connect to {host} ({url})"))?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        // The key is a nonce for proxies' sake; the server's accept hash is not checked (a
        // loopback test talking to the daemon it started).
        write!(
            sock,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: YW1waGktZTJlLXN0cmVhbQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        )?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            anyhow::ensure!(head.len() < 16 << 10, "HTTP response head too long");
            sock.read_exact(&mut b)
                .with_context(|| format!("reading the upgrade response from {url}"))?;
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 101 ") {
            // The body says why (a bad token, a gone container).
            let mut body = vec![0u8; 4096];
            let n = sock.read(&mut body).unwrap_or(0);
            anyhow::bail!(
                "{url}: no WebSocket upgrade: {status}: {}",
                String::from_utf8_lossy(&body[..n]).trim()
            );
        }
        let proto = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("sec-websocket-protocol")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        anyhow::ensure!(
            proto == protocol,
            "{url}: server chose protocol {proto:?}, not {protocol:?}"
        );
        Ok(WebSocket { sock })
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mut f = vec![0x80 | opcode];
        let mask = [0x5a, 0x17, 0xc3, 0x8e];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.sock.write_all(&f)?;
        Ok(())
    }

    /// Sends `data` on `channel` (one binary message).
    pub fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(channel);
        m.extend_from_slice(data);
        self.send_frame(OP_BINARY, &m)
    }

    /// The next data message as (channel, bytes); `None` once the server closed.
    pub fn recv(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut message: Vec<u8> = Vec::new();
        loop {
            let mut h = [0u8; 2];
            match self.sock.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e).context("reading a WebSocket frame"),
            }
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.sock.read_exact(&mut b)?;
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.sock.read_exact(&mut b)?;
                len = u64::from_be_bytes(b);
            }
            anyhow::ensure!(
                h[1] & 0x80 == 0,
                "the server sent a masked frame (not allowed)"
            );
            anyhow::ensure!(
                message.len() as u64 + len <= MAX_MESSAGE as u64,
                "WebSocket message over {MAX_MESSAGE} bytes"
            );
            let mut payload = vec![0u8; len as usize];
            self.sock.read_exact(&mut payload)?;
            match opcode {
                OP_CLOSE => {
                    let _ = self.send_frame(OP_CLOSE, &[]);
                    return Ok(None);
                }
                OP_PING => self.send_frame(OP_PONG, &payload)?,
                OP_PONG => {}
                OP_BINARY | OP_TEXT | OP_CONTINUATION => {
                    message.extend_from_slice(&payload);
                    if fin {
                        if message.is_empty() {
                            message.clear();
                            continue;
                        }
                        let channel = message.remove(0);
                        return Ok(Some((channel, message)));
                    }
                }
                other => anyhow::bail!("unknown WebSocket opcode {other:#x}"),
            }
        }
    }

    /// Closes the connection (a close frame, then the socket).
    pub fn close(mut self) {
        let _ = self.send_frame(OP_CLOSE, &[]);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// What an exec or attach stream delivered until the server closed it.
#[derive(Debug, Default, Clone)]
pub struct StreamOutput {
    pub stdout: String,
    pub stderr: String,
    /// The status message on channel 3 (JSON `metav1.Status`), if any.
    pub status: Option<serde_json::Value>,
}

impl StreamOutput {
    /// The exit code the status reports: 0 for `Success`, the `ExitCode` cause otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        let s = self.status.as_ref()?;
        if s["status"] == "Success" {
            return Some(0);
        }
        s["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Reads an exec/attach stream to its end (or until `stop` says the output so far suffices).
pub fn read_output(
    ws: &mut WebSocket,
    stop: impl Fn(&StreamOutput) -> bool,
) -> Result<StreamOutput> {
    let mut out = StreamOutput::default();
    while let Some((channel, data)) = ws.recv()? {
        match channel {
            1 => out.stdout.push_str(&String::from_utf8_lossy(&data)),
            2 => out.stderr.push_str(&String::from_utf8_lossy(&data)),
            3 => {
                out.status = Some(
                    serde_json::from_slice(&data)
                        .with_context(|| format!("status {:?}", String::from_utf8_lossy(&data)))?,
                )
            }
            _ => {}
        }
        if stop(&out) {
            break;
        }
    }
    Ok(out)
}

/// Sends one HTTP/1.0 GET for `path` through a port-forward stream and returns the response,
/// read until the stream ends or `done` says it is complete.
pub fn forward_http_get(
    ws: &mut WebSocket,
    port: u16,
    path: &str,
    done: impl Fn(&str) -> bool,
) -> Result<String> {
    // Each channel opens with its port number.
    let mut opened = 0;
    while opened < 2 {
        let (channel, data) = ws
            .recv()?
            .context("port-forward stream closed before it opened")?;
        anyhow::ensure!(
            data == port.to_le_bytes(),
            "channel {channel} opened with {data:?}, not port {port}"
        );
        opened += 1;
    }
    ws.send(
        0,
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
    )?;
    let mut response = String::new();
    while let Some((channel, data)) = ws.recv()? {
        let text = String::from_utf8_lossy(&data);
        match channel {
            0 => response.push_str(&text),
            1 => anyhow::bail!("port forward to {port}: {text}"),
            _ => {}
        }
        if done(&response) {
            break;
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:4321/exec/abc?x=1").unwrap(),
            ("127.0.0.1:4321".to_string(), "/exec/abc?x=1".to_string())
        );
        assert!(split_url("https://h/x").is_err());
    }

    #[test]
    fn exit_code_from_status() {
        let mut o = StreamOutput::default();
        assert_eq!(o.exit_code(), None);
        o.status = Some(serde_json::json!({"status": "Success"}));
        assert_eq!(o.exit_code(), Some(0));
        o.status = Some(
            serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}),
        );
        assert_eq!(o.exit_code(), Some(3));
    }
}
