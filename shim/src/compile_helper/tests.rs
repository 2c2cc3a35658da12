//! Unit tests of the compile helper's protocol: an entry the helper writes and the shim then
//! opens, a refusal it explains, an OOM kill it names.

use super::*;
use runtime_wasm::{Cache, Lookup, Module, WasmSettings};

const HELLO: &str = r#"(module (func (export "_start")))"#;

fn job_for(cache: &Cache, name: &str, bytes: &[u8]) -> CompileJob {
    match cache
        .lookup(&WasmSettings::default(), Module::new(name, bytes))
        .unwrap()
    {
        Lookup::Miss(job) => job,
        Lookup::Hit(_) => panic!("{name}: a hit in a new cache"),
    }
}

fn exchange(dir: &Path, job: &CompileJob, bytes: &[u8], send_len: usize) -> (i32, Reply) {
    let mut input = request_header(dir, job, bytes.len() as u64);
    input.extend_from_slice(&bytes[..send_len]);
    let mut out = Vec::new();
    let code = serve(&mut input.as_slice(), &mut out);
    (code, serde_json::from_slice(&out).unwrap())
}

#[test]
fn a_helper_writes_the_entry_the_shim_then_opens() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 30).unwrap();
    let job = job_for(&cache, "/hello.wat", HELLO.as_bytes());
    let (code, reply) = exchange(dir.path(), &job, HELLO.as_bytes(), HELLO.len());
    assert_eq!((code, reply), (0, Reply::Compiled(WasmKind::CoreModule)));
    let compiled = cache.finish(&job).unwrap();
    assert!(!compiled.cache_hit);
    assert_eq!(compiled.payload.digest, job.digest);
    let meta = std::fs::metadata(&compiled.artifact).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    // The next start of the same module is a hit, with no helper.
    match cache
        .lookup(
            &WasmSettings::default(),
            Module::new("/hello.wat", HELLO.as_bytes()),
        )
        .unwrap()
    {
        Lookup::Hit(c) => assert!(c.cache_hit),
        Lookup::Miss(_) => panic!("the helper's entry was not found"),
    }
}

#[test]
fn a_helper_answers_why_it_did_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 30).unwrap();
    // Valid header, invalid body: the module's own error, naming it.
    let bad = b"\0asm\x01\0\0\0\x01\xff";
    let job = job_for(&cache, "/bad.wasm", bad);
    let (code, reply) = exchange(dir.path(), &job, bad, bad.len());
    assert_eq!(code, 1);
    let Reply::Failed(why) = reply else {
        panic!("compiled an invalid module")
    };
    assert!(why.contains("wasm module /bad.wasm: invalid"), "{why}");
    // Fewer bytes than announced.
    let job = job_for(&cache, "/hello.wat", HELLO.as_bytes());
    let (code, reply) = exchange(dir.path(), &job, HELLO.as_bytes(), 5);
    assert_eq!(code, 1);
    assert_eq!(
        reply,
        Reply::Failed(format!(
            "wasm module /hello.wat: 5 of its {} bytes arrived",
            HELLO.len()
        ))
    );
    // A job that is not what these bytes make (another module's entry name).
    let mut other = job.clone();
    other.entry = format!("{}x", other.entry);
    let (_, reply) = exchange(dir.path(), &other, HELLO.as_bytes(), HELLO.len());
    let Reply::Failed(why) = reply else {
        panic!("compiled under a wrong entry name")
    };
    assert!(why.contains("not"), "{why}");
    assert!(!dir.path().join(&other.entry).exists());
    // Garbage instead of a request.
    let mut out = Vec::new();
    assert_eq!(serve(&mut &b"\x05\0\0\0{nope"[..], &mut out), 1);
}

#[test]
fn an_oom_kill_reads_as_the_module_and_the_limit() {
    let ended = |exit, oom_rose, limit| Ended {
        exit,
        oom_rose,
        limit,
        stderr: String::new(),
    };
    let kill = ChildExit::Signal(libc::SIGKILL);
    let e = outcome(
        "/f.wasm",
        "/sys/fs/cgroup/memory/default/c1",
        b"",
        ended(kill, Some(true), Some(16 << 20)),
    )
    .unwrap_err();
    assert!(e.is_invalid_input());
    let text = e.to_string();
    assert!(
        text.contains("wasm module /f.wasm")
            && text.contains("OOM killer")
            && text.contains("memory limit 16777216 bytes")
            && text.contains("/sys/fs/cgroup/memory/default/c1"),
        "{text}"
    );
    // A SIGKILL while the OOM count stayed: not called an OOM.
    let e = outcome("/f.wasm", "cg", b"", ended(kill, Some(false), None)).unwrap_err();
    assert!(
        e.to_string()
            .contains("without an answer (signal: 9 (SIGKILL))"),
        "{e}"
    );
    // A panic: its stderr is in the error.
    let mut crashed = ended(ChildExit::Code(101), None, None);
    crashed.stderr = "thread 'main' panicked".into();
    let e = outcome("/f.wasm", "cg", b"", crashed).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("(exit status: 101): thread 'main' panicked"),
        "{e}"
    );
    // The reply wins when there is one.
    let ok = serde_json::to_vec(&Reply::Compiled(WasmKind::HttpProxy)).unwrap();
    let kind = outcome("/f.wasm", "cg", &ok, ended(ChildExit::Code(0), None, None)).unwrap();
    assert_eq!(kind, WasmKind::HttpProxy);
    let failed = serde_json::to_vec(&Reply::Failed("wasm module /f.wasm: invalid".into())).unwrap();
    let e = outcome(
        "/f.wasm",
        "cg",
        &failed,
        ended(ChildExit::Code(1), None, None),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "wasm module /f.wasm: invalid");
}
