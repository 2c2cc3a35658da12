//! The few calls the shim makes to containerd's own gRPC API (the `-address` socket): which
//! image a container was created from, that image's target descriptor, and a blob from the
//! content store. Used only to find WebAssembly modules that an image carries as an OCI layer
//! rather than as a file in its rootfs (`crate::wasm_layers`).
//!
//! The messages are declared here by hand, with their containerd field numbers, instead of
//! generating the whole containerd API: three requests and four messages are all the shim
//! needs, and no protoc runs at build time. Field numbers follow
//! `api/services/{containers,images,content}/v1/*.proto` and `api/types/descriptor.proto`,
//! identical in containerd 1.6, 1.7 and 2.x.

use std::path::PathBuf;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// containerd's namespace travels in this gRPC metadata key on every call.
const NAMESPACE_HEADER: &str = "containerd-namespace";

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "3")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetImageRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetImageResponse {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub target: Option<Descriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Descriptor {
    #[prost(string, tag = "1")]
    pub media_type: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadContentRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    /// 0 reads to the end.
    #[prost(int64, tag = "3")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// A failed call, naming the call and what it was about.
#[derive(Debug, thiserror::Error)]
#[error("containerd {call} {subject}: {reason}")]
pub struct ApiError {
    pub call: &'static str,
    pub subject: String,
    pub reason: String,
    /// containerd answered NotFound.
    pub not_found: bool,
}

impl ApiError {
    fn new(call: &'static str, subject: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError {
            call,
            subject: subject.to_string(),
            reason: reason.to_string(),
            not_found: false,
        }
    }

    fn status(call: &'static str, subject: &str, status: tonic::Status) -> ApiError {
        ApiError {
            not_found: status.code() == tonic::Code::NotFound,
            ..ApiError::new(call, subject, status.message())
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A connection to containerd's gRPC socket, scoped to one namespace.
pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
    namespace: String,
}

impl Client {
    /// Connects to the unix socket at `address` (a path, or `unix://path`).
    pub async fn connect(address: &str, namespace: &str) -> ApiResult<Client> {
        let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(address));
        let socket = path.clone();
        // The URI is a placeholder: every connection goes to the unix socket.
        let channel = Endpoint::from_static("http://containerd")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| ApiError::new("connect", &socket.display().to_string(), e))?;
        Ok(Client {
            grpc: tonic::client::Grpc::new(channel),
            namespace: namespace.to_string(),
        })
    }

    fn request<M>(&self, message: M) -> ApiResult<tonic::Request<M>> {
        let mut request = tonic::Request::new(message);
        let value = self
            .namespace
            .parse()
            .map_err(|e| ApiError::new("namespace", &self.namespace, e))?;
        request.metadata_mut().insert(NAMESPACE_HEADER, value);
        Ok(request)
    }

    async fn unary<M1, M2>(
        &mut self,
        call: &'static str,
        subject: &str,
        path: &'static str,
        message: M1,
    ) -> ApiResult<M2>
    where
        M1: prost::Message + Send + Sync + 'static,
        M2: prost::Message + Default + Send + Sync + 'static,
    {
        let request = self.request(message)?;
        self.grpc
            .ready()
            .await
            .map_err(|e| ApiError::new(call, subject, e))?;
        let codec = tonic_prost::ProstCodec::<M1, M2>::default();
        self.grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ApiError::status(call, subject, s))
    }

    /// The image name the container was created from ("" when it has none).
    pub async fn container_image(&mut self, id: &str) -> ApiResult<String> {
        let reply: GetContainerResponse = self
            .unary(
                "Containers.Get",
                id,
                "/containerd.services.containers.v1.Containers/Get",
                GetContainerRequest { id: id.to_string() },
            )
            .await?;
        Ok(reply.container.map(|c| c.image).unwrap_or_default())
    }

    /// The descriptor an image name points at (a manifest or an index).
    pub async fn image_target(&mut self, name: &str) -> ApiResult<Descriptor> {
        let reply: GetImageResponse = self
            .unary(
                "Images.Get",
                name,
                "/containerd.services.images.v1.Images/Get",
                GetImageRequest {
                    name: name.to_string(),
                },
            )
            .await?;
        reply
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| ApiError::new("Images.Get", name, "the image has no target"))
    }

    /// A whole blob from the content store. `declared` is the size its descriptor gives (0:
    /// unknown); a blob declared or streamed larger than `limit` bytes, or streamed larger than
    /// declared, is refused before it is buffered (see [`BlobBuffer`]).
    pub async fn read_blob(
        &mut self,
        digest: &str,
        declared: i64,
        limit: u64,
    ) -> ApiResult<Vec<u8>> {
        const CALL: &str = "Content.Read";
        let mut buffer =
            BlobBuffer::new(digest, declared, limit).map_err(|e| ApiError::new(CALL, digest, e))?;
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            // Ask for no more than the descriptor says (0 reads to the end).
            size: declared.max(0),
        })?;
        self.grpc
            .ready()
            .await
            .map_err(|e| ApiError::new(CALL, digest, e))?;
        let codec = tonic_prost::ProstCodec::<ReadContentRequest, ReadContentResponse>::default();
        let mut stream = self
            .grpc
            .server_streaming(
                request,
                PathAndQuery::from_static("/containerd.services.content.v1.Content/Read"),
                codec,
            )
            .await
            .map_err(|s| ApiError::status(CALL, digest, s))?
            .into_inner();
        // Each message is bounded by tonic's decoding limit (4 MiB); the buffer bounds the sum.
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| ApiError::status(CALL, digest, s))?
        {
            buffer
                .push(chunk.offset, &chunk.data)
                .map_err(|e| ApiError::new(CALL, digest, e))?;
        }
        buffer.finish().map_err(|e| ApiError::new(CALL, digest, e))
    }
}

