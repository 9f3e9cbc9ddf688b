//! The timeouts and limits of client connections, taken from the config once and shared by
//! the HTTP/1 and HTTP/2 servers.

use std::time::Duration;

use crate::wire::http1::Limits;

/// Most body bytes gathered for a response's first vectored write.
pub(super) const WRITE_BATCH: u64 = 512 * 1024;
/// Room left under the unsent-bytes limit for the chunk that takes a batch past its budget
/// (a chunk is one origin read, about 64 KiB; room for two).
const BATCH_OVERSHOOT: u64 = 128 * 1024;
/// The smallest batch, however low the unsent-bytes limit.
const MIN_WRITE_BATCH: u64 = 64 * 1024;

/// Timeouts and limits of client connections, taken from the config once.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Request head limits.
    pub limits: Limits,
    /// Time to receive a whole head once it has started.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: Duration,
    /// Time between two reads of a request body.
    pub body_timeout: Duration,
    /// Time for the client to accept a write.
    pub send_timeout: Duration,
    /// Largest request body.
    pub max_body: u64,
    /// Most body bytes gathered for each vectored write after a response's first.
    pub write_batch: u64,
}

impl Settings {
    /// The settings of `config`.
    pub fn from_config(config: &crate::config::ServerConfig) -> Settings {
        Settings {
            limits: Limits {
                max_request_line: config.max_request_line.bytes() as usize,
                max_header_bytes: config.max_header_bytes.bytes() as usize,
                max_headers: config.max_headers,
            },
            header_timeout: config.header_read_timeout.duration(),
            keepalive_timeout: config.keepalive_timeout.duration(),
            body_timeout: config.body_read_timeout.duration(),
            send_timeout: config.send_timeout.duration(),
            max_body: config.max_request_body.bytes(),
            write_batch: steady_write_batch(config.tcp_notsent_lowat.bytes()),
        }
    }
}

/// The batch for a body's writes after its first, under back-pressure: small enough that a
/// batch (with the chunk that takes it past its budget) stays under the socket's unsent-bytes
/// limit, so the kernel takes it in one call. A larger batch was taken in part: the worker
/// then waited for the socket and wrote the rest alone, once per batch. (The first write goes
/// into a socket with nothing unsent and may be larger.) Measured in bench/RESULTS.md,
/// "Write batches under the unsent limit".
fn steady_write_batch(notsent_lowat: u64) -> u64 {
    match notsent_lowat {
        0 => WRITE_BATCH,
        limit => limit
            .saturating_sub(BATCH_OVERSHOOT)
            .clamp(MIN_WRITE_BATCH, WRITE_BATCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Later batches fit under the unsent-bytes limit with room for the chunk that overshoots
    /// a batch, so the kernel takes each in one write; no limit keeps the first batch's size.
    #[test]
    fn steady_batches_fit_under_the_unsent_limit() {
        assert_eq!(steady_write_batch(0), WRITE_BATCH);
        for limit_kib in [192, 256, 384, 512, 640, 1024, 4096] {
            let limit = limit_kib * 1024;
            let batch = steady_write_batch(limit);
            assert!(
                batch + BATCH_OVERSHOOT <= limit,
                "{batch} for a limit of {limit}"
            );
            assert!(
                (MIN_WRITE_BATCH..=WRITE_BATCH).contains(&batch),
                "{batch} for {limit}"
            );
        }
        // As documented (docs/operations.md, "Sending").
        let default = crate::config::Config::default();
        assert_eq!(
            Settings::from_config(&default.server).write_batch,
            384 * 1024
        );
    }
}
