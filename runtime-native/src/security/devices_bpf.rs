//! The OCI device allow-list (`linux.resources.devices`) on cgroup v2: v2 has no devices
//! controller, so the rules become a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the
//! container's cgroup. The kernel runs it for every open/mknod of a device node.
//!
//! Semantics (runc's): the last rule matching a request decides; when none matches, the
//! request is denied (specs start with "deny all", which is then the answer). A rule matches
//! on type (`a` any, `b`, `c`/`u`), major and minor (absent or -1: any). Access is decided per
//! bit: a request for read+write is allowed only if the last rule covering read allows and the
//! last rule covering write allows. So `allow c 1:3 rwm` then `deny c 1:3 w` denies O_RDWR,
//! as cgroup v1 does.
//!
//! The program: a prologue loads the context (`struct bpf_cgroup_dev_ctx`) into registers,
//! then the rules are tested newest first, each a few compare-and-skip instructions ending in
//! an exit (or, for an allow in per-bit mode, a jump to the next requested bit). When every
//! rule grants all of `rwm` (the usual list) the access check is dropped and one chain suffices.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::bpf;
pub use crate::bpf::Insn;
use crate::{Error, Result};

/// The name our programs are loaded with; on update only programs with this name are detached.
pub const PROG_NAME: &str = "amphi_devices";

/// `BPF_DEVCG_ACC_*` (the high 16 bits of `access_type`).
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// `BPF_DEVCG_DEV_*` (the low 16 bits of `access_type`).
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

// Opcodes used (see the kernel's Documentation/bpf/standardization/instruction-set.rst).
pub const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
pub const AND32_K: u8 = 0x54; // dst = (u32)dst & imm
pub const RSH32_K: u8 = 0x74; // dst = (u32)dst >> imm
pub const MOV32_K: u8 = 0xb4; // dst = (u32)imm
pub const JA: u8 = 0x05; // pc += off
pub const JNE_K: u8 = 0x55; // if dst != imm: pc += off
pub const JSET_K: u8 = 0x45; // if dst & imm: pc += off
pub const EXIT: u8 = 0x95; // return r0

/// The registers the program uses, in register-number order (r0..r5): r0 holds the verdict,
/// r1 the context on entry (free after the prologue), r2..r5 what the prologue loads from it.
/// An instruction that uses no register names r0.
#[derive(Clone, Copy)]
enum Reg {
    R0,
    Ctx,
    Type,
    Access,
    Major,
    Minor,
}
use Reg::{Access, Ctx, Major, Minor, Type, R0};

/// One rule in the program's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// `DEV_BLOCK` / `DEV_CHAR`; None: any type.
    typ: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    /// `ACC_*` bits.
    access: u32,
}

impl Rule {
    /// Matches every device (its access bits aside).
    fn unconditional(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none()
    }
}

/// Why the device rules could not become a filter on a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    #[error("invalid device {what} {number}")]
    Number { what: &'static str, number: i64 },
    #[error("device rules cannot name fifos (type p)")]
    Fifo,
    #[error("invalid device access {access:?}")]
    Access { access: Option<String> },
    #[error("internal: unbound label")]
    UnboundLabel,
    #[error("too many device rules for one program")]
    TooManyRules,
    /// A bpf(2) step: `step` names the command and its object.
    #[error("{step}: {source}")]
    Bpf {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

type ProgramResult<T> = std::result::Result<T, DeviceFilterError>;

fn number(n: Option<i64>, what: &'static str) -> ProgramResult<Option<u32>> {
    match n {
        None | Some(-1) => Ok(None),
        // 64-bit compares sign-extend the immediate: keep it positive.
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(number) => Err(DeviceFilterError::Number { what, number }),
    }
}

fn rule(r: &LinuxDeviceCgroup) -> ProgramResult<Rule> {
    let typ = match r.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(DEV_BLOCK),
        LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
        LinuxDeviceType::P => return Err(DeviceFilterError::Fifo),
    };
    let mut access = 0;
    for c in r.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(DeviceFilterError::Access {
                    access: r.access().clone(),
                })
            }
        };
    }
    Ok(Rule {
        allow: r.allow(),
        typ,
        major: number(r.major(), "major")?,
        minor: number(r.minor(), "minor")?,
        access,
    })
}

