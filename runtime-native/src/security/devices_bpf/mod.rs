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
mod tests;
