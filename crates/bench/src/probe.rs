//! Start-up time and resident memory of a `turnpike serve` process.
//!
//! Start-up is the time from spawning the process to the first `200` it serves (polled every
//! 0.5 ms over fresh connections), the median of several starts. Memory is `VmRSS` from
//! `/proc/<pid>/status`: once idle after start, then while N keep-alive connections are open,
//! each having completed one request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Arguments of `turnpike-bench startup`.
#[derive(clap::Args)]
pub struct Args {
    /// The `turnpike` binary.
    #[arg(long)]
    turnpike: PathBuf,
    /// Its configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Address the gateway listens on.
    #[arg(long)]
    addr: SocketAddr,
    /// A path the gateway answers with 200 (a free route).
    #[arg(long, default_value = "/free/x")]
    path: String,
    /// Number of starts (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Connections to hold open for the loaded memory figure.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// JSON file to write.
    #[arg(long)]
    out: PathBuf,
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &Args) -> anyhow::Result<Gateway> {
    let child = Command::new(&args.turnpike)
        .arg("serve")
        .arg("--config")
        .arg(&args.config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.turnpike.display()))?;
    Ok(Gateway(child))
}

/// One request on `stream` (keep-alive); true on a 200 with its whole body read.
fn request(
    stream: &mut TcpStream,
    addr: SocketAddr,
    path: &str,
    close: bool,
) -> std::io::Result<bool> {
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn}\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let ok = head.starts_with("http/1.1 200");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(false);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(ok);
    }
}

fn first_served(args: &Args, started: Instant) -> anyhow::Result<Duration> {
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(mut s) = TcpStream::connect(args.addr)
            && let Ok(true) = request(&mut s, args.addr, &args.path, true)
        {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    bail!("the gateway served nothing within 20 s")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// Measures and writes the JSON results.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let gw = spawn(args)?;
        times.push(first_served(args, started)?.as_secs_f64() * 1000.0);
        drop(gw);
        // Let the port be released before the next start.
        std::thread::sleep(Duration::from_millis(100));
    }
    times.sort_by(f64::total_cmp);
    let startup_ms = crate::quantile(&times, 0.5);

    let gw = spawn(args)?;
    first_served(args, Instant::now())?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = gw.0.id();
    let idle_kib = rss_kib(pid)?;
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let mut s = TcpStream::connect(args.addr).with_context(|| format!("connection {i}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        if !request(&mut s, args.addr, &args.path, false)? {
            bail!("connection {i}: no 200");
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let loaded_kib = rss_kib(pid)?;
    // Every connection is still usable.
    let mut alive = 0;
    for s in &mut conns {
        if request(s, args.addr, &args.path, false).unwrap_or(false) {
            alive += 1;
        }
    }
    drop(conns);
    drop(gw);
    crate::write_json(
        &args.out,
        &serde_json::json!({
            "startup_ms_median": startup_ms,
            "startup_ms_all": times,
            "rss_idle_mib": idle_kib as f64 / 1024.0,
            "rss_connections_mib": loaded_kib as f64 / 1024.0,
            "connections": args.connections,
            "connections_alive_after": alive,
        }),
    )
}
