//! Tries to leave the WASI sandbox and reports each attempt; reads the files it should see.
//!
//! `sandbox-probe [deny:PATH...] [FILE...]`: every escape attempt (the built-in ones and each
//! `deny:PATH`, read as a file or listed as a directory) prints `DENIED <name>: <error>` or
//! `REACHED <name>: <what it got>`; every FILE (the image's own files, a volume's) prints
//! `READ <file> = <first line>` or `UNREADABLE <file>: <error>`, and `..` from its directory
//! is tried too; a FILE given as `rw:PATH` is written first (a tmpfs must be writable);
//! `/proc` is listed as `PROC <entries>`; the last line is `probe done`.
//! `sandbox-probe wait`: prints `probe waiting`, then sleeps until it is killed.
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::time::Duration;

fn report(name: &str, result: std::io::Result<String>) {
    match result {
        Ok(got) => println!("REACHED {name}: {got}"),
        Err(e) => println!("DENIED {name}: {e}"),
    }
}

fn read_some(path: &str) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf)?;
    Ok(format!("{n} bytes"))
}

fn open_rw(path: &str) -> std::io::Result<String> {
    OpenOptions::new().read(true).write(true).open(path)?;
    Ok("opened read-write".into())
}

fn list(path: &str) -> std::io::Result<String> {
    let n = fs::read_dir(path)?.count();
    if n == 0 {
        // An empty directory of the image is not the kernel's tree.
        return Err(std::io::Error::other("empty directory"));
    }
    Ok(format!("{n} entries"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("wait") {
        println!("probe waiting");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    report("/proc/self/mem rw", open_rw("/proc/self/mem"));
    report("/proc/1/mem rw", open_rw("/proc/1/mem"));
    report("/proc/1/mem", read_some("/proc/1/mem"));
    report("/proc/self/maps", read_some("/proc/self/maps"));
    report("/proc/self/task", list("/proc/self/task"));
    report("/proc/sys", list("/proc/sys"));
    report("/sys", list("/sys"));
    report("/sys/fs/cgroup", list("/sys/fs/cgroup"));
    report("/dev/kmsg", read_some("/dev/kmsg"));
    report("/dev/pts", list("/dev/pts"));
    report("/dev/mqueue", list("/dev/mqueue"));
    report("/../proc/self/maps", read_some("/../proc/self/maps"));
    report("/../../proc/1/mem rw", open_rw("/../../proc/1/mem"));
    report("/.. listing", list("/../proc"));
    report("symlink /proc-mem", open_rw("/proc-mem"));
    report("symlink /proc-up", read_some("/proc-up/self/maps"));
    let (denials, files): (Vec<&String>, Vec<&String>) =
        args.iter().partition(|a| a.starts_with("deny:"));
    for d in denials {
        let p = &d["deny:".len()..];
        report(p, read_some(p).or_else(|e| list(p).map_err(|_| e)));
    }
    for a in &files {
        let a = a.strip_prefix("rw:").unwrap_or(a);
        // `..` from a volume's directory must not climb into the runtime's mounts either.
        let up = format!("{}/../proc/self/maps", a.rsplit_once('/').map_or("", |(d, _)| d));
        report(&format!("{up} (from a volume)"), read_some(&up));
    }
    match fs::read_dir("/proc") {
        Ok(rd) => {
            let names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            println!("PROC {}", names.join(" "));
        }
        Err(e) => println!("PROC error: {e}"),
    }
    for f in &files {
        let (f, write) = match f.strip_prefix("rw:") {
            Some(p) => (p, true),
            None => (f.as_str(), false),
        };
        if write {
            if let Err(e) = fs::write(f, "written by the guest\n") {
                println!("UNWRITABLE {f}: {e}");
            }
        }
        match fs::read_to_string(f) {
            Ok(s) => println!("READ {f} = {}", s.lines().next().unwrap_or("")),
            Err(e) => println!("UNREADABLE {f}: {e}"),
        }
    }
    println!("probe done");
}
