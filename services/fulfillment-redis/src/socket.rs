//! The TCP settings of every socket to Redis: no Nagle delay, keepalive probes and a user
//! timeout, so a peer that vanished without a FIN is noticed in seconds, not Linux's two hours.

use redis::io::tcp::socket2;
use std::time::Duration;

/// Keepalive probes start after this much silence on a socket...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// ...go out this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// ...and this many unanswered ones drop the connection (a dead peer found in about 11 s).
const KEEPALIVE_PROBES: u32 = 3;
/// Data sent and not acknowledged by the peer for this long drops the connection
/// (`TCP_USER_TIMEOUT`), so a write to a vanished peer fails instead of retransmitting for
/// 15 minutes.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// TCP settings of every connection: `TCP_NODELAY` (redis-rs leaves Nagle's algorithm on, which
/// holds a request back while an earlier one is unacknowledged: a millisecond or more per hop
/// once several readers share the work), keepalive probes and a user timeout, so a peer that
/// vanished is noticed in seconds rather than Linux's default two hours.
pub fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive())
        .set_user_timeout(TCP_USER_TIMEOUT)
}

/// The keepalive of [`tcp_settings`].
pub fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES)
}

/// Puts [`tcp_settings`]'s options on a socket opened without redis-rs.
pub fn apply_tcp_settings(socket: &tokio::net::TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let socket = socket2::SockRef::from(socket);
    socket.set_tcp_keepalive(&keepalive())?;
    socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
}
