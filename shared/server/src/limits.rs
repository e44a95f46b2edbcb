//! The limits and timeouts of connections and requests, every one set
//! explicitly (none left to a library's default).

use std::time::Duration;

use twig_config::ServerConfig;

/// Limits of connections and requests; the message size limit is set on
/// each service. See [`ServerConfig`] for what each one means.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest header block a client may send (HTTP/2 SETTINGS).
    pub max_header_bytes: u32,
    /// Longest a request may run; a client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Longest wait for a new connection's first bytes.
    pub first_byte_timeout: Duration,
    /// Longest wait for an HTTP/1 request's headers.
    pub http1_header_read_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 ping interval.
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered.
    pub http2_keepalive_timeout: Duration,
    /// A connection is closed after about this long; `None`: never.
    pub max_connection_age: Option<Duration>,
    /// How long requests may finish on a connection that is closing.
    pub max_connection_age_grace: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one address at most.
    pub max_connections_per_address: usize,
    /// Requests being served at once, at most.
    pub max_requests_in_flight: usize,
    /// Streams a client may make the server reset before it is cut off.
    pub http2_max_local_error_resets: usize,
    /// Client-reset streams not yet taken up, at most.
    pub http2_max_pending_accept_resets: usize,
    /// Bytes buffered for sending per HTTP/2 stream.
    pub http2_max_send_buf_bytes: usize,
    /// HTTP/2 stream flow-control window.
    pub http2_initial_stream_window_bytes: u32,
    /// HTTP/2 connection flow-control window.
    pub http2_initial_connection_window_bytes: u32,
    /// Largest HTTP/2 frame payload accepted.
    pub http2_max_frame_bytes: u32,
    /// Headers per HTTP/1 request.
    pub http1_max_headers: usize,
    /// Largest HTTP/1 read buffer.
    pub http1_max_buf_bytes: usize,
}

impl Limits {
    /// The limits of a validated `[server]` section. Without a configured
    /// connection cap, the cap comes from the descriptor limit.
    pub fn from_config(server: &ServerConfig) -> Self {
        let max_connections = match server.max_connections {
            Some(n) => n as usize,
            None => default_max_connections(descriptor_limit()),
        };
        Self {
            max_header_bytes: server.max_header_bytes,
            request_timeout: server.request_timeout,
            max_concurrent_streams: server.max_concurrent_streams,
            first_byte_timeout: server.first_byte_timeout,
            http1_header_read_timeout: server.http1_header_read_timeout,
            idle_timeout: server.idle_timeout,
            http2_keepalive_interval: server.http2_keepalive_interval,
            http2_keepalive_timeout: server.http2_keepalive_timeout,
            max_connection_age: (!server.max_connection_age.is_zero())
                .then_some(server.max_connection_age),
            max_connection_age_grace: server.max_connection_age_grace,
            max_connections,
            max_connections_per_address: server.max_connections_per_address as usize,
            max_requests_in_flight: server.max_requests_in_flight as usize,
            http2_max_local_error_resets: server.http2_max_local_error_resets as usize,
            http2_max_pending_accept_resets: server.http2_max_pending_accept_resets as usize,
            http2_max_send_buf_bytes: server.http2_max_send_buf_bytes as usize,
            http2_initial_stream_window_bytes: server.http2_initial_stream_window_bytes,
            http2_initial_connection_window_bytes: server.http2_initial_connection_window_bytes,
            http2_max_frame_bytes: server.http2_max_frame_bytes,
            http1_max_headers: server.http1_max_headers as usize,
            http1_max_buf_bytes: server.http1_max_buf_bytes as usize,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&ServerConfig::default())
    }
}

/// The connection cap for a descriptor limit: three quarters of it, the
/// rest left for the database pool, Redis, the admin port, log files and
/// the accept loop's own headroom; at least 64.
pub fn default_max_connections(descriptor_limit: u64) -> usize {
    let cap = descriptor_limit.saturating_mul(3) / 4;
    usize::try_from(cap).unwrap_or(usize::MAX).max(64)
}

/// This process's soft limit of open file descriptors (`RLIMIT_NOFILE`);
/// 1024, the usual default, if it cannot be read.
#[allow(unsafe_code)]
pub fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own and
    // pass by a valid pointer; nothing else is touched.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if result != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return if result == 0 { 1 << 20 } else { 1024 };
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_quarter_of_the_descriptors() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(20_000), 15_000);
        assert_eq!(default_max_connections(10), 64);
        assert!(descriptor_limit() >= 16);
    }

    #[test]
    fn every_configured_value_is_carried() {
        let mut config = ServerConfig {
            max_connections: Some(77),
            ..ServerConfig::default()
        };
        config.max_connection_age = Duration::ZERO;
        let limits = Limits::from_config(&config);
        assert_eq!(limits.max_connections, 77);
        assert_eq!(limits.max_connection_age, None);
        assert_eq!(limits.http2_max_local_error_resets, 1024);
        assert_eq!(limits.max_concurrent_streams, 100);
    }
}
