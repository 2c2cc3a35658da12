//! Command line of the shim. containerd passes Go-style flags (its shims are Go programs), so
//! the words are split by the `goflag` crate; the first argument after the flags is the
//! action (`start`, `delete`, none for the server).

use goflag::Kind::{Bool, Value};
use goflag::{Flag, Parsed};

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

/// Every flag containerd passes a shim, and the ones a person running it by hand may.
const FLAGS: &[Flag] = &[
    Flag(&["debug"], Bool),
    Flag(&["version", "v"], Bool),
    Flag(&["info"], Bool),
    Flag(&["namespace"], Value),
    Flag(&["id"], Value),
    Flag(&["socket"], Value),
    Flag(&["bundle"], Value),
    Flag(&["address"], Value),
    Flag(&["publish-binary"], Value),
];

/// Parses `args` (without the program name).
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Flags> {
    let (found, rest) =
        goflag::parse(args, &[FLAGS]).map_err(|e| ShimError::Args(e.to_string()))?;
    let text = |p: &Parsed, name| p.value(name).unwrap_or_default().to_string();
    Ok(Flags {
        debug: found.bool("debug"),
        namespace: text(&found, "namespace"),
        id: text(&found, "id"),
        socket: text(&found, "socket"),
        bundle: text(&found, "bundle"),
        address: text(&found, "address"),
        publish_binary: text(&found, "publish-binary"),
        version: found.bool("version"),
        info: found.bool("info"),
        action: args
            .get(rest)
            .map(|a| a.as_ref().to_string())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What containerd passes for `start` and `delete`, in Go's spellings.
    #[test]
    fn containerd_command_lines() {
        let cases: [(&[&str], Flags, Mode); 2] = [
            (
                &[
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
                ],
                Flags {
                    namespace: "default".into(),
                    address: "/run/containerd/containerd.sock".into(),
                    publish_binary: "/usr/bin/containerd".into(),
                    id: "t1".into(),
                    debug: true,
                    action: "start".into(),
                    ..Default::default()
                },
                Mode::Start,
            ),
            (
                &[
                    "--namespace=k8s.io",
                    "-id=c1",
                    "-bundle",
                    "/b/c1",
                    "-debug=false",
                    "delete",
                ],
                Flags {
                    namespace: "k8s.io".into(),
                    id: "c1".into(),
                    bundle: "/b/c1".into(),
                    action: "delete".into(),
                    ..Default::default()
                },
                Mode::Delete,
            ),
        ];
        for (args, want, mode) in cases {
            let f = parse(args).unwrap();
            assert_eq!(f, want, "{args:?}");
            assert_eq!(f.mode().unwrap(), mode, "{args:?}");
        }
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
    fn errors_name_the_flag() {
        for (args, want) in [
            (&["-nosuch"][..], "flag provided but not defined: -nosuch"),
            (&["-id"], "flag needs an argument: -id"),
            (
                &["-debug=maybe"],
                "invalid boolean value \"maybe\" for -debug: parse error",
            ),
            (&["---id", "x"], "bad flag syntax: ---id"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert_eq!(err, format!("invalid arguments: {want}"), "{args:?}");
        }
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
