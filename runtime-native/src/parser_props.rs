//! Property tests of this crate's parsers of untrusted input — the OCI spec, mount options,
//! the network config, seccomp profiles, the `[tenant_files]` limits — over seeded random and
//! mutated inputs (`crate::testgen`): none panics, valid input round-trips to what was meant,
//! and bad input is refused with an error. Each test prints how many cases it ran
//! (`cargo test -p runtime-native --lib parser_props -- --nocapture`).

use crate::network::{Mode, NetworkConfig};
use crate::testgen::Gen;

const CASES: usize = 2000;

fn report(what: &str, cases: usize, refused: usize) {
    println!("{what}: {cases} cases, {refused} refused with an error");
}

fn base_spec() -> oci_spec::runtime::Spec {
    oci_spec::runtime::Spec::default()
}

#[test]
fn oci_spec_never_panics_and_round_trips() {
    let spec = base_spec();
    crate::spec::validate(&spec).expect("the default spec is valid");
    let json = serde_json::to_vec(&spec).unwrap();
    // Round trip: what we serialise parses back to the same document.
    let back: oci_spec::runtime::Spec = serde_json::from_slice(&json).unwrap();
    // (Compared as specs: capability sets serialise in any order.)
    assert_eq!(back, spec);
    let mut g = Gen::new(0x5eed_0001);
    let mut refused = 0;
    for case in 0..CASES {
        let bytes = g.mutate(&json);
        match serde_json::from_slice::<oci_spec::runtime::Spec>(&bytes) {
            Err(_) => refused += 1,
            Ok(s) => {
                if crate::spec::validate(&s).is_err() {
                    refused += 1;
                }
            }
        }
        // Through the real loader now and then: errors name the file.
        if case % 200 == 0 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
            if let Err(e) = crate::spec::load(dir.path()) {
                assert!(e.to_string().contains("config.json"), "case {case}: {e}");
            }
        }
    }
    report("OCI spec (mutated config.json)", CASES, refused);
}

#[test]
fn oci_spec_bad_fields_are_refused_by_name() {
    let mut g = Gen::new(0x5eed_0002);
    for case in 0..CASES {
        let mut v = serde_json::to_value(base_spec()).unwrap();
        let expect = match g.below(4) {
            0 => {
                v["process"]["args"] = serde_json::json!([]);
                "args"
            }
            1 => {
                let rel = g.string("abc./", 8);
                v["process"]["cwd"] = format!("x{rel}").into();
                "cwd"
            }
            2 => {
                v["mounts"] = serde_json::json!([{"destination": format!("r{}", g.string("ab/", 6)),
                    "type": "tmpfs", "source": "tmpfs"}]);
                "destination"
            }
            _ => {
                v["root"]["path"] = "".into();
                "root"
            }
        };
        let s: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        let e = crate::spec::validate(&s).expect_err("refused").to_string();
        assert!(e.contains(expect), "case {case}: {e}");
    }
    report("OCI spec (bad fields)", CASES, CASES);
}

#[test]
fn mount_options_keep_the_last_word_and_pass_the_rest_as_data() {
    use nix::mount::MsFlags;
    let mut g = Gen::new(0x5eed_0003);
    for case in 0..CASES {
        let mut opts = Vec::new();
        let mut data = Vec::new();
        for _ in 0..g.below(12) {
            if g.chance(30) {
                // Not an option name: goes to the kernel as data, in order.
                let d = format!("{}={}", g.string("abcxyz_", 6), g.string("0123456789k,", 5));
                data.push(d.clone());
                opts.push(d);
            } else {
                // Any word of the parser's own table (flags and propagation).
                opts.push(g.pick(&crate::mountopt::FLAG_OPTIONS).to_string());
            }
        }
        let o = crate::mountopt::parse(&opts);
        assert_eq!(o.data, data.join(","), "case {case}: {opts:?}");
        let last_ro = opts.iter().rev().find(|x| *x == "ro" || *x == "rw");
        assert_eq!(
            o.flags.contains(MsFlags::MS_RDONLY),
            last_ro.map(String::as_str) == Some("ro"),
            "case {case}: {opts:?}"
        );
        let props = opts
            .iter()
            .filter(|x| crate::mountopt::propagation(x).is_some())
            .count();
        assert_eq!(o.propagation.len(), props, "case {case}: {opts:?}");
        assert_eq!(
            o.is_bind(),
            opts.iter().any(|x| x == "bind" || x == "rbind"),
            "case {case}"
        );
        assert!(!o.remount_flags().contains(MsFlags::MS_BIND));
    }
    // Arbitrary bytes as options never panic.
    for _ in 0..CASES {
        let opts: Vec<String> = (0..g.below(6))
            .map(|_| String::from_utf8_lossy(&g.bytes(12)).into_owned())
            .collect();
        let _ = crate::mountopt::parse(&opts);
    }
    report("mount options", 2 * CASES, 0);
}

