//! WebAssembly modules carried by an image as OCI layers instead of files in its rootfs.
//!
//! Such images (built by wasm tooling for runwasi-style runtimes) have a manifest whose layers
//! are the modules themselves, with one of the media types below. containerd 1.7 and 2.x import
//! them and unpack only their tar layers (often none, so the rootfs is empty); containerd 1.6
//! refuses to import them at all ("no processor for media-type"). The shim looks for such a
//! layer only when a task's entrypoint is not a file in its rootfs, so native starts never pay
//! for the round trips: container → image → manifest (through an index if need be) → layer
//! blob, all read from containerd over its gRPC socket.

use serde::Deserialize;

use crate::containerd_api::{ApiError, Client};

/// The layer media types that hold a wasm module or component.
pub const WASM_LAYER_TYPES: [&str; 3] = [
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The OCI layer annotation naming a layer's file.
const TITLE: &str = "org.opencontainers.image.title";

/// Manifests and indexes are small JSON documents; anything bigger is not one.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// How many manifests of an index are looked into before giving up.
const MAX_MANIFESTS: usize = 16;
/// containerd answers in milliseconds; a hung daemon must not hang Create forever.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where to ask: containerd's gRPC socket, the namespace and the container.
#[derive(Clone, Debug)]
pub struct LayerSource {
    pub address: String,
    pub namespace: String,
    pub container_id: String,
}

/// A module read from an image layer.
#[derive(Debug)]
pub struct WasmLayer {
    pub image: String,
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Deserialize, Debug)]
struct Index {
    #[serde(default)]
    manifests: Vec<Entry>,
}

#[derive(Deserialize, Debug)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Entry>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
struct Entry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    /// The blob's size as the descriptor gives it (0 when absent).
    #[serde(default)]
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The manifests of an index worth looking into, best first: this host's platform, then
/// wasm platforms (`wasi`/`wasip*` or architecture `wasm`), then the rest.
fn manifest_order(index: &Index) -> Vec<(String, i64)> {
    let rank = |e: &Entry| match &e.platform {
        Some(p) if p.os == "linux" && p.architecture == host_arch() => 0,
        Some(p) if p.os.starts_with("wasi") || p.architecture == "wasm" => 1,
        _ => 2,
    };
    let mut entries: Vec<&Entry> = index.manifests.iter().collect();
    entries.sort_by_key(|e| rank(e));
    entries
        .into_iter()
        .take(MAX_MANIFESTS)
        .map(|e| (e.digest.clone(), e.size))
        .collect()
}

/// Why the wasm layer of a container's image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("parse {what} {digest}: {source}")]
    Parse {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    /// `layers`: each one's digest and title.
    #[error("the image has {count} wasm layers ({layers}) and none is titled {file_name:?}")]
    Ambiguous {
        count: usize,
        layers: String,
        file_name: String,
    },
    #[error("containerd did not answer within {}s", LOOKUP_TIMEOUT.as_secs())]
    Timeout,
    #[error("wasm layer {digest} ({entry}): {source}")]
    Layer {
        digest: String,
        entry: String,
        #[source]
        source: Box<ApiError>,
    },
}

/// [`LayerError`] for the container `container`.
#[derive(Debug, thiserror::Error)]
#[error("wasm layers of container {container}: {source}")]
pub struct FindError {
    container: String,
    #[source]
    source: LayerError,
}

/// The wasm layer of a manifest that the entrypoint means: the only one, or, among several,
/// the one whose title annotation is the entrypoint's file name. `Ok(None)`: no wasm layer.
fn pick_layer(manifest: &Manifest, entry_path: &str) -> Result<Option<Entry>, LayerError> {
    let wasm: Vec<&Entry> = manifest
        .layers
        .iter()
        .filter(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
        .collect();
    let title = |l: &Entry| l.annotations.get(TITLE).cloned().unwrap_or_default();
    let file_name = entry_path.rsplit('/').next().unwrap_or(entry_path);
    match wasm.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some((*only).clone())),
        several => match several.iter().find(|l| title(l) == file_name) {
            Some(l) => Ok(Some((*l).clone())),
            None => Err(LayerError::Ambiguous {
                count: several.len(),
                layers: several
                    .iter()
                    .map(|l| format!("{} {:?}", l.digest, title(l)))
                    .collect::<Vec<_>>()
                    .join(", "),
                file_name: file_name.to_string(),
            }),
        },
    }
}

