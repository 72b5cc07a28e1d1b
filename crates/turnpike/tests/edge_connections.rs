//! Slow, idle, too many and stuck clients against the real `turnpike serve` binary over
//! loopback: half-sent heads and idle keep-alive connections are closed on time while normal
//! requests stay fast, connections over the cap get a 503, running out of file descriptors is
//! logged once and does not spin, and SIGTERM returns within its bound.

#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_turnpike");

/// The gateway process, killed on drop; its log is collected in a file.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Size of the `/big` answer.
const BIG: usize = 64 << 20;

/// A plain upstream: `/slow` answers after 20 s, `/big` with 64 MiB, anything else at once.
fn spawn_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_upstream(stream));
        }
    });
    addr
}

fn serve_upstream(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            if head.starts_with("GET /slow") {
                std::thread::sleep(Duration::from_secs(20));
            }
            if head.starts_with("GET /truncated") {
                // Announces 100 bytes, sends 10, and dies.
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
                return;
            }
            if head.starts_with("GET /big") {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                let chunk = vec![b'x'; 1 << 20];
                let sent = stream.write_all(head.as_bytes()).is_ok()
                    && (0..BIG >> 20).all(|_| stream.write_all(&chunk).is_ok());
                if !sent {
                    return;
                }
                continue;
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Starts `turnpike serve` with `[connections]` set to `connections`, under `ulimit -n` when
/// given.
fn start(connections: &str, file_limit: Option<u32>) -> Gateway {
    let up = spawn_upstream();
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("turnpike.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\nadmin.listen = \"127.0.0.1:0\"\nworkers = 2\n[connections]\n{connections}\n\
             [backend]\nkind = \"dev\"\n\
             [[services]]\nname = \"priced\"\npath = \"/priced\"\nupstream = \"http://{up}\"\n\
             price_sats = 5\npricer = {{ url = \"http://127.0.0.1:9/\" }}\n\
             [[services]]\nname = \"free\"\nupstream = \"http://{up}\"\nprice_sats = 0\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let limit = file_limit.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" serve --config \"$1\" 2>\"$2\"",))
        .arg(BIN)
        .arg(&config)
        .arg(&log)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let gateway = Gateway {
        child,
        addr,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/ready").is_none() {
        assert!(Instant::now() < deadline, "no start:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    gateway
}

/// One GET on a new connection: the status line, or `None` if the connection failed.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

/// Reads one response to a request on a kept-alive connection (the upstream answers `ok`).
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// How long until the server closes `s` (reads until end of stream or reset).
fn time_to_close(s: &mut TcpStream, start: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn slow_and_idle_clients_are_closed_on_time_and_others_stay_fast() {
    let gw = start(
        "header_read_timeout_secs = 1\nkeep_alive_timeout_secs = 2",
        None,
    );

    // A silent connection and a half-sent head: closed after the head timeout.
    let start = Instant::now();
    let mut silent = TcpStream::connect(gw.addr).unwrap();
    let mut half = TcpStream::connect(gw.addr).unwrap();
    half.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n").unwrap();
    // A client trickling its head a byte at a time is closed all the same.
    let mut trickle = TcpStream::connect(gw.addr).unwrap();
    let trickler = std::thread::spawn(move || {
        for b in b"GET /x HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*b]).is_err() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        time_to_close(&mut trickle, start)
    });
    // Meanwhile normal requests are served at once.
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(gw.addr, "/x").as_deref(), Some("HTTP/1.1 200 OK"));
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    let silent_closed = time_to_close(&mut silent, start);
    let half_closed = time_to_close(&mut half, start);
    for closed in [silent_closed, half_closed] {
        assert!(
            closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
            "closed after {closed:?}"
        );
    }
    let trickle_closed = trickler.join().unwrap();
    assert!(
        trickle_closed < Duration::from_millis(2500),
        "{trickle_closed:?}"
    );

    // A keep-alive connection: served, then closed after being idle for 2 s, not before.
    let mut keep = TcpStream::connect(gw.addr).unwrap();
    keep.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut keep).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1200));
    // Still open after 1.2 s: a second request on it is served (and restarts the idle clock).
    keep.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut keep).starts_with("HTTP/1.1 200"));
    let idle_start = Instant::now();
    let closed = time_to_close(&mut keep, idle_start);
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_millis(3500),
        "idle keep-alive closed after {closed:?}"
    );
}

