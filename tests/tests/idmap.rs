//! Idmapped rootfs layers: `ctr run --uidmap/--gidmap --remap-labels` asks containerd 2.x's
//! overlayfs snapshotter for a rootfs with `uidmap=`/`gidmap=` options (what a user-namespaced
//! CRI pod gets) instead of a chowned copy. amphi turns them into idmapped lower layers: inside
//! the user namespace the image's files keep their owners, and the overlay's lower layers are
//! the staged idmapped clones.

use amphi_tests::{run_case, Case, Runtime, Version};
use anyhow::Result;

fn idmapped_layers(c: &mut Case) -> Result<()> {
    let id = c.id("remap");
    let map = [
        "--uidmap",
        "0:200000:65536",
        "--gidmap",
        "0:200000:65536",
        "--remap-labels",
    ];
    let script = "cat /proc/self/uid_map; stat -c image=%u:%g /bin/busybox; \
                  touch /made && stat -c new=%u:%g /made; \
                  awk '$5 == \"/\" { print \"root-mount\", $0 }' /proc/self/mountinfo";
    let out = c.run_rm(&map, &id, &["sh", "-c", script])?.ok()?;
    let text = &out.stdout;
    let map: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    anyhow::ensure!(map == ["0", "200000", "65536"], "uid_map:\n{text}");
    for want in ["image=0:0", "new=0:0"] {
        anyhow::ensure!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
    }
    if c.runtime == Runtime::Amphi {
        let root = text
            .lines()
            .find(|l| l.starts_with("root-mount"))
            .unwrap_or("");
        anyhow::ensure!(
            root.contains("idmapped-layers"),
            "the rootfs overlay does not use amphi's idmapped lower layers: {root}"
        );
    }
    Ok(())
}

/// containerd 1.6's ctr has no `--remap-labels`, and 1.7's overlayfs snapshotter chowns a copy
/// rather than passing `uidmap=` options: 2.1 only.
mod idmapped_rootfs_layers {
    use super::*;
    #[test]
    fn containerd_2_1() {
        amphi_tests::require_root();
        run_case(
            Version::V2_1,
            Runtime::Amphi,
            "idmapped_rootfs_layers",
            idmapped_layers,
        )
    }
    mod runc {
        use super::*;
        #[test]
        #[ignore = "validates the test against runc; run with --ignored"]
        fn containerd_2_1() {
            amphi_tests::require_root();
            run_case(
                Version::V2_1,
                Runtime::Runc,
                "idmapped_rootfs_layers",
                idmapped_layers,
            )
        }
    }
}