/// A forward jump target.
#[derive(Clone, Copy)]
struct Label(usize);

/// A tiny assembler: instructions plus labels resolved at the end.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: ((src as u8) << 4) | dst as u8,
            off,
            imm,
        });
    }
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    fn jump(&mut self, code: u8, dst: Reg, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(code, dst, R0, 0, imm);
    }
    fn ret(&mut self, v: bool) {
        self.emit(MOV32_K, R0, R0, 0, v as i32);
        self.emit(EXIT, R0, R0, 0, 0);
    }
    fn finish(mut self) -> ProgramResult<Vec<Insn>> {
        for (at, l) in &self.fixups {
            let target = self.labels[l.0].ok_or(DeviceFilterError::UnboundLabel)?;
            let off = target as i64 - *at as i64 - 1;
            self.insns[*at].off =
                i16::try_from(off).map_err(|_| DeviceFilterError::TooManyRules)?;
        }
        Ok(self.insns)
    }
}

/// What an allowing rule does: answer at once, or go on to the next requested access bit.
#[derive(Clone, Copy)]
enum OnAllow {
    Exit,
    Goto(Label),
}

/// Tests `rules` newest first; the first match decides, none matching denies.
fn chain<'a>(a: &mut Asm, rules: impl DoubleEndedIterator<Item = &'a Rule>, on_allow: OnAllow) {
    let decide = |a: &mut Asm, allow: bool| match (allow, on_allow) {
        (true, OnAllow::Goto(l)) => a.jump(JA, R0, 0, l),
        (v, _) => a.ret(v),
    };
    for r in rules.rev() {
        if r.unconditional() {
            // Matches everything left: it is the default, and nothing older matters.
            decide(a, r.allow);
            return;
        }
        let next = a.label();
        if let Some(t) = r.typ {
            a.jump(JNE_K, Type, t as i32, next);
        }
        if let Some(m) = r.major {
            a.jump(JNE_K, Major, m as i32, next);
        }
        if let Some(m) = r.minor {
            a.jump(JNE_K, Minor, m as i32, next);
        }
        decide(a, r.allow);
        a.bind(next);
    }
    decide(a, false);
}

/// The device program for an ordered rule list (OCI order: later rules override earlier).
pub fn program(rules: &[LinuxDeviceCgroup]) -> ProgramResult<Vec<Insn>> {
    let rules: Vec<Rule> = rules
        .iter()
        .map(rule)
        .filter(|r| !matches!(r, Ok(r) if r.access == 0))
        .collect::<std::result::Result<_, _>>()?;
    let mut a = Asm::default();
    // r2 = device type, r3 = requested access, r4 = major, r5 = minor.
    a.emit(LDX_W, Type, Ctx, 0, 0);
    a.emit(AND32_K, Type, R0, 0, 0xffff);
    a.emit(LDX_W, Access, Ctx, 0, 0);
    a.emit(RSH32_K, Access, R0, 0, 16);
    a.emit(LDX_W, Major, Ctx, 4, 0);
    a.emit(LDX_W, Minor, Ctx, 8, 0);
    if rules.iter().all(|r| r.access == ACC_ALL) {
        chain(&mut a, rules.iter(), OnAllow::Exit);
    } else {
        for bit in [ACC_READ, ACC_WRITE, ACC_MKNOD] {
            let next = a.label();
            let check = a.label();
            a.jump(JSET_K, Access, bit as i32, check);
            a.jump(JA, R0, 0, next);
            a.bind(check);
            chain(
                &mut a,
                rules.iter().filter(|r| r.access & bit != 0),
                OnAllow::Goto(next),
            );
            a.bind(next);
        }
        a.ret(true);
    }
    a.finish()
}

