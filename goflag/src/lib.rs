//! Command lines read the way Go's `flag` package reads them, for the two programs that are
//! called by Go code: the shim (containerd passes `-namespace ns -id t1 start`) and amphi-oci
//! (containerd's runc shim passes runc's flags).
//!
//! The grammar: `-name` or `--name`; a value as the next argument or after `=`; a boolean
//! flag takes no next argument, only `=value` in the words Go's `strconv.ParseBool` knows.
//! Where the flags end is the one thing the two callers differ in:
//! - [`parse`], Go's `flag` package (the shim): at the first argument that is not a flag
//!   (`start`, a container id), at a lone `-`, or after `--`;
//! - [`parse_interspersed`], runc's commands (urfave/cli v3): flags may also follow the
//!   positional arguments (`delete ID --force`), up to `--`, or until a command's first N
//!   positionals were read (`exec ID cmd -l`: what follows the id is the command's).
//!
//! What each program does with the flags stays with it: this crate only splits the words
//! and names the one that is wrong.

use std::collections::HashMap;
use std::path::PathBuf;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

/// One flag: its names (the first is the one its values are filed under) and its kind.
#[derive(Debug)]
pub struct Flag(pub &'static [&'static str], pub Kind);

/// Why a command line was refused, in Go's words (what containerd or a user of runc reads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bad flag syntax: {0}")]
    Syntax(String),
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("invalid boolean value {value:?} for -{name}: parse error")]
    Bool { name: String, value: String },
    #[error("flag needs an argument: -{0}")]
    NeedsArgument(String),
}

