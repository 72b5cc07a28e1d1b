//! Helpers shared by the binary's integration tests.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

/// Kills the child on drop, so a failing test leaves no process behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the gateway at `addr` answers its health check with 200.
pub fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.write_all(b"GET /_turnpike/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Waits up to 30 s for the gateway at `addr` to be healthy.
pub fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if healthy(addr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway at {addr} did not become healthy");
}