/// A blob refused by its size, or a stream that does not add up to it.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {digest}: its descriptor gives a negative size {declared}")]
    NegativeSize { digest: String, declared: i64 },
    #[error("blob {digest} is {declared} bytes, more than the limit of {limit} bytes")]
    OverLimit {
        digest: String,
        declared: u64,
        limit: u64,
    },
    #[error("chunk at offset {offset} after {have} bytes")]
    Gap { offset: i64, have: usize },
    #[error("streamed {total} bytes or more of a blob its descriptor says is {declared} bytes")]
    LongerThanDeclared { total: u64, declared: u64 },
    #[error("blob larger than the limit of {limit} bytes")]
    LargerThanLimit { limit: u64 },
    #[error("the blob ended after {have} of its {declared} bytes")]
    Short { have: usize, declared: u64 },
}

/// The bytes of one blob as they stream in, never more than its cap: the declared size when
/// there is one, and never more than the limit.
pub struct BlobBuffer {
    declared: u64,
    limit: u64,
    data: Vec<u8>,
}

impl BlobBuffer {
    /// Refuses a blob whose descriptor already says it is over `limit`.
    pub fn new(digest: &str, declared: i64, limit: u64) -> Result<BlobBuffer, BlobError> {
        let digest = || digest.to_string();
        let declared = u64::try_from(declared).map_err(|_| BlobError::NegativeSize {
            digest: digest(),
            declared,
        })?;
        if declared > limit {
            return Err(BlobError::OverLimit {
                digest: digest(),
                declared,
                limit,
            });
        }
        // The capacity is at most the limit, and only what the descriptor promised.
        Ok(BlobBuffer {
            declared,
            limit,
            data: Vec::with_capacity(declared as usize),
        })
    }

    /// The cap on what may arrive.
    fn cap(&self) -> u64 {
        if self.declared > 0 {
            self.declared
        } else {
            self.limit
        }
    }

    /// Appends a chunk that must start where the data so far ends.
    pub fn push(&mut self, offset: i64, chunk: &[u8]) -> Result<(), BlobError> {
        if offset != self.data.len() as i64 {
            return Err(BlobError::Gap {
                offset,
                have: self.data.len(),
            });
        }
        let total = self.data.len() as u64 + chunk.len() as u64;
        if total > self.cap() {
            return Err(if self.declared > 0 {
                BlobError::LongerThanDeclared {
                    total,
                    declared: self.declared,
                }
            } else {
                BlobError::LargerThanLimit { limit: self.limit }
            });
        }
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole blob; short of its declared size is an error.
    pub fn finish(self) -> Result<Vec<u8>, BlobError> {
        if self.declared > 0 && (self.data.len() as u64) < self.declared {
            return Err(BlobError::Short {
                have: self.data.len(),
                declared: self.declared,
            });
        }
        Ok(self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn messages_use_containerds_field_numbers() {
        // Container.image is field 3 (id 1, labels 2): 0x1a = (3 << 3) | length-delimited.
        let c = Container {
            id: "a".into(),
            image: "img".into(),
        };
        assert_eq!(c.encode_to_vec(), b"\x0a\x01a\x1a\x03img");
        // Image.target is field 3; Descriptor media_type 1, digest 2, size 3.
        let bytes = b"\x0a\x01n\x1a\x0b\x0a\x01m\x12\x04sha2\x18\x07";
        let image = Image::decode(&bytes[..]).unwrap();
        let target = image.target.unwrap();
        assert_eq!(
            (
                target.media_type.as_str(),
                target.digest.as_str(),
                target.size
            ),
            ("m", "sha2", 7)
        );
        // Unknown fields (labels, annotations, timestamps) are skipped, not errors.
        let with_labels = b"\x12\x06\x0a\x01k\x12\x01v\x0a\x01x\x1a\x01i";
        assert_eq!(Container::decode(&with_labels[..]).unwrap().image, "i");
    }

    /// Asserts that `r` failed with `says` in its message.
    fn fails_with<T: std::fmt::Debug>(r: Result<T, BlobError>, says: &str) {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }

    #[test]
    fn blobs_are_capped_by_descriptor_and_limit() {
        // Declared over the limit: refused before a byte is read.
        let e = BlobBuffer::new("sha256:big", 3 << 30, 256 << 20)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("3221225472 bytes") && e.contains("268435456"),
            "{e}"
        );
        assert!(BlobBuffer::new("sha256:neg", -1, 10).is_err());
        // Declared 4: a fifth byte is refused, the exact four are fine, three are short.
        let mut b = BlobBuffer::new("d", 4, 10).unwrap();
        b.push(0, b"ab").unwrap();
        fails_with(b.push(2, b"cde"), "says is 4 bytes");
        b.push(2, b"cd").unwrap();
        assert_eq!(b.finish().unwrap(), b"abcd");
        let mut short = BlobBuffer::new("d", 4, 10).unwrap();
        short.push(0, b"abc").unwrap();
        fails_with(short.finish(), "3 of its 4");
        // Size unknown: the limit caps what streams in.
        let mut open = BlobBuffer::new("d", 0, 3).unwrap();
        open.push(0, b"abc").unwrap();
        fails_with(open.push(3, b"d"), "limit of 3");
        // Chunks must follow each other.
        let mut gap = BlobBuffer::new("d", 0, 10).unwrap();
        fails_with(gap.push(1, b"a"), "offset 1");
    }
}
