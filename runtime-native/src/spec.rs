//! Loading and validating `config.json`.

use std::path::Path;

use crate::Result;

/// Reads `bundle/config.json`; an invalid spec is an error naming the file and the problem.
pub fn load(bundle: &Path) -> Result<oci_spec::runtime::Spec> {
    todo!()
}
