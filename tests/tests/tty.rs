//! `ctr run -t`: a pty inside the container, and resizes reaching it.

use amphi_tests::pty::Pty;
use amphi_tests::{e2e, Case};
use anyhow::Result;
use std::time::{Duration, Instant};

fn tty(c: &mut Case) -> Result<()> {
    let id = c.id("tty");
    // ctr sets the container's console size just after start, so `stty size` is asked on
    // each Enter until the expected size shows.
    let script = "tty; while read x; do stty size; done; echo bye";
    let mut p = Pty::spawn(
        c.run_command(&["--rm", "-t"], &[], &id, &["sh", "-c", script]),
        24,
        80,
    )?;
    p.expect("/dev/pts/", Duration::from_secs(30))?;
    press_enter_until(&mut p, "24 80")?;
    let out = p.output();
    anyhow::ensure!(
        out.lines().any(|l| l
            .trim()
            .strip_prefix("/dev/pts/")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))),
        "`tty` did not print /dev/pts/N:\n{out}"
    );
    p.resize(33, 101)?;
    press_enter_until(&mut p, "33 101")?;
    p.write("\x04")?; // EOF ends the loop
    p.expect("bye", Duration::from_secs(10))?;
    let code = p.wait(Duration::from_secs(30))?;
    anyhow::ensure!(
        code == Some(0),
        "ctr run -t exited {code:?}; output:\n{}",
        p.output()
    );
    Ok(())
}

fn press_enter_until(p: &mut Pty, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !p.output().contains(needle) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{needle:?} never printed by `stty size`; output:\n{}",
            p.output()
        );
        p.write("\r")?;
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

e2e!(run_tty, tty);
