//! The cold-start burst: N requests at once across T tenants that have no token yet.
//!
//! Each tenant gets one HTTP/2 (prior knowledge) connection carrying its share of the requests
//! as concurrent streams (at most 100 per connection, under hyper's default of 200), so 10,000
//! requests are all in flight together without 10,000 client sockets; the machine's descriptor
//! limit is 20,000 and the proxy needs one upstream connection per in-flight request as well.

use std::collections::BTreeMap;
use std::io::Write as _;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BenchError;

#[derive(Debug, clap::Args)]
pub(crate) struct ColdArgs {
    /// The proxy's main listener, `127.0.0.1:PORT`.
    #[arg(long)]
    proxy: String,
    /// Tenants are named `<prefix><i>` for i in 0..tenants.
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    #[arg(long, default_value = "t")]
    prefix: String,
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Path after the tenant segment.
    #[arg(long, default_value = "/rest/default/V1/products/bench-sku-0001")]
    path: String,
}

/// Sends the burst and prints `{"requests", "ok", "statuses", "errors", "elapsed_ms"}`.
pub(crate) async fn run(args: ColdArgs) -> Result<(), BenchError> {
    let started = Instant::now();
    let per_tenant = args.requests.div_ceil(args.tenants.max(1));
    let mut tenants = JoinSet::new();
    let mut remaining = args.requests;
    for i in 0..args.tenants {
        let count = per_tenant.min(remaining);
        remaining -= count;
        let path = format!("/{}{i}{}", args.prefix, args.path);
        tenants.spawn(one_tenant(args.proxy.clone(), path, count));
    }
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(joined) = tenants.join_next().await {
        let outcomes = joined.map_err(|e| BenchError::Http(e.to_string()))?;
        for outcome in outcomes {
            *statuses.entry(outcome).or_default() += 1;
        }
    }
    let ok = statuses.get("200").copied().unwrap_or(0);
    let line = serde_json::json!({
        "requests": args.requests,
        "ok": ok,
        "statuses": statuses,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// One connection, `count` concurrent streams; returns one status (or error text) per request.
async fn one_tenant(proxy: String, path: String, count: usize) -> Vec<String> {
    let sender = match connect(&proxy).await {
        Ok(sender) => sender,
        Err(error) => return vec![format!("connect: {error}"); count],
    };
    let mut streams = JoinSet::new();
    for _ in 0..count {
        let mut sender = sender.clone();
        let request = Request::get(format!("http://{proxy}{path}")).body(Empty::<Bytes>::new());
        streams.spawn(async move {
            let request = request.map_err(|e| e.to_string())?;
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(response.status().as_u16().to_string())
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(joined) = streams.join_next().await {
        outcomes.push(match joined {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => format!("error: {error}"),
            Err(error) => format!("task: {error}"),
        });
    }
    outcomes
}

async fn connect(proxy: &str) -> Result<http2::SendRequest<Empty<Bytes>>, BenchError> {
    let stream = TcpStream::connect(proxy).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| BenchError::Http(e.to_string()))?;
    tokio::spawn(connection);
    Ok(sender)
}
