//! User namespaces through containerd: `ctr run --uidmap/--gidmap` gives the spec a new user
//! namespace with mappings (ctr chowns a copy of the snapshot to the mapped ids). Inside, the
//! process is root of its namespace and sees the mapping; the host sees the mapped uid.

use amphi_tests::{e2e, e2e_runc, Case};
use anyhow::Result;

fn mapped_root(c: &mut Case) -> Result<()> {
    let id = c.id("uns");
    let map = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let script = "cat /proc/self/uid_map; echo uid=$(id -u) gid=$(id -g); \
                  touch /tmp/w && echo writable; sleep 2";
    let bg = c.run_bg(&map, &id, &["sh", "-c", script])?;
    let (pid, _) = c
        .task(&id)?
        .ok_or_else(|| anyhow::anyhow!("task {id} not listed"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let out = bg.wait(std::time::Duration::from_secs(30))?.ok()?;
    let host_uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    anyhow::ensure!(
        host_uid.split_whitespace().nth(1) == Some("100000"),
        "host view of the container process: {host_uid:?}"
    );
    let first = amphi_tests::procs::first_id_mapping(&out.stdout);
    anyhow::ensure!(
        first == ["0", "100000", "65536"],
        "uid_map: {}",
        out.describe()
    );
    anyhow::ensure!(out.stdout.contains("uid=0 gid=0"), "{}", out.describe());
    // The remapped snapshot belongs to the container's root.
    anyhow::ensure!(out.stdout.contains("writable"), "{}", out.describe());
    Ok(())
}

e2e!(userns_mapped_root, mapped_root);
e2e_runc!(compare_runc_userns, mapped_root);
