//! Unit tests of the device program: rule semantics (last match wins, per-bit access,
//! wildcards) checked by running the emitted instructions in a small interpreter, and their
//! kernel layout.

use super::*;
use oci_spec::runtime::LinuxDeviceCgroupBuilder;

fn r(
    allow: bool,
    typ: &str,
    major: Option<i64>,
    minor: Option<i64>,
    acc: &str,
) -> LinuxDeviceCgroup {
    let t = match typ {
        "a" => LinuxDeviceType::A,
        "b" => LinuxDeviceType::B,
        "c" => LinuxDeviceType::C,
        "u" => LinuxDeviceType::U,
        _ => LinuxDeviceType::P,
    };
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(t)
        .access(acc);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap()
}

/// Runs the program the way the kernel would, for the instructions this module emits.
fn run(insns: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u32 {
    let ctx = [(access << 16) | typ, major, minor];
    let mut reg = [0u64; 11];
    let mut pc = 0usize;
    for _ in 0..100_000 {
        let i = insns[pc];
        let (d, s) = (i.dst() as usize, i.src() as usize);
        pc += 1;
        match i.code {
            LDX_W => {
                assert_eq!(s, 1, "loads only from the context");
                reg[d] = u64::from(ctx[i.off as usize / 4]);
            }
            AND32_K => reg[d] = u64::from(reg[d] as u32 & i.imm as u32),
            RSH32_K => reg[d] = u64::from((reg[d] as u32) >> i.imm),
            MOV32_K => reg[d] = u64::from(i.imm as u32),
            JA => pc = (pc as i64 + i64::from(i.off)) as usize,
            JNE_K if reg[d] != i.imm as i64 as u64 => pc = (pc as i64 + i64::from(i.off)) as usize,
            JSET_K if reg[d] & (i.imm as i64 as u64) != 0 => {
                pc = (pc as i64 + i64::from(i.off)) as usize
            }
            JNE_K | JSET_K => {}
            EXIT => return reg[0] as u32,
            c => panic!("unknown opcode {c:#x}"),
        }
    }
    panic!("no exit");
}

fn allowed(insns: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> bool {
    match run(insns, typ, access, major, minor) {
        0 => false,
        1 => true,
        v => panic!("returned {v}"),
    }
}

/// Every instruction is reachable and every jump lands inside the program, as the verifier
/// demands; the last instruction is an exit.
fn check_cfg(insns: &[Insn]) {
    let mut seen = vec![false; insns.len()];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        if pc >= insns.len() {
            panic!("falls off the end at {pc}");
        }
        if std::mem::replace(&mut seen[pc], true) {
            continue;
        }
        let i = insns[pc];
        let target = (pc as i64 + 1 + i64::from(i.off)) as usize;
        match i.code {
            EXIT => {}
            JA => todo.push(target),
            JNE_K | JSET_K => {
                assert!(target > pc, "backward jump at {pc}");
                todo.push(target);
                todo.push(pc + 1);
            }
            _ => todo.push(pc + 1),
        }
    }
    let dead: Vec<usize> = (0..insns.len()).filter(|p| !seen[*p]).collect();
    assert!(
        dead.is_empty(),
        "unreachable: {dead:?}\n{:#?}",
        disassemble(insns)
    );
}

const PROLOGUE: [&str; 6] = [
    "ldxw r2, [r1+0]",
    "and32 r2, 0xffff",
    "ldxw r3, [r1+0]",
    "rsh32 r3, 16",
    "ldxw r4, [r1+4]",
    "ldxw r5, [r1+8]",
];

#[test]
fn typical_list_is_one_chain() {
    // containerd's: deny all, then the defaults.
    let rules = vec![
        r(false, "a", None, None, "rwm"),
        r(true, "c", Some(1), Some(3), "rwm"),
        r(true, "c", Some(136), None, "rwm"),
    ];
    let p = program(&rules).unwrap();
    check_cfg(&p);
    let mut want: Vec<String> = PROLOGUE.iter().map(|s| s.to_string()).collect();
    want.extend(
        [
            // newest first: c 136:* (no minor test)
            "jne r2, 2, +3",
            "jne r4, 136, +2",
            "mov32 r0, 1",
            "exit",
            // c 1:3
            "jne r2, 2, +4",
            "jne r4, 1, +3",
            "jne r5, 3, +2",
            "mov32 r0, 1",
            "exit",
            // deny all is the default
            "mov32 r0, 0",
            "exit",
        ]
        .map(String::from),
    );
    assert_eq!(disassemble(&p), want);

    assert!(allowed(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3));
    assert!(allowed(&p, DEV_CHAR, ACC_MKNOD, 136, 7));
    assert!(!allowed(&p, DEV_CHAR, ACC_READ, 1, 5));
    assert!(!allowed(&p, DEV_BLOCK, ACC_READ, 1, 3));
    assert!(!allowed(&p, DEV_BLOCK, ACC_READ, 136, 0));
}

#[test]
fn wildcards() {
    let rules = vec![
        r(false, "a", None, None, "rwm"),
        r(true, "b", None, None, "rwm"), // every block device
        r(true, "c", None, Some(9), "rwm"),
        r(true, "a", Some(10), None, "rwm"), // major 10 of any type
    ];
    let p = program(&rules).unwrap();
    check_cfg(&p);
    assert!(allowed(&p, DEV_BLOCK, ACC_READ, 8, 0));
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 4, 9));
    assert!(!allowed(&p, DEV_CHAR, ACC_READ, 4, 8));
    assert!(allowed(&p, DEV_CHAR, ACC_WRITE, 10, 200));
    // -1 is a wildcard too
    let p = program(&[
        r(false, "a", None, None, "rwm"),
        r(true, "c", Some(1), Some(-1), "rwm"),
    ])
    .unwrap();
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 1, 77));
    assert!(!allowed(&p, DEV_CHAR, ACC_READ, 2, 77));
}