/// The flags found: every value given to each, under its first name, in order (a boolean's
/// values are `"true"` and `"false"`).
#[derive(Debug, Default)]
pub struct Parsed(HashMap<&'static str, Vec<String>>);

impl Parsed {
    /// The last value given (Go keeps the last of a repeated flag).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value given, for flags that may repeat (`--env`, `--cap`).
    pub fn values(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn bool(&self, name: &str) -> bool {
        self.value(name) == Some("true")
    }

    /// A value that names a path; an empty one counts as not given.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.value(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

/// Reads the flags at the front of `args` (no program name) against the flag tables in
/// `tables`; returns them and the index of the first argument after them.
pub fn parse<S: AsRef<str>>(args: &[S], tables: &[&[Flag]]) -> Result<(Parsed, usize), Error> {
    let mut parsed = Parsed::default();
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
        i = parsed.take(args, i, tables)?;
    }
    Ok((parsed, i))
}

/// Reads flags anywhere in `args`, as urfave/cli does for runc's commands: every argument
/// that is not a flag is positional, in order. The flags end at `--` (dropped), at an
/// argument such as `-` or `-1` (a dash and no letter: it and the rest are positional), or,
/// with `stop_after` = N, once N positionals were read (the rest are positional whatever
/// they look like).
pub fn parse_interspersed<S: AsRef<str>>(
    args: &[S],
    tables: &[&[Flag]],
    stop_after: Option<usize>,
) -> Result<(Parsed, Vec<String>), Error> {
    let mut parsed = Parsed::default();
    let mut positional = Vec::new();
    let rest = |from: usize| args[from..].iter().map(|a| a.as_ref().to_string());
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref();
        if arg == "--" {
            positional.extend(rest(i + 1));
            break;
        }
        if stop_after == Some(positional.len()) {
            positional.extend(rest(i));
            break;
        }
        let mut chars = arg.chars();
        if chars.next() != Some('-') {
            positional.push(arg.to_string());
            i += 1;
            continue;
        }
        if !chars.next().is_some_and(|c| c == '-' || c.is_alphabetic()) {
            positional.extend(rest(i));
            break;
        }
        i = parsed.take(args, i, tables)?;
    }
    Ok((parsed, positional))
}

impl Parsed {
    /// Files the flag at `args[i]` (and its value, when that is the next argument); returns
    /// the index after what it took.
    fn take<S: AsRef<str>>(
        &mut self,
        args: &[S],
        mut i: usize,
        tables: &[&[Flag]],
    ) -> Result<usize, Error> {
        let arg = args[i].as_ref();
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(Error::Syntax(arg.to_string()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = tables
            .iter()
            .flat_map(|t| t.iter())
            .find(|f| f.0.contains(&name))
            .ok_or_else(|| Error::Undefined(name.to_string()))?;
        let value = match (flag.1, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match parse_bool(v) {
                Some(b) => b.to_string(),
                None => {
                    return Err(Error::Bool {
                        name: name.to_string(),
                        value: v.to_string(),
                    })
                }
            },
            (Kind::Value, Some(v)) => v.to_string(),
            (Kind::Value, None) => {
                i += 1;
                args.get(i)
                    .map(|v| v.as_ref().to_string())
                    .ok_or_else(|| Error::NeedsArgument(name.to_string()))?
            }
        };
        self.0.entry(flag.0[0]).or_default().push(value);
        Ok(i + 1)
    }
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
    use Kind::{Bool, Value};

    const FLAGS: &[Flag] = &[
        Flag(&["bundle", "b"], Value),
        Flag(&["env", "e"], Value),
        Flag(&["debug"], Bool),
    ];

    fn run(args: &[&str]) -> Result<(Parsed, usize), Error> {
        parse(args, &[FLAGS])
    }

    #[test]
    fn values_next_or_inline_under_the_first_name() {
        let (p, rest) = run(&["-b", "/x", "--env=A=1", "-e", "B=2", "id"]).unwrap();
        assert_eq!(p.value("bundle"), Some("/x"));
        assert_eq!(p.values("env"), ["A=1", "B=2"]);
        assert_eq!(
            p.value("b"),
            None,
            "values are filed under the first name only"
        );
        assert_eq!(rest, 5);
    }

    #[test]
    fn booleans_take_no_next_argument_and_go_words_after_equals() {
        let (p, rest) = run(&["-debug", "start"]).unwrap();
        assert!(p.bool("debug"));
        assert_eq!(rest, 1);
        for (word, want) in [("1", true), ("T", true), ("False", false), ("0", false)] {
            let arg = format!("--debug={word}");
            let (p, _) = run(&[arg.as_str()]).unwrap();
            assert_eq!(p.bool("debug"), want, "{word}");
        }
        assert_eq!(
            run(&["-debug=yes"]).unwrap_err().to_string(),
            "invalid boolean value \"yes\" for -debug: parse error"
        );
    }

    #[test]
    fn the_flags_end_at_a_positional_a_lone_dash_or_after_double_dash() {
        assert_eq!(run(&["id", "-b", "x"]).unwrap().1, 0);
        assert_eq!(run(&["-", "x"]).unwrap().1, 0);
        let (p, rest) = run(&["--", "-b", "x"]).unwrap();
        assert_eq!((p.value("bundle"), rest), (None, 1));
        assert_eq!(run(&["-debug"]).unwrap().1, 1);
    }

    #[test]
    fn errors_name_the_flag_in_gos_words() {
        let cases: &[(&[&str], &str)] = &[
            (&["-nope"], "flag provided but not defined: -nope"),
            (&["-b"], "flag needs an argument: -b"),
            (&["---b"], "bad flag syntax: ---b"),
            (&["-=x"], "bad flag syntax: -=x"),
        ];
        for (args, want) in cases {
            assert_eq!(run(args).unwrap_err().to_string(), *want, "{args:?}");
        }
    }

    fn spread(args: &[&str], stop_after: Option<usize>) -> (Parsed, Vec<String>) {
        parse_interspersed(args, &[FLAGS], stop_after).unwrap()
    }

    #[test]
    fn interspersed_flags_may_follow_positionals() {
        let (p, pos) = spread(&["c1", "--debug", "-b", "/x", "c2"], None);
        assert!(p.bool("debug"));
        assert_eq!(p.value("bundle"), Some("/x"));
        assert_eq!(pos, ["c1", "c2"]);
        // `--` ends the flags and is dropped.
        let (p, pos) = spread(&["c1", "--", "--debug"], None);
        assert!(!p.bool("debug"));
        assert_eq!(pos, ["c1", "--debug"]);
        // A dash without a letter is not a flag: it and the rest are positional.
        let (p, pos) = spread(&["c1", "-1", "--debug"], None);
        assert!(!p.bool("debug"));
        assert_eq!(pos, ["c1", "-1", "--debug"]);
        let (_, pos) = spread(&["-", "-b"], None);
        assert_eq!(pos, ["-", "-b"]);
        assert_eq!(
            parse_interspersed(&["c1", "--nope"], &[FLAGS], None)
                .unwrap_err()
                .to_string(),
            "flag provided but not defined: -nope"
        );
    }

    #[test]
    fn interspersed_flags_stop_after_n_positionals() {
        let (p, pos) = spread(&["-b", "/x", "c1", "sh", "--debug", "-e", "A=1"], Some(1));
        assert_eq!(p.value("bundle"), Some("/x"));
        assert!(!p.bool("debug"));
        assert_eq!(pos, ["c1", "sh", "--debug", "-e", "A=1"]);
        // `--` right after the first positional is still the end of the flags.
        let (_, pos) = spread(&["c1", "--", "ls", "-l"], Some(1));
        assert_eq!(pos, ["c1", "ls", "-l"]);
    }

    #[test]
    fn an_empty_path_is_not_given() {
        let (p, _) = run(&["-b", ""]).unwrap();
        assert_eq!(p.path("bundle"), None);
        let (p, _) = run(&["-b=/run/x"]).unwrap();
        assert_eq!(p.path("bundle"), Some(PathBuf::from("/run/x")));
    }
}
