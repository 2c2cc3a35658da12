//! The runtime's OCI features (runtime-spec `features.md`, what `runc features` prints): which
//! spec versions, hooks, mount options, namespaces, capabilities, cgroup drivers, seccomp
//! actions and flags, and mount extensions this runtime implements.
//!
//! containerd reads them from the shim's `-info` reply: its CRI reports a runtime handler with
//! recursive read-only mounts only when `mountOptions` has `rro`, user namespaces only with
//! `user` and `mountExtensions.idmap`, and its task manager refuses idmapped volume mounts
//! without that extension. So every list is built from the tables the runtime itself parses
//! with, and only what is really implemented is claimed.

use std::collections::HashMap;

use oci_spec::runtime::{
    ApparmorBuilder, CgroupBuilder, Features, FeaturesBuilder, IDMapBuilder, IntelRdtBuilder,
    LinuxFeatureBuilder, LinuxNamespaceType, MountExtensionsBuilder, SeccompBuilder,
    SelinuxBuilder,
};

use crate::{child, hooks, mount_attr, mountopt, seccomp};

/// Annotations whose value changes what the runtime sets up (the `io.amphi.network.*` keys
/// publish ports and choose the network mode), as the features' prefix form lists them.
const UNSAFE_ANNOTATION_PREFIXES: [&str; 1] = ["io.amphi.network."];

/// Annotation with the version of libseccomp the runtime runs with (as runc names it).
pub const LIBSECCOMP_VERSION_ANNOTATION: &str = "io.github.seccomp.libseccomp.version";

/// The features of this runtime; `annotations` (the caller's version...) are added to the
/// libseccomp version.
pub fn features(mut annotations: HashMap<String, String>) -> Features {
    if let Ok(v) = libseccomp::ScmpVersion::current() {
        annotations.insert(
            LIBSECCOMP_VERSION_ANNOTATION.to_string(),
            format!("{}.{}.{}", v.major, v.minor, v.micro),
        );
    }
    let mut mount_options: Vec<String> = mountopt::FLAG_OPTIONS
        .iter()
        .copied()
        .chain(mount_attr::recursive_option_names())
        .map(String::from)
        .collect();
    mount_options.sort();

    let namespaces = vec![
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Time,
    ];
    let capabilities = child::CAP_NAMES
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect::<Vec<_>>();

    let seccomp = SeccompBuilder::default()
        .enabled(true)
        .actions(seccomp::ACTIONS.to_vec())
        .operators(names(seccomp::OPERATORS))
        .archs(seccomp::ARCHS.to_vec())
        .known_flags(names(seccomp::FLAGS))
        .supported_flags(names(seccomp::supported_flags()))
        .build()
        .expect("every field has a value");

    let linux = LinuxFeatureBuilder::default()
        .namespaces(namespaces)
        .capabilities(capabilities)
        // The systemd driver's `slice:prefix:name` cgroupsPath is understood, but no systemd
        // unit is made for it (the cgroup is created through cgroupfs), so it is not claimed.
        .cgroup(
            CgroupBuilder::default()
                .v1(true)
                .v2(true)
                .systemd(false)
                .systemd_user(false)
                .rdma(false)
                .build()
                .expect("every field has a value"),
        )
        .seccomp(seccomp)
        .apparmor(
            ApparmorBuilder::default()
                .enabled(false)
                .build()
                .expect("every field has a value"),
        )
        .selinux(
            SelinuxBuilder::default()
                .enabled(false)
                .build()
                .expect("every field has a value"),
        )
        .intel_rdt(
            IntelRdtBuilder::default()
                .enabled(false)
                .build()
                .expect("every field has a value"),
        )
        .mount_extensions(
            MountExtensionsBuilder::default()
                .idmap(
                    IDMapBuilder::default()
                        .enabled(IDMAP_MOUNTS)
                        .build()
                        .expect("every field has a value"),
                )
                .build()
                .expect("every field has a value"),
        )
        .build()
        .expect("every field has a value");

    FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max(oci_spec::runtime::VERSION)
        .hooks(hooks::KINDS.map(String::from).to_vec())
        .mount_options(mount_options)
        .linux(linux)
        .annotations(annotations)
        .potentially_unsafe_config_annotations(
            UNSAFE_ANNOTATION_PREFIXES.map(String::from).to_vec(),
        )
        .build()
        .expect("every field has a value")
}

/// Spec bind mounts with `uidMappings`/`gidMappings` (or `idmap`/`ridmap`) become idmapped
/// mounts (`crate::idmap::StagedVolumes`, staged by the caller before the clone).
const IDMAP_MOUNTS: bool = true;

/// The spec's names of `items` (their `Display` is the spec's spelling).
fn names<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_what_the_runtime_parses() {
        let f = features(HashMap::new());
        let json = serde_json::to_value(&f).unwrap();
        let opts = json["mountOptions"].as_array().unwrap();
        for o in ["rro", "rbind", "rslave", "ro", "nosuid"] {
            assert!(opts.iter().any(|v| v == o), "{o} missing: {opts:?}");
        }
        // Every claimed option is one the parser knows (not passed on as filesystem data).
        for o in opts {
            let p = mountopt::parse(&[o.as_str().unwrap().to_string()]);
            assert!(p.data.is_empty(), "{o} would be filesystem data");
        }
        let linux = &json["linux"];
        let nss = linux["namespaces"].as_array().unwrap();
        assert!(nss.iter().any(|n| n == "user") && nss.iter().any(|n| n == "mount"));
        let caps = linux["capabilities"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        for c in caps {
            assert!(
                child::limits::cap_number(c.as_str().unwrap()).is_some(),
                "{c}"
            );
        }
        assert_eq!(linux["cgroup"]["v1"], true);
        assert_eq!(linux["cgroup"]["v2"], true);
        assert_eq!(linux["seccomp"]["enabled"], true);
        let actions = linux["seccomp"]["actions"].as_array().unwrap();
        assert!(
            actions.iter().any(|a| a == "SCMP_ACT_NOTIFY"),
            "{actions:?}"
        );
        let ops = linux["seccomp"]["operators"].as_array().unwrap();
        assert!(ops.iter().any(|o| o == "SCMP_CMP_MASKED_EQ"), "{ops:?}");
        let archs = linux["seccomp"]["archs"].as_array().unwrap();
        assert!(archs.iter().any(|a| a == "SCMP_ARCH_X86_64"), "{archs:?}");
        let known = linux["seccomp"]["knownFlags"].as_array().unwrap();
        assert!(known.iter().any(|f| f == "SECCOMP_FILTER_FLAG_LOG"));
        for f in linux["seccomp"]["supportedFlags"].as_array().unwrap() {
            assert!(known.contains(f), "{f} supported but not known");
        }
        assert_eq!(linux["apparmor"]["enabled"], false);
        assert_eq!(linux["selinux"]["enabled"], false);
        assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], IDMAP_MOUNTS);
        let hooks = json["hooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 6);
        assert_eq!(json["ociVersionMin"], "1.0.0");
        assert!(json["annotations"][LIBSECCOMP_VERSION_ANNOTATION].is_string());
        assert_eq!(
            json["potentiallyUnsafeConfigAnnotations"],
            serde_json::json!(["io.amphi.network."])
        );
    }
}
