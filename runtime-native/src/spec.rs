//! Loading and validating `config.json`.

use std::path::{Path, PathBuf};

use crate::{Error, PathIoError, Result};

/// The spec's `linux.namespaces`, borrowed (empty when unset): the one way the crate reads
/// the namespace list.
pub fn namespaces(spec: &oci_spec::runtime::Spec) -> &[oci_spec::runtime::LinuxNamespace] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[])
}

/// Reads `bundle/config.json`; an invalid spec is an error naming the file and the problem.
pub fn load(bundle: &Path) -> Result<oci_spec::runtime::Spec> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(PathIoError::on("read", &path))?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&data).map_err(|source| Error::SpecJson {
            path: path.clone(),
            source,
        })?;
    validate(&spec).map_err(|source| Error::InvalidSpec { path, source })?;
    Ok(spec)
}

/// The rootfs directory the spec names: `root.path`, relative to the bundle unless absolute;
/// `bundle/rootfs` when the spec has no root. The one place every caller (the shim's Create,
/// exec and network, amphi-oci) takes it from.
pub fn root_path(spec: &oci_spec::runtime::Spec, bundle: &Path) -> PathBuf {
    match spec.root() {
        Some(r) if r.path().is_absolute() => r.path().clone(),
        Some(r) => bundle.join(r.path()),
        None => bundle.join("rootfs"),
    }
}

/// What makes a spec unusable, in the spec's terms.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("root is missing")]
    NoRoot,
    #[error("root.path is empty")]
    EmptyRoot,
    #[error("process is missing")]
    NoProcess,
    #[error("process.args must not be empty")]
    NoArgs,
    #[error("process.cwd {:?} is not an absolute path", cwd.display())]
    RelativeCwd { cwd: PathBuf },
    /// `linux.namespaces` and the id mappings.
    #[error(transparent)]
    Namespaces(#[from] crate::userns::Error),
    #[error("unable to restrict sys entries without a private MNT namespace")]
    RestrictWithoutMountNs,
    #[error(
        "linux.namespaces has no mount namespace: the container would only be chrooted, \
         which a process with CAP_SYS_CHROOT can leave; add {{\"type\": \"mount\"}}"
    )]
    NoMountNs,
    #[error("mount destination {:?} is not an absolute path", dest.display())]
    RelativeMountDest { dest: PathBuf },
}

/// Basic checks of a container spec: a root, and a process with args.
pub fn validate(spec: &oci_spec::runtime::Spec) -> std::result::Result<(), Invalid> {
    match spec.root() {
        None => return Err(Invalid::NoRoot),
        Some(r) if r.path().as_os_str().is_empty() => return Err(Invalid::EmptyRoot),
        _ => {}
    }
    let Some(p) = spec.process() else {
        return Err(Invalid::NoProcess);
    };
    if p.args().as_ref().map(|a| a.is_empty()).unwrap_or(true) {
        return Err(Invalid::NoArgs);
    }
    if !p.cwd().as_os_str().is_empty() && !p.cwd().is_absolute() {
        return Err(Invalid::RelativeCwd {
            cwd: p.cwd().clone(),
        });
    }
    crate::userns::validate_namespaces(spec)?;
    crate::userns::validate(spec)?;
    mount_namespace(spec)?;
    if spec.linux().is_some() {
        if let Some(m) = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| !m.destination().is_absolute())
        {
            return Err(Invalid::RelativeMountDest {
                dest: m.destination().clone(),
            });
        }
    }
    Ok(())
}

/// A container needs a mount namespace. runc refuses masked or read-only paths without one
/// (in its words below) and otherwise only chroots; amphi refuses every spec without one,
/// because a chroot can be left by any process with CAP_SYS_CHROOT (in the default set) and
/// the spec's mounts would be made in the shim's own mount namespace. A mount namespace joined
/// by path is the spec's choice and stays allowed.
fn mount_namespace(spec: &oci_spec::runtime::Spec) -> std::result::Result<(), Invalid> {
    let linux = spec.linux().clone().unwrap_or_default();
    let has = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount);
    if has {
        return Ok(());
    }
    let restricts = [linux.masked_paths(), linux.readonly_paths()]
        .into_iter()
        .any(|p| p.as_ref().is_some_and(|p| !p.is_empty()));
    if restricts {
        return Err(Invalid::RestrictWithoutMountNs);
    }
    Err(Invalid::NoMountNs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_path_is_relative_to_the_bundle_unless_absolute() {
        let bundle = Path::new("/run/b");
        let mut spec = oci_spec::runtime::Spec::default();
        let mut root = oci_spec::runtime::Root::default();
        root.set_path("merged".into());
        spec.set_root(Some(root.clone()));
        assert_eq!(root_path(&spec, bundle), Path::new("/run/b/merged"));
        root.set_path("/srv/root".into());
        spec.set_root(Some(root));
        assert_eq!(root_path(&spec, bundle), Path::new("/srv/root"));
        spec.set_root(None);
        assert_eq!(root_path(&spec, bundle), Path::new("/run/b/rootfs"));
    }

    #[test]
    fn loads_and_validates() {
        let d = tempfile::tempdir().unwrap();
        let err = load(d.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");

        std::fs::write(d.path().join("config.json"), "{\"ociVersion\": 1}").unwrap();
        let err = load(d.path()).unwrap_err().to_string();
        assert!(err.starts_with("invalid spec "), "{err}");
        assert!(err.contains("config.json"), "{err}");

        let spec = oci_spec::runtime::Spec::default();
        std::fs::write(
            d.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        load(d.path()).unwrap();

        let mut spec = oci_spec::runtime::Spec::default();
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(vec![]));
        spec.set_process(Some(p));
        assert!(validate(&spec).unwrap_err().to_string().contains("args"));
        spec.set_process(None);
        assert!(validate(&spec).unwrap_err().to_string().contains("process"));
    }

    #[test]
    fn a_spec_without_a_mount_namespace_is_refused() {
        let without = |masked: bool| {
            let mut spec = oci_spec::runtime::Spec::default();
            let mut l = spec.linux().clone().unwrap();
            let nss = l.namespaces().clone().unwrap_or_default();
            let nss = nss
                .into_iter()
                .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Mount)
                .collect();
            l.set_namespaces(Some(nss));
            if !masked {
                l.set_masked_paths(None);
                l.set_readonly_paths(Some(vec![]));
            }
            spec.set_linux(Some(l));
            validate(&spec).unwrap_err().to_string()
        };
        // runc's words where runc refuses it too.
        assert_eq!(
            without(true),
            "unable to restrict sys entries without a private MNT namespace"
        );
        assert!(
            without(false).contains("no mount namespace"),
            "{}",
            without(false)
        );
        // Joined by path: allowed.
        let mut spec = oci_spec::runtime::Spec::default();
        crate::testgen::join_namespace(
            &mut spec,
            oci_spec::runtime::LinuxNamespaceType::Mount,
            "/proc/1/ns/mnt".as_ref(),
        );
        validate(&spec).unwrap();
    }
}