#[test]
fn network_config_round_trips_and_refuses_bad_values() {
    let mut g = Gen::new(0x5eed_0004);
    let mut refused = 0;
    for case in 0..CASES {
        let mode = *g.pick(&["none", "bridge"]);
        let bridge = format!("br{}", g.string("abcdefghij0123456789-_", 10));
        let (a, b) = (g.below(256), g.below(256));
        let prefix = 8 + g.below(23);
        let ports: Vec<(u16, u16, &str)> = (0..g.below(4))
            .map(|_| {
                let h = 1 + g.below(65535) as u16;
                let c = 1 + g.below(65535) as u16;
                (h, c, *g.pick(&["tcp", "udp"]))
            })
            .collect();
        let ports_toml: Vec<String> = ports
            .iter()
            .map(|(h, c, p)| format!("\"{h}:{c}/{p}\""))
            .collect();
        let text = format!(
            "[network]\nmode = \"{mode}\"\nbridge = \"{bridge}\"\nsubnet = \"10.{a}.{b}.0/{prefix}\"\n\
             masquerade = true\nports = [{}]\n",
            ports_toml.join(", ")
        );
        let cfg = NetworkConfig::from_toml(&text).unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(cfg.mode == Mode::Bridge, mode == "bridge");
        assert_eq!(cfg.bridge, bridge);
        assert_eq!(cfg.subnet.prefix_len as usize, prefix);
        assert!(cfg
            .subnet
            .contains(std::net::Ipv4Addr::new(10, a as u8, b as u8, 1)));
        assert_eq!(cfg.ports.len(), ports.len());
        for (p, (h, c, proto)) in cfg.ports.iter().zip(&ports) {
            assert_eq!(p.to_string(), format!("{h}:{c}/{proto}"));
        }
        // The same text, mutated: parsed or refused, never a panic.
        let bad = g.mutate(text.as_bytes());
        if NetworkConfig::from_toml(&String::from_utf8_lossy(&bad)).is_err() {
            refused += 1;
        }
        // Values out of range are refused, naming what is wrong.
        let (field, value) = match g.below(4) {
            0 => ("subnet", format!("\"10.0.0.0/{}\"", 31 + g.below(10))),
            1 => ("bridge", format!("\"{}\"", "x".repeat(16 + g.below(8)))),
            2 => ("ports", format!("[\"{}:80\"]", 65536 + g.below(1000))),
            _ => ("mode", format!("\"{}\"", g.string("xyz", 5) + "q")),
        };
        let e = NetworkConfig::from_toml(&format!("[network]\n{field} = {value}\n"))
            .expect_err("refused");
        let words = ["subnet", "interface name", "port", "mode"];
        assert!(
            words.iter().any(|w| e.to_string().contains(w)),
            "case {case}: {field} = {value}: {e}"
        );
        refused += 1;
    }
    report("network config", 2 * CASES, refused);
}

const SYSCALLS: [&str; 10] = [
    "read", "write", "openat", "close", "mmap", "clone3", "ptrace", "mount", "keyctl", "bpf",
];
const ACTIONS: [&str; 5] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_LOG",
];
const OPS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

#[test]
fn seccomp_profiles_compile_or_are_refused() {
    let mut g = Gen::new(0x5eed_0005);
    let mut refused = 0;
    let cases = CASES / 4; // each compile builds a libseccomp filter
    for case in 0..cases {
        let bad_index = g.chance(10);
        let notify_default = g.chance(5);
        let syscalls: Vec<serde_json::Value> = (0..g.below(6))
            .map(|_| {
                let names: Vec<String> = (0..1 + g.below(3))
                    .map(|_| {
                        if g.chance(10) {
                            format!("nosuchcall{}", g.below(100))
                        } else {
                            g.pick(&SYSCALLS).to_string()
                        }
                    })
                    .collect();
                let args: Vec<serde_json::Value> = (0..g.below(2))
                    .map(|_| {
                        serde_json::json!({"index": g.below(6), "value": g.below(1000),
                            "valueTwo": 0, "op": g.pick(&OPS)})
                    })
                    .collect();
                serde_json::json!({"names": names, "action": g.pick(&ACTIONS), "args": args})
            })
            .collect();
        let mut profile = serde_json::json!({
            "defaultAction": if notify_default { "SCMP_ACT_NOTIFY" } else { *g.pick(&ACTIONS) },
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": syscalls,
        });
        if bad_index {
            profile["syscalls"] = serde_json::json!([{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 6 + g.below(10), "value": 1, "op": "SCMP_CMP_EQ"}]}]);
        }
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(profile.clone()).unwrap();
        match crate::seccomp::compile(&s) {
            Ok(filter) => {
                assert!(!bad_index && !notify_default, "case {case}: {profile}");
                assert!(!filter.bpf().unwrap().is_empty(), "case {case}");
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().starts_with("seccomp"), "case {case}: {e}");
                // Only what the generator made invalid is refused.
                assert!(bad_index || notify_default, "case {case}: {profile}: {e}");
            }
        }
        // A mutated profile: parsed and compiled or refused, never a panic.
        let bytes = g.mutate(&serde_json::to_vec(&profile).unwrap());
        match serde_json::from_slice::<oci_spec::runtime::LinuxSeccomp>(&bytes) {
            Ok(s) => {
                if crate::seccomp::compile(&s).is_err() {
                    refused += 1;
                }
            }
            Err(_) => refused += 1,
        }
    }
    report("seccomp profiles", 2 * cases, refused);
}

#[test]
fn tenant_file_limits_parse_or_refuse() {
    let mut g = Gen::new(0x5eed_0006);
    let mut refused = 0;
    for case in 0..CASES {
        let n = g.next_u64() >> g.below(64);
        let text = format!("[tenant_files]\nmax_bytes = {}\n", n as i64);
        match crate::fs::tenant_file::Limits::from_toml(&text) {
            Ok(l) => assert!(
                l.max_bytes == n && n > 0 && n <= i64::MAX as u64,
                "case {case}"
            ),
            Err(e) => {
                refused += 1;
                assert!(n == 0 || n > i64::MAX as u64, "case {case}: {n}: {e}");
            }
        }
        let bad = g.mutate(text.as_bytes());
        let _ = crate::fs::tenant_file::Limits::from_toml(&String::from_utf8_lossy(&bad));
    }
    report("tenant_files limits", 2 * CASES, refused);
}