fn err(dir: &Path, source: DeviceFilterError) -> Error {
    Error::DeviceFilter {
        dir: dir.to_path_buf(),
        source,
    }
}

/// `map_err` for a bpf(2) step on `dir`.
fn bpf_err(dir: &Path, step: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error + '_ {
    let step = step.into();
    move |source| err(dir, DeviceFilterError::Bpf { step, source })
}

/// Enforces `rules` on the cgroup v2 directory `dir`: loads their program and attaches it,
/// then detaches the programs of earlier calls, so the cgroup is never without a filter.
/// No rules: nothing is done.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let insns = program(rules).map_err(|e| err(dir, e))?;
    let prog = bpf::prog_load(bpf::BPF_PROG_TYPE_CGROUP_DEVICE, &insns, PROG_NAME)
        .map_err(bpf_err(dir, "BPF_PROG_LOAD of the device program"))?;
    let cg: OwnedFd = std::fs::File::open(dir)
        .map_err(bpf_err(dir, "open"))?
        .into();
    let old = bpf::prog_query(cg.as_fd(), bpf::BPF_CGROUP_DEVICE)
        .map_err(bpf_err(dir, "BPF_PROG_QUERY"))?;
    bpf::prog_attach(
        cg.as_fd(),
        prog.as_fd(),
        bpf::BPF_CGROUP_DEVICE,
        bpf::BPF_F_ALLOW_MULTI,
    )
    .map_err(bpf_err(dir, "BPF_PROG_ATTACH of the device program"))?;
    for id in old {
        let p = match bpf::prog_fd_by_id(id) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // gone meanwhile
            Err(e) => return Err(bpf_err(dir, format!("BPF_PROG_GET_FD_BY_ID {id}"))(e)),
        };
        let name = bpf::prog_name(p.as_fd()).map_err(bpf_err(
            dir,
            format!("BPF_OBJ_GET_INFO_BY_FD of program {id}"),
        ))?;
        if name != PROG_NAME {
            continue; // someone else's filter: it keeps applying
        }
        match bpf::prog_detach(cg.as_fd(), p.as_fd(), bpf::BPF_CGROUP_DEVICE) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err(dir, format!("BPF_PROG_DETACH of program {id}"))(e)),
        }
    }
    Ok(())
}

/// The ids of the device programs attached to the cgroup directory `dir` itself.
pub fn attached(dir: &Path) -> Result<Vec<u32>> {
    let cg: OwnedFd = std::fs::File::open(dir)
        .map_err(bpf_err(dir, "open"))?
        .into();
    bpf::prog_query(cg.as_fd(), bpf::BPF_CGROUP_DEVICE).map_err(bpf_err(dir, "BPF_PROG_QUERY"))
}

/// One line per instruction, for tests and debugging (`jne r4, 1, +3`).
pub fn disassemble(insns: &[Insn]) -> Vec<String> {
    insns
        .iter()
        .map(|i| {
            let (d, s, off, imm) = (i.dst(), i.src(), i.off, i.imm);
            match i.code {
                LDX_W => format!("ldxw r{d}, [r{s}{off:+}]"),
                AND32_K => format!("and32 r{d}, {imm:#x}"),
                RSH32_K => format!("rsh32 r{d}, {imm}"),
                MOV32_K => format!("mov32 r{d}, {imm}"),
                JA => format!("ja {off:+}"),
                JNE_K => format!("jne r{d}, {imm}, {off:+}"),
                JSET_K => format!("jset r{d}, {imm:#x}, {off:+}"),
                EXIT => "exit".into(),
                c => format!("?? {c:#04x}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
                JNE_K if reg[d] != i.imm as i64 as u64 => {
                    pc = (pc as i64 + i64::from(i.off)) as usize
                }
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
}
