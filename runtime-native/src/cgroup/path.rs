//! Where a container's cgroup lives: `linux.cgroupsPath` as a path (`/default/ctr-id`) or in
//! the systemd form `slice:prefix:name` (`slice/prefix-name.scope` in the cgroupfs tree),
//! turned into the path below every hierarchy root.

/// A `linux.cgroupsPath` that names no cgroup.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPath {
    #[error("invalid slice name {slice:?}: must end in .slice")]
    NotASlice { slice: String },
    #[error("invalid slice name {slice:?}")]
    SliceName { slice: String },
    #[error("invalid systemd cgroupsPath {path:?}: empty name")]
    EmptyUnitName { path: String },
    #[error("invalid cgroupsPath {path:?}")]
    Empty { path: String },
}

/// `a-b-c.slice` -> `a.slice/a-b.slice/a-b-c.slice`; `-.slice` -> ``.
pub(super) fn expand_slice(slice: &str) -> Result<String, InvalidPath> {
    let name = slice
        .strip_suffix(".slice")
        .ok_or_else(|| InvalidPath::NotASlice {
            slice: slice.to_string(),
        })?;
    if name == "-" {
        return Ok(String::new());
    }
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(InvalidPath::SliceName {
            slice: slice.to_string(),
        });
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// The cgroup path below the hierarchy roots for `linux.cgroupsPath`.
pub(super) fn rel_path(
    id: &str,
    cgroups_path: Option<&std::path::Path>,
) -> Result<String, InvalidPath> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if raw.is_empty() {
        return Ok(format!("amphi/{id}"));
    }
    let parts: Vec<&str> = raw.split(':').collect();
    if parts.len() == 3 && !raw.starts_with('/') {
        // systemd: slice:prefix:name
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        let (prefix, name) = (parts[1], parts[2]);
        if name.is_empty() {
            return Err(InvalidPath::EmptyUnitName { path: raw });
        }
        let base = expand_slice(slice)?;
        let unit = if name.ends_with(".slice") {
            return expand_slice(name);
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        return Ok(if base.is_empty() {
            unit
        } else {
            format!("{base}/{unit}")
        });
    }
    let mut comps: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    if comps.is_empty() {
        return Err(InvalidPath::Empty { path: raw });
    }
    Ok(comps.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn paths() {
        assert_eq!(rel_path("c1", None).unwrap(), "amphi/c1");
        assert_eq!(
            rel_path("c1", Some(Path::new("/default/c1"))).unwrap(),
            "default/c1"
        );
        assert_eq!(rel_path("c1", Some(Path::new("/a/../../b"))).unwrap(), "b");
        assert_eq!(
            rel_path("c1", Some(Path::new("system.slice:docker:abc"))).unwrap(),
            "system.slice/docker-abc.scope"
        );
        assert_eq!(
            rel_path(
                "c1",
                Some(Path::new("kubepods-besteffort-pod12.slice:cri-containerd:abc"))
            )
            .unwrap(),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            rel_path("c1", Some(Path::new(":amphi:x"))).unwrap(),
            "system.slice/amphi-x.scope"
        );
        assert_eq!(
            rel_path("c1", Some(Path::new("-.slice::x"))).unwrap(),
            "x.scope"
        );
        assert!(expand_slice("a--b.slice").is_err());
        assert!(expand_slice("nosuffix").is_err());
    }
}
