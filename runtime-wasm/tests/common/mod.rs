//! Fixtures shared by this crate's unit tests (`src/tests.rs`) and its integration tests
//! (`tests/*.rs`). Each includes this file as a module of its own (the unit tests by
//! `#[path]`), so it names the crate's types through the including module (`super::`), where
//! both bring them into scope.

use super::{Cache, DEFAULT_CACHE_MAX_BYTES};

/// An empty cache with the default size limit in a fresh temporary directory, and the guard
/// that removes the directory; the directory also has room for a test's own files.
pub fn cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache"), DEFAULT_CACHE_MAX_BYTES).unwrap();
    (dir, cache)
}