#[test]
fn connections_over_the_cap_get_503_and_one_log_line() {
    let gw = start("max = 4\nheader_read_timeout_secs = 30", None);
    // Hold four connections open (the readiness probe's has closed by now).
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..10 {
        let line = get(gw.addr, "/x");
        assert_eq!(
            line.as_deref(),
            Some("HTTP/1.1 503 Service Unavailable"),
            "over the cap"
        );
    }
    let log = gw.log();
    assert_eq!(
        log.matches("the connection limit is reached").count(),
        1,
        "{log}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(gw.addr, "/x").as_deref(), Some("HTTP/1.1 200 OK"));
    assert!(
        gw.log()
            .contains("no longer: the connection limit is reached")
    );
}

#[test]
fn running_out_of_file_descriptors_is_logged_once_and_does_not_spin() {
    let gw = start("max = 100000\nheader_read_timeout_secs = 30", Some(64));
    // Take every descriptor the gateway has, and then some.
    let mut held = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = TcpStream::connect(gw.addr) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let spent = gw.cpu_ticks() - before;
    // Clock ticks are 1/100 s: a spinning accept loop would use most of the 3 s.
    assert!(
        spent < 50,
        "{spent} ticks of CPU in 3 s while out of descriptors"
    );
    let log = gw.log();
    // Logged when it starts (and when it ends, or as a summary every 10 s), not on every
    // attempt: a loop retrying every 50 ms would log some sixty lines here.
    let lines = log.matches("accepting connections fails").count();
    assert!((1..=5).contains(&lines), "{lines} log lines:\n{log}");
    assert!(log.contains("open-file limit is below"), "{log}");
    // Once descriptors are free again, clients are served.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(gw.addr, "/x").as_deref() != Some("HTTP/1.1 200 OK") {
        assert!(Instant::now() < deadline, "not served after recovery");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_returns_within_the_bound_with_stuck_clients() {
    // A half-sent head has nothing in flight: it does not hold shutdown up at all.
    let mut gw = start(
        "shutdown_grace_secs = 2\nheader_read_timeout_secs = 60",
        None,
    );
    let mut half = TcpStream::connect(gw.addr).unwrap();
    half.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n").unwrap();
    let idle = TcpStream::connect(gw.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let took = gw.terminate();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    drop(idle);

    // A request in flight gets the grace period, then its connection is closed.
    let mut gw = start("shutdown_grace_secs = 2", None);
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let took = gw.terminate();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(gw.log().contains("after the shutdown grace period"));
}

#[test]
fn a_slow_body_before_payment_gets_408_and_a_client_that_stops_reading_is_closed() {
    let gw = start("body_read_timeout_secs = 1\nsend_timeout_secs = 1", None);
    // A priced request whose body (read for the pricer, before any payment) never comes.
    let start = Instant::now();
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    slow.write_all(b"POST /priced HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let answer = read_response_head(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // A client that asks for 64 MiB and reads nothing is closed once its socket is full.
    let mut reader = TcpStream::connect(gw.addr).unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(
        received < BIG,
        "the whole body arrived: the connection was not cut"
    );
    // Meanwhile the gateway serves others.
    assert_eq!(get(gw.addr, "/x").as_deref(), Some("HTTP/1.1 200 OK"));
}

/// Reads until the end of a response head.
fn read_response_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn an_upstream_that_dies_mid_body_is_logged() {
    let gw = start("", None);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /truncated HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    // The client never gets a whole response: at most the head and the first bytes, then the
    // connection is closed.
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(answer.len() < 100, "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains("cut short") {
        assert!(Instant::now() < deadline, "not logged:\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
