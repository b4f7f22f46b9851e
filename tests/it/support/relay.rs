//! A TCP relay on 127.0.0.1 that delays every chunk, each way, by a fixed time: a slow network
//! between the proxy and its Redis, without root or `tc`. Order is kept; throughput is not limited.
//! It runs on the test's runtime and stops when dropped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct Relay {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Relays to `target`, each chunk `one_way` late in each direction (a round trip costs twice).
    pub async fn start(target: SocketAddr, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        connect(inbound, outbound, one_way);
                    }
                });
            }
        });
        Self { addr, accept }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Both directions of one connection.
fn connect(inbound: TcpStream, outbound: TcpStream, one_way: Duration) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    pipe(in_read, out_write, one_way);
    pipe(out_read, in_write, one_way);
}

/// Reads chunks as they come and writes each `delay` after it was read, in order.
fn pipe(
    mut from: impl AsyncReadExt + Unpin + Send + 'static,
    mut to: impl AsyncWriteExt + Unpin + Send + 'static,
    delay: Duration,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            if chunks.send((Instant::now() + delay, buffer[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}
