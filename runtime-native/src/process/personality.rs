//! `linux.personality`: the execution domain of the container process (`personality(2)`).

use oci_spec::runtime::{LinuxPersonalityDomain, Spec};

/// `PER_LINUX` and `PER_LINUX32` from <linux/personality.h>.
const PER_LINUX: libc::c_ulong = 0x0000;
const PER_LINUX32: libc::c_ulong = 0x0008;

/// A personality the spec asks for that cannot be set.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("personality flags {flags:?} are not supported")]
    Flags { flags: Vec<String> },
    #[error("set personality {value:#x}: {source}")]
    Set {
        value: libc::c_ulong,
        #[source]
        source: std::io::Error,
    },
}

/// The `personality(2)` value for the spec, if it sets one. Flags are not part of the OCI
/// spec's defined values and are refused, as runc does.
pub(crate) fn persona(spec: &Spec) -> Result<Option<libc::c_ulong>, Error> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(None);
    };
    if let Some(flags) = p.flags().as_ref().filter(|f| !f.is_empty()) {
        return Err(Error::Flags {
            flags: flags.clone(),
        });
    }
    Ok(Some(match p.domain() {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    }))
}

/// Sets the spec's personality in the calling process (inherited across execve).
pub(crate) fn apply(spec: &Spec) -> Result<(), Error> {
    let Some(value) = persona(spec)? else {
        return Ok(());
    };
    // SAFETY: personality(2) with an integer argument.
    if unsafe { libc::personality(value) } == -1 {
        let source = std::io::Error::last_os_error();
        return Err(Error::Set { value, source });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let mut spec = Spec::default();
        assert_eq!(persona(&spec).unwrap(), None);
        let p: oci_spec::runtime::LinuxPersonality =
            serde_json::from_str(r#"{"domain":"LINUX32"}"#).unwrap();
        let mut l = spec.linux().clone().unwrap();
        l.set_personality(Some(p));
        spec.set_linux(Some(l.clone()));
        assert_eq!(persona(&spec).unwrap(), Some(PER_LINUX32));
        let p: oci_spec::runtime::LinuxPersonality =
            serde_json::from_str(r#"{"domain":"LINUX","flags":["x"]}"#).unwrap();
        l.set_personality(Some(p));
        spec.set_linux(Some(l));
        assert!(persona(&spec).unwrap_err().to_string().contains("flags"));
        assert!(serde_json::from_str::<oci_spec::runtime::LinuxPersonality>(
            r#"{"domain":"LINUX64"}"#
        )
        .is_err());
    }
}
