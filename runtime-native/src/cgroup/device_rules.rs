//! The device rules every container gets after its spec's own (runc's allowed defaults), on
//! v1 as `devices.allow` lines and on v2 as rules of the cgroup's eBPF device program.

/// Device rules every container needs (runc's allowed defaults): mknod of any node (opening
/// one is still decided by the rules), then the standard character devices.
pub(super) const DEFAULT_DEVICE_RULES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// One of [`DEFAULT_DEVICE_RULES`] (`c 1:3 rwm`, `c 136:* rwm`) as an allowing OCI rule.
pub(super) fn device_rule(line: &str) -> oci_spec::runtime::LinuxDeviceCgroup {
    use oci_spec::runtime::LinuxDeviceType;
    let mut it = line.split_whitespace();
    let typ = match it.next() {
        Some("b") => LinuxDeviceType::B,
        Some("c") => LinuxDeviceType::C,
        _ => LinuxDeviceType::A,
    };
    let (major, minor) = it
        .next()
        .and_then(|n| n.split_once(':'))
        .unwrap_or(("*", "*"));
    let mut r = oci_spec::runtime::LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(typ));
    r.set_major(major.parse().ok());
    r.set_minor(minor.parse().ok());
    r.set_access(Some(it.next().unwrap_or("rwm").to_string()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_device_rules_parse() {
        // mknod of anything, as runc allows it (open is decided by the other rules).
        let r = device_rule("b *:* m");
        assert_eq!(r.typ(), Some(oci_spec::runtime::LinuxDeviceType::B));
        assert_eq!((r.major(), r.minor()), (None, None));
        assert_eq!(r.access().as_deref(), Some("m"));
        let r = device_rule("c 136:* rwm");
        assert!(r.allow());
        assert_eq!(r.typ(), Some(oci_spec::runtime::LinuxDeviceType::C));
        assert_eq!((r.major(), r.minor()), (Some(136), None));
        assert_eq!(r.access().as_deref(), Some("rwm"));
        let r = device_rule("c 10:200 rwm");
        assert_eq!((r.major(), r.minor()), (Some(10), Some(200)));
    }
}