fn parse<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    digest: &str,
    data: &[u8],
) -> Result<T, LayerError> {
    serde_json::from_slice(data).map_err(|source| LayerError::Parse {
        what,
        digest: digest.to_string(),
        source,
    })
}

/// Looks up the module for `entry_path` among the wasm layers of the container's image; a
/// layer over `max_bytes` (by its descriptor, or by what streams in) is refused unread.
/// `Ok(None)`: the container has no image, the image is gone, or it carries no wasm layer.
pub fn find(
    source: &LayerSource,
    entry_path: &str,
    max_bytes: u64,
) -> Result<Option<WasmLayer>, FindError> {
    let lookup = async {
        tokio::time::timeout(LOOKUP_TIMEOUT, find_async(source, entry_path, max_bytes))
            .await
            .unwrap_or(Err(LayerError::Timeout))
    };
    // Called on the shim's blocking pool (Create and Exec run there), inside the runtime.
    tokio::runtime::Handle::current()
        .block_on(lookup)
        .map_err(|e| FindError {
            container: source.container_id.clone(),
            source: e,
        })
}

async fn find_async(
    source: &LayerSource,
    entry_path: &str,
    max_bytes: u64,
) -> Result<Option<WasmLayer>, LayerError> {
    let mut client = Client::connect(&source.address, &source.namespace).await?;
    let image_name = match client.container_image(&source.container_id).await {
        Ok(name) if !name.is_empty() => name,
        Ok(_) => return Ok(None),
        Err(e) if e.not_found => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let target = match client.image_target(&image_name).await {
        Ok(t) => t,
        Err(e) if e.not_found => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let manifests = if INDEX_TYPES.contains(&target.media_type.as_str()) {
        let data = client
            .read_blob(&target.digest, target.size, MANIFEST_LIMIT)
            .await?;
        manifest_order(&parse::<Index>("image index", &target.digest, &data)?)
    } else {
        vec![(target.digest, target.size)]
    };
    for (digest, size) in manifests {
        let data = client.read_blob(&digest, size, MANIFEST_LIMIT).await?;
        let manifest: Manifest = parse("image manifest", &digest, &data)?;
        let Some(layer) = pick_layer(&manifest, entry_path)? else {
            continue;
        };
        let bytes = client
            .read_blob(&layer.digest, layer.size, max_bytes)
            .await
            .map_err(|source| LayerError::Layer {
                digest: layer.digest.clone(),
                entry: entry_path.to_string(),
                source: Box::new(source),
            })?;
        return Ok(Some(WasmLayer {
            image: image_name,
            digest: layer.digest,
            media_type: layer.media_type,
            bytes,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(json: &str) -> Manifest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn picks_the_wasm_layer_the_entrypoint_names() {
        let m = manifest(
            r#"{"layers":[
              {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:t"},
              {"mediaType":"application/wasm","digest":"sha256:a",
               "annotations":{"org.opencontainers.image.title":"a.wasm"}},
              {"mediaType":"application/vnd.wasm.content.layer.v1+wasm","digest":"sha256:b",
               "annotations":{"org.opencontainers.image.title":"b.wasm"}}]}"#,
        );
        let pick = |entry| pick_layer(&m, entry).unwrap().unwrap().digest;
        assert_eq!(pick("/b.wasm"), "sha256:b");
        assert_eq!(pick("b.wasm"), "sha256:b");
        assert_eq!(pick("/x/a.wasm"), "sha256:a");
        // Several layers and none named: an error listing them, never a guess.
        let err = pick_layer(&m, "/app.wasm").unwrap_err().to_string();
        assert!(
            err.contains("2 wasm layers") && err.contains("\"app.wasm\""),
            "{err}"
        );
        assert!(err.contains("sha256:a \"a.wasm\""), "{err}");
    }

    #[test]
    fn a_single_wasm_layer_is_the_module_whatever_its_name() {
        for media in WASM_LAYER_TYPES {
            let m = manifest(&format!(
                r#"{{"layers":[{{"mediaType":"{media}","digest":"sha256:x"}}]}}"#
            ));
            let layer = pick_layer(&m, "/m.wasm").unwrap().unwrap();
            assert_eq!(layer.media_type, media);
        }
        let tar = manifest(
            r#"{"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"d"}]}"#,
        );
        assert!(pick_layer(&tar, "/m.wasm").unwrap().is_none());
        assert!(pick_layer(&manifest("{}"), "/m.wasm").unwrap().is_none());
    }

    #[test]
    fn index_manifests_host_platform_first_then_wasm() {
        let index: Index = serde_json::from_str(&format!(
            r#"{{"manifests":[
              {{"digest":"other","platform":{{"os":"linux","architecture":"s390x"}}}},
              {{"digest":"wasi","platform":{{"os":"wasip1","architecture":"wasm"}}}},
              {{"digest":"host","platform":{{"os":"linux","architecture":"{}"}}}},
              {{"digest":"bare"}}]}}"#,
            host_arch()
        ))
        .unwrap();
        let order: Vec<String> = manifest_order(&index).into_iter().map(|(d, _)| d).collect();
        assert_eq!(order, ["host", "wasi", "other", "bare"]);
    }

    #[test]
    fn bad_json_names_the_document() {
        let err = parse::<Manifest>("image manifest", "sha256:z", b"{")
            .unwrap_err()
            .to_string();
        assert!(err.contains("image manifest sha256:z"), "{err}");
    }

    /// Property test over seeded random manifests (`runtime_native::testgen`): parsing never
    /// panics, and the layer picked is exactly the one the entrypoint means, or an error.
    #[test]
    fn manifests_pick_the_meant_layer_or_refuse() {
        use runtime_native::testgen::Gen;
        const CASES: usize = 2000;
        let media = [
            WASM_LAYER_TYPES[0],
            WASM_LAYER_TYPES[1],
            WASM_LAYER_TYPES[2],
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/octet-stream",
        ];
        let mut g = Gen::new(0x5eed_0101);
        let (mut refused, mut mutated_refused) = (0, 0);
        for case in 0..CASES {
            let layers: Vec<serde_json::Value> = (0..g.below(5))
                .map(|i| {
                    let mut l = serde_json::json!({
                        "mediaType": g.pick(&media),
                        "digest": format!("sha256:{case}-{i}"),
                        "size": g.below(1 << 20),
                    });
                    if g.chance(60) {
                        let title = format!("{}.wasm", g.string("ab", 2));
                        l["annotations"] = serde_json::json!({ TITLE: title });
                    }
                    l
                })
                .collect();
            let doc = serde_json::json!({ "schemaVersion": 2, "layers": layers });
            let bytes = serde_json::to_vec(&doc).unwrap();
            let m: Manifest = parse("image manifest", "d", &bytes).unwrap();
            let entry = format!("/app/{}.wasm", g.string("ab", 2));
            let name = entry.rsplit('/').next().unwrap();
            let wasm: Vec<&Entry> = m
                .layers
                .iter()
                .filter(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
                .collect();
            let titled = |l: &&Entry| l.annotations.get(TITLE).map(String::as_str) == Some(name);
            match pick_layer(&m, &entry) {
                Ok(None) => assert!(wasm.is_empty(), "case {case}"),
                Ok(Some(l)) => {
                    assert!(wasm.len() == 1 || titled(&&l), "case {case}: {l:?}");
                    assert!(WASM_LAYER_TYPES.contains(&l.media_type.as_str()));
                    assert!(l.size >= 0);
                }
                Err(e) => {
                    refused += 1;
                    assert!(
                        wasm.len() > 1 && !wasm.iter().any(titled),
                        "case {case}: {e}"
                    );
                }
            }
            // Mutated documents: parsed or refused naming the document, never a panic.
            let bad = g.mutate(&bytes);
            match parse::<Manifest>("image manifest", "sha256:m", &bad) {
                Ok(m) => {
                    let _ = pick_layer(&m, &entry);
                }
                Err(e) => {
                    mutated_refused += 1;
                    assert!(e.to_string().contains("image manifest sha256:m"), "{e}");
                }
            }
            let _ = parse::<Index>("image index", "sha256:i", &bad).map(|i| manifest_order(&i));
        }
        println!(
            "wasm layer manifests: {} cases, {refused} refused (ambiguous), \
             {mutated_refused} mutated refused",
            2 * CASES
        );
    }
}
