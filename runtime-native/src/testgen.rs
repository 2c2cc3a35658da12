//! A small seeded generator for the property tests of the parsers of untrusted input (this
//! crate's and the shim's): xorshift64*, no dependency, the same cases on every run for a
//! seed, so a failure names a seed and a case number that reproduce it. Also the one encoder
//! those tests and the end-to-end ones build binary inputs with ([`uleb128`]), and the edits
//! of a spec's namespace list that the unit and the integration tests share
//! ([`edit_namespaces`], [`join_namespace`]).

use std::path::Path;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

/// A deterministic pseudo-random source.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = self.below(max_len + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A short string over `alphabet`.
    pub fn string(&mut self, alphabet: &str, max_len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let n = self.below(max_len + 1);
        (0..n).map(|_| *self.pick(&chars)).collect()
    }

    /// `data` with a few random edits: byte flips, deletions, insertions, a truncation.
    pub fn mutate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut d = data.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = if d.is_empty() { 0 } else { self.below(d.len()) };
            match self.below(4) {
                0 if !d.is_empty() => d[at] ^= 1 << self.below(8),
                1 if !d.is_empty() => {
                    d.remove(at);
                }
                2 => d.insert(at, *self.pick(b"{}[]\",:0123456789-aZ\\\0\n ")),
                _ => d.truncate(at),
            }
        }
        d
    }
}

/// Appends `n` as unsigned LEB128: a protobuf varint, and a wasm module's sizes and counts.
pub fn uleb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return;
        }
    }
}

/// Changes `spec`'s namespace list (an empty one where it has none) through `edit`.
pub fn edit_namespaces(spec: &mut Spec, edit: impl FnOnce(&mut Vec<LinuxNamespace>)) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    edit(&mut namespaces);
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

/// A new namespace of type `typ` (no path), as a spec lists it.
pub fn new_namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns
}

/// Makes `spec` join the namespace of type `typ` at `path`: the path is set on the one of that
/// type it lists, or one is added.
pub fn join_namespace(spec: &mut Spec, typ: LinuxNamespaceType, path: &Path) {
    edit_namespaces(spec, |namespaces| {
        let ns = match namespaces.iter().position(|n| n.typ() == typ) {
            Some(i) => &mut namespaces[i],
            None => {
                namespaces.push(new_namespace(typ));
                namespaces.last_mut().unwrap()
            }
        };
        ns.set_path(Some(path.to_path_buf()));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uleb128_encodes_seven_bits_a_byte() {
        let enc = |n| {
            let mut v = Vec::new();
            uleb128(n, &mut v);
            v
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(150), [0x96, 0x01]);
        assert_eq!(enc(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn the_same_seed_gives_the_same_cases() {
        let (mut a, mut b) = (Gen::new(7), Gen::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|&x| x != xs[0]));
        let mut g = Gen::new(1);
        assert!((0..1000).all(|_| g.below(3) < 3));
    }
}