#[test]
fn last_match_wins() {
    let deny_after_allow = vec![
        r(false, "a", None, None, "rwm"),
        r(true, "c", Some(1), None, "rwm"),
        r(false, "c", Some(1), Some(5), "rwm"),
    ];
    let p = program(&deny_after_allow).unwrap();
    check_cfg(&p);
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 1, 3));
    assert!(!allowed(&p, DEV_CHAR, ACC_READ, 1, 5));

    let allow_after_deny = vec![
        r(false, "a", None, None, "rwm"),
        r(false, "c", Some(1), Some(5), "rwm"),
        r(true, "c", Some(1), None, "rwm"),
    ];
    let p = program(&allow_after_deny).unwrap();
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 1, 5));

    // An "allow all" later wins over everything before it; what follows still applies.
    let p = program(&[
        r(false, "a", None, None, "rwm"),
        r(true, "a", None, None, "rwm"),
        r(false, "b", Some(8), None, "rwm"),
    ])
    .unwrap();
    check_cfg(&p);
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 1, 5));
    assert!(!allowed(&p, DEV_BLOCK, ACC_READ, 8, 1));
    // the rules before the unconditional one are not even emitted
    assert_eq!(p.len(), PROLOGUE.len() + 4 + 2);
}

#[test]
fn access_per_bit() {
    let rules = vec![
        r(false, "a", None, None, "rwm"),
        r(true, "c", Some(1), Some(3), "r"),
        r(true, "c", Some(1), Some(5), "rwm"),
        r(false, "c", Some(1), Some(5), "w"),
        r(true, "c", Some(1), Some(8), "r"),
        r(true, "c", Some(1), Some(8), "w"),
    ];
    let p = program(&rules).unwrap();
    check_cfg(&p);
    let (r_, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
    assert!(allowed(&p, DEV_CHAR, r_, 1, 3));
    assert!(!allowed(&p, DEV_CHAR, w, 1, 3));
    assert!(!allowed(&p, DEV_CHAR, r_ | w, 1, 3));
    assert!(!allowed(&p, DEV_CHAR, m, 1, 3));
    // a later deny of w takes w away, also from a read-write open
    assert!(allowed(&p, DEV_CHAR, r_, 1, 5));
    assert!(allowed(&p, DEV_CHAR, m, 1, 5));
    assert!(!allowed(&p, DEV_CHAR, w, 1, 5));
    assert!(!allowed(&p, DEV_CHAR, r_ | w, 1, 5));
    // r and w granted by two rules add up
    assert!(allowed(&p, DEV_CHAR, r_ | w, 1, 8));
    assert!(!allowed(&p, DEV_CHAR, r_ | m, 1, 8));
    assert!(!allowed(&p, DEV_CHAR, r_, 1, 9));
    // per-bit shape: each bit starts with jset + ja
    let d = disassemble(&p);
    assert_eq!(d[6], "jset r3, 0x2, +1");
    assert!(d[7].starts_with("ja "));
    assert_eq!(d.iter().filter(|l| l.starts_with("jset")).count(), 3);
    assert_eq!(d.last().unwrap(), "exit");
}

#[test]
fn no_deny_all_still_denies_the_rest() {
    let p = program(&[r(true, "c", Some(1), Some(3), "rwm")]).unwrap();
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 1, 3));
    assert!(!allowed(&p, DEV_CHAR, ACC_READ, 1, 5));
    let p = program(&[r(true, "a", None, None, "rwm")]).unwrap();
    assert_eq!(disassemble(&p)[6..], ["mov32 r0, 1", "exit"]);
}

#[test]
fn u_is_char_and_bad_rules_are_refused() {
    let p = program(&[r(true, "u", Some(4), Some(1), "rwm")]).unwrap();
    assert!(allowed(&p, DEV_CHAR, ACC_READ, 4, 1));
    assert!(program(&[r(true, "p", None, None, "rwm")])
        .unwrap_err()
        .to_string()
        .contains("fifo"));
    assert!(program(&[r(true, "c", Some(1), Some(3), "rx")])
        .unwrap_err()
        .to_string()
        .contains("access"));
    assert!(program(&[r(true, "c", Some(-2), Some(3), "r")])
        .unwrap_err()
        .to_string()
        .contains("major"));
    assert!(program(&[r(true, "c", Some(1), Some(1 << 40), "r")])
        .unwrap_err()
        .to_string()
        .contains("minor"));
    // empty access grants nothing: the rule is dropped
    let p = program(&[r(true, "c", Some(1), Some(3), "")]).unwrap();
    assert!(!allowed(&p, DEV_CHAR, ACC_READ, 1, 3));
}

#[test]
fn insn_layout_is_the_kernels() {
    assert_eq!(std::mem::size_of::<Insn>(), 8);
    let p = program(&[r(true, "c", Some(1), Some(3), "rwm")]).unwrap();
    // ldxw r2, [r1+0]: dst in the low nibble, src in the high one
    assert_eq!(p[0].regs, 0x12);
    assert_eq!(
        p[4],
        Insn {
            code: LDX_W,
            regs: 0x14,
            off: 4,
            imm: 0
        }
    );
}
