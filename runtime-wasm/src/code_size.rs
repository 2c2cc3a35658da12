//! The largest function body of a module or component, read from its binary without parsing
//! the code. Cranelift's memory while compiling one function grows with that function's size
//! (measured: about 100 bytes per byte of body, ~400 MB for one 4 MiB function), and the shim
//! compiles outside the pod's cgroup, so the shim refuses bodies over a limit before compiling
//! (see DESIGN.md, "Compiles are bounded in number and size").

use crate::{Error, Result};

fn uleb(b: &[u8], at: &mut usize) -> Option<usize> {
    let mut v: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return usize::try_from(v).ok();
        }
    }
    None
}

/// The size of the largest function body in `bytes` (a binary core module or component,
/// nested modules included), or `None` when it has none. Malformed input gives what was found
/// before the damage: the compiler reports the damage itself.
pub fn largest_function(bytes: &[u8]) -> Option<usize> {
    let mut largest = None;
    scan(bytes, 0, &mut largest);
    largest
}

fn scan(bytes: &[u8], depth: usize, largest: &mut Option<usize>) {
    if depth > 16 || bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return;
    }
    let component = bytes[4..8] == [0x0d, 0x00, 0x01, 0x00];
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let Some(size) = uleb(bytes, &mut at) else {
            return;
        };
        let Some(section) = bytes.get(at..at.saturating_add(size)) else {
            return;
        };
        at += size;
        match (component, id) {
            // A component's core module (1) and nested component (4) sections hold whole
            // binaries.
            (true, 1) | (true, 4) => scan(section, depth + 1, largest),
            // A core module's code section: a count, then size-prefixed bodies.
            (false, 10) => {
                let mut p = 0;
                let Some(count) = uleb(section, &mut p) else {
                    return;
                };
                for _ in 0..count {
                    let Some(body) = uleb(section, &mut p) else {
                        return;
                    };
                    *largest = Some(largest.map_or(body, |l: usize| l.max(body)));
                    p = p.saturating_add(body);
                    if p > section.len() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Refuses a module whose largest function body is over `max` bytes, naming both. `.wat` text
/// (a development format, compiled to binary inside the compiler) is refused above `max` bytes
/// in all, which bounds every function in it too.
pub fn check_function_sizes(name: &str, bytes: &[u8], max: usize) -> Result<()> {
    let too_big = |what: String| Error::InvalidModule {
        module: name.to_string(),
        reason: format!(
            "{what}, more than the limit of {max} bytes on what the shim compiles \
             (tenant_files.max_function_bytes)"
        ),
    };
    if !bytes.starts_with(b"\0asm") {
        if bytes.len() > max {
            return Err(too_big(format!("text module of {} bytes", bytes.len())));
        }
        return Ok(());
    }
    match largest_function(bytes) {
        Some(n) if n > max => Err(too_big(format!("a function body of {n} bytes"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                return out;
            }
        }
    }

    fn section(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![id];
        s.extend(leb(payload.len()));
        s.extend_from_slice(payload);
        s
    }

    /// A core module with bodies of the given sizes (type, function and code sections).
    fn module(bodies: &[usize]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend(section(1, &[1, 0x60, 0, 0]));
        let mut funcs = leb(bodies.len());
        funcs.extend(std::iter::repeat_n(0, bodies.len()));
        m.extend(section(3, &funcs));
        let mut code = leb(bodies.len());
        for &n in bodies {
            code.extend(leb(n));
            code.extend(std::iter::repeat_n(0x01, n)); // the scanner reads only the sizes
        }
        m.extend(section(10, &code));
        m
    }

    #[test]
    fn finds_the_largest_body() {
        assert_eq!(largest_function(&module(&[10, 300, 20])), Some(300));
        assert_eq!(largest_function(&module(&[])), None);
        assert_eq!(largest_function(b"\0asm\x01\0\0\0"), None);
    }

    #[test]
    fn looks_into_a_components_core_modules() {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        c.extend(section(1, &module(&[5])));
        c.extend(section(1, &module(&[5000, 7])));
        assert_eq!(largest_function(&c), Some(5000));
    }

    #[test]
    fn refuses_an_over_size_body_by_size_and_limit() {
        let e = check_function_sizes("/app.wasm", &module(&[10, 2000]), 1024)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/app.wasm") && e.contains("2000 bytes") && e.contains("1024"),
            "{e}"
        );
        check_function_sizes("/app.wasm", &module(&[10, 1024]), 1024).unwrap();
        // Text is bounded as a whole.
        let text = format!("(module (func {}))", "nop ".repeat(400));
        assert!(check_function_sizes("a.wat", text.as_bytes(), 1024).is_err());
        check_function_sizes("a.wat", b"(module)", 1024).unwrap();
    }

    #[test]
    fn malformed_input_never_panics() {
        let good = module(&[10, 300]);
        for cut in 0..good.len() {
            let _ = largest_function(&good[..cut]);
        }
        let mut huge_count = b"\0asm\x01\0\0\0".to_vec();
        huge_count.extend(section(10, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x05]));
        let _ = largest_function(&huge_count);
    }
}
