//! Command line of the shim, parsed the way Go's `flag` package does (containerd's shims are Go
//! programs and containerd passes Go-style flags): `-name value`, `-name=value`, `--name`,
//! boolean flags without a value (or `-debug=true`), parsing stops at the first non-flag
//! argument (the action: `start`, `delete`) or at `--`.

use crate::error::{Result, ShimError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub debug: bool,
    pub namespace: String,
    pub id: String,
    /// The server's socket path (set by `start` when it re-executes the server).
    pub socket: String,
    /// The bundle dir, if not the working directory (`delete` gets it).
    pub bundle: String,
    /// containerd's gRPC address.
    pub address: String,
    pub publish_binary: String,
    /// `-v` / `-version`.
    pub version: bool,
    /// `-info`: print a protobuf `RuntimeInfo`.
    pub info: bool,
    /// `start`, `delete`, or empty for the server.
    pub action: String,
}

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Version,
    Info,
    Start,
    Delete,
    Server,
    /// Compile one wasm module in the container's cgroup (`crate::compile_helper`).
    CompileHelper,
}

impl Flags {
    pub fn mode(&self) -> Result<Mode> {
        if self.version {
            return Ok(Mode::Version);
        }
        if self.info {
            return Ok(Mode::Info);
        }
        match self.action.as_str() {
            "start" => Ok(Mode::Start),
            "delete" => Ok(Mode::Delete),
            crate::compile_helper::ACTION => Ok(Mode::CompileHelper),
            "" => Ok(Mode::Server),
            other => Err(ShimError::Args(format!("unknown action {other:?}"))),
        }
    }

    /// The server's command line: the same flags, no action, plus the socket it serves (so it
    /// can remove it on exit). `start` forks the server rather than executing it (start.rs);
    /// this is for running one by hand.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn server_args(&self, socket: &str) -> Vec<String> {
        let mut args = vec![
            "-namespace".to_string(),
            self.namespace.clone(),
            "-id".to_string(),
            self.id.clone(),
            "-address".to_string(),
            self.address.clone(),
            "-publish-binary".to_string(),
            self.publish_binary.clone(),
            "-socket".to_string(),
            socket.to_string(),
        ];
        if !self.bundle.is_empty() {
            args.push("-bundle".to_string());
            args.push(self.bundle.clone());
        }
        if self.debug {
            args.push("-debug".to_string());
        }
        args
    }
}

/// Parses `args` (without the program name).
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Flags> {
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref();
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ShimError::Args(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let bool_flag = match name {
            "debug" => Some(&mut flags.debug),
            "v" | "version" => Some(&mut flags.version),
            "info" => Some(&mut flags.info),
            _ => None,
        };
        if let Some(target) = bool_flag {
            *target = match inline {
                None => true,
                Some(v) => parse_bool(v).ok_or_else(|| {
                    ShimError::Args(format!("invalid boolean value {v:?} for -{name}"))
                })?,
            };
            i += 1;
            continue;
        }
        let target = match name {
            "namespace" => &mut flags.namespace,
            "id" => &mut flags.id,
            "socket" => &mut flags.socket,
            "bundle" => &mut flags.bundle,
            "address" => &mut flags.address,
            "publish-binary" => &mut flags.publish_binary,
            _ => {
                return Err(ShimError::Args(format!(
                    "flag provided but not defined: -{name}"
                )))
            }
        };
        *target = match inline {
            Some(v) => v.to_string(),
            None => {
                i += 1;
                args.get(i)
                    .map(|v| v.as_ref().to_string())
                    .ok_or_else(|| ShimError::Args(format!("flag needs an argument: -{name}")))?
            }
        };
        i += 1;
    }
    if let Some(action) = args.get(i) {
        flags.action = action.as_ref().to_string();
    }
    Ok(flags)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_as_containerd_runs_it() {
        let f = parse(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "t1",
            "-debug",
            "start",
        ])
        .unwrap();
        let want = Flags {
            namespace: "default".into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            id: "t1".into(),
            debug: true,
            action: "start".into(),
            ..Default::default()
        };
        assert_eq!(f, want);
        assert_eq!(f.mode().unwrap(), Mode::Start);
    }

    #[test]
    fn delete_with_bundle_and_go_syntax_variants() {
        let f = parse(&[
            "--namespace=k8s.io",
            "-id=c1",
            "-bundle",
            "/b/c1",
            "-debug=false",
            "delete",
        ])
        .unwrap();
        let want = Flags {
            namespace: "k8s.io".into(),
            id: "c1".into(),
            bundle: "/b/c1".into(),
            action: "delete".into(),
            ..Default::default()
        };
        assert_eq!(f, want);
        assert_eq!(f.mode().unwrap(), Mode::Delete);
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["-v"]).unwrap().mode().unwrap(), Mode::Version);
        assert_eq!(
            parse(&["--version"]).unwrap().mode().unwrap(),
            Mode::Version
        );
        assert_eq!(parse(&["-info"]).unwrap().mode().unwrap(), Mode::Info);
        assert_eq!(parse(&["-id", "x"]).unwrap().mode().unwrap(), Mode::Server);
        assert!(parse(&["bogus"]).unwrap().mode().is_err());
    }

    #[test]
    fn parsing_stops_at_action_and_double_dash() {
        let f = parse(&["-id", "a", "start", "-debug"]).unwrap();
        assert_eq!(f.action, "start");
        assert!(!f.debug);
        let f = parse(&["-id", "a", "--", "-delete"]).unwrap();
        assert_eq!(f.action, "-delete");
    }

    #[test]
    fn errors() {
        assert!(parse(&["-nosuch"]).is_err());
        assert!(parse(&["-id"]).is_err());
        assert!(parse(&["-debug=maybe"]).is_err());
        assert!(parse(&["---id", "x"]).is_err());
    }

    #[test]
    fn server_args_round_trip() {
        let f = parse(&[
            "-namespace",
            "ns",
            "-address",
            "/c.sock",
            "-publish-binary",
            "/bin/containerd",
            "-id",
            "t1",
            "-debug",
            "start",
        ])
        .unwrap();
        let server = parse(&f.server_args("/run/containerd/s/abc")).unwrap();
        assert_eq!(server.mode().unwrap(), Mode::Server);
        assert_eq!(server.socket, "/run/containerd/s/abc");
        assert_eq!(
            server,
            Flags {
                socket: "/run/containerd/s/abc".into(),
                action: String::new(),
                ..f
            }
        );
    }
}
