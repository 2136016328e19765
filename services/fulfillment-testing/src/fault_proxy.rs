//! A TCP proxy that lies the way networks do, between the processes under test and a real
//! `redis-server`: it goes silent both ways, closes every connection, leaves every connection
//! half-open (the server side gone, the client side open and silent: a node crash or a lost NAT
//! entry without a FIN), delays every chunk, trickles bytes, or resets connections.
//!
//! Silence holds bytes in the sockets' buffers (nothing is read), so a silence that ends delivers
//! late what was sent during it, as a healed partition's retransmissions do. Connections accepted
//! during a silence stay silent too. Every mode applies to connections open now and to those
//! accepted later.

use rand::Rng;
use redis::io::tcp::socket2::SockRef;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How bytes cross the proxy now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At once.
    Pass,
    /// Not at all, either way, until the mode changes.
    Silent,
    /// Each chunk after a latency drawn in `min..=max`, in order.
    Latency { min: Duration, max: Duration },
    /// At most `bytes` every `every`, each way.
    Trickle { bytes: usize, every: Duration },
}

/// What a fault does to the connections open now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Both sides closed with a FIN.
    Close,
    /// Both sides reset (RST).
    Reset,
    /// The server side closed; the client side left open and silent until the client closes it.
    HalfOpen,
}

/// One proxied connection's switches.
#[derive(Debug, Clone)]
struct Switches {
    cut: watch::Sender<Option<Cut>>,
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Mutex<Vec<Switches>>,
    accepted: AtomicUsize,
}

/// A proxy on a free port of 127.0.0.1 to `upstream`; stopped (every connection dropped) on drop.
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
    stop: CancellationToken,
    accepting: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream` in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            upstream,
            mode: watch::channel(Mode::Pass).0,
            connections: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let accepting = tokio::spawn(accept(listener, state.clone(), stop.clone()));
        Self {
            port,
            state,
            stop,
            accepting,
        }
    }

    /// A proxy to a `redis://127.0.0.1:PORT` URL's server.
    pub async fn to_url(url: &str) -> Self {
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("a redis://127.0.0.1:PORT url");
        Self::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on, bytes cross as `mode` says.
    pub fn set(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.state.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Closes both sides of every open connection (FIN).
    pub fn close_all(&self) {
        self.cut_all(Cut::Close);
    }

    /// Resets both sides of every open connection (RST).
    pub fn reset_all(&self) {
        self.cut_all(Cut::Reset);
    }

    /// Closes the server side of every open connection and leaves its client side open and
    /// silent, for good: what a client sees when its server vanished without a word.
    pub fn half_open_all(&self) {
        self.cut_all(Cut::HalfOpen);
    }

    fn cut_all(&self, cut: Cut) {
        let connections = std::mem::take(
            &mut *self
                .state
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for switches in connections {
            switches.cut.send_replace(Some(cut));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.accepting.abort();
        self.cut_all(Cut::Close);
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        state.accepted.fetch_add(1, Ordering::Relaxed);
        let switches = Switches {
            cut: watch::channel(None).0,
        };
        state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(switches.clone());
        tokio::spawn(proxy(client, state.clone(), switches, stop.clone()));
    }
}

/// One connection: both directions until either side ends or a cut comes.
async fn proxy(client: TcpStream, state: Arc<State>, switches: Switches, stop: CancellationToken) {
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut cut = switches.cut.subscribe();
    let how = {
        let up = pump(&mut client_read, &mut server_write, state.mode.subscribe());
        let down = pump(&mut server_read, &mut client_write, state.mode.subscribe());
        tokio::select! {
            _ = stop.cancelled() => Cut::Close,
            _ = up => Cut::Close,
            _ = down => Cut::Close,
            changed = cut.wait_for(Option::is_some) => match changed {
                Ok(how) => how.unwrap_or(Cut::Close),
                Err(_) => Cut::Close,
            },
        }
    };
    match how {
        Cut::Close => {}
        Cut::Reset => {
            for socket in [client_read.as_ref(), server_read.as_ref()] {
                let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
            }
        }
        Cut::HalfOpen => {
            drop((server_read, server_write));
            // The client side stays open: what the client sends is taken and goes nowhere,
            // nothing ever comes back, until the client gives up on the connection.
            let mut sink = vec![0u8; 64 * 1024];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    read = client_read.read(&mut sink) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
            drop(client_write);
        }
    }
}

/// Forwards `from` to `to` as the mode says, until either side ends.
async fn pump(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_due = Instant::now();
        loop {
            if mode.wait_for(|m| *m != Mode::Silent).await.is_err() {
                return;
            }
            let current = *mode.borrow();
            let limit = match current {
                Mode::Trickle { bytes, .. } => bytes.clamp(1, buf.len()),
                _ => buf.len(),
            };
            let n = match from.read(&mut buf[..limit]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // A read that was waiting when the silence began holds what it got until it ends.
            if mode.wait_for(|m| *m != Mode::Silent).await.is_err() {
                return;
            }
            let current = *mode.borrow();
            let at = match current {
                Mode::Latency { min, max } => {
                    let span = u64::try_from(max.saturating_sub(min).as_millis()).unwrap_or(0);
                    let extra = rand::rng().random_range(0..=span);
                    Instant::now() + min + Duration::from_millis(extra)
                }
                _ => Instant::now(),
            }
            .max(last_due);
            last_due = at;
            if chunks.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
            if let Mode::Trickle { every, .. } = current {
                tokio::time::sleep(every).await;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}
