//! HTTP/1.1 on the wire, for both sides of the proxy: heads parsed (RFC 9112, strictly) and
//! their body framing decided, the chunked coding read and written, the stream types of
//! client and origin connections, and file ranges sent with `sendfile`. Knows nothing of the pipeline or the configuration: the
//! client connections (`proxy::http1`) and the origin client (`upstream::client`) both build
//! on it.

pub mod http1;
#[cfg(target_os = "linux")]
pub mod sendfile;
pub mod stream;
