//! Per-event delay of an SSE stream: each event carries the time the upstream wrote it; the
//! delay is the time it is read here minus that. Run directly against the upstream and through
//! each proxy, the difference of medians is the delay the proxy adds.

use std::path::PathBuf;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// Arguments of `turnpike-bench sse`.
#[derive(clap::Args)]
pub struct Args {
    /// URL of the stream (`http://host:port/path?n=EVENTS&ms=INTERVAL`).
    #[arg(long)]
    url: String,
    /// Extra request header (`Name: value`), e.g. a credential.
    #[arg(long)]
    header: Vec<String>,
    /// JSON file to write.
    #[arg(long)]
    out: PathBuf,
}

/// Reads the stream and writes the JSON results.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut delays = rt.block_on(read_stream(args))?;
    if delays.is_empty() {
        bail!("no events received from {}", args.url);
    }
    delays.sort_by(f64::total_cmp);
    crate::write_json(
        &args.out,
        &serde_json::json!({
            "url": args.url,
            "events": delays.len(),
            "delay_us_p50": crate::quantile(&delays, 0.5),
            "delay_us_p99": crate::quantile(&delays, 0.99),
            "delay_us_max": delays.last(),
        }),
    )
}

async fn read_stream(args: &Args) -> anyhow::Result<Vec<f64>> {
    let uri: http::Uri = args.url.parse().context("--url")?;
    let authority = uri.authority().context("--url needs a host")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, authority.as_str());
    for h in &args.header {
        let (name, value) = h.split_once(':').context("--header needs Name: value")?;
        req = req.header(name.trim(), value.trim());
    }
    let resp = sender
        .send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new())?)
        .await?;
    if !resp.status().is_success() {
        bail!("{} answered {}", args.url, resp.status());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut delays = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = crate::unix_nanos();
        buf.extend_from_slice(data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            if let Some(t) = text
                .split("\"t\":")
                .nth(1)
                .and_then(|r| r.trim_end_matches(['}', '\n']).parse::<u128>().ok())
            {
                delays.push(now.saturating_sub(t) as f64 / 1000.0);
            }
        }
    }
    Ok(delays)
}
