//! Child processes of the tests (`peercache serve`, etcd): free loopback ports, and a
//! guard that kills the child when the test ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A port the OS just handed out (and took back), for a child process to bind.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` different ports the OS just handed out (all held until all are chosen).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Proc {
            name: name.into(),
            child,
        }
    }

    /// Panics if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited early: {status}", self.name);
        }
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill -{signal} {}: {status}", self.name);
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn exited_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (up to 10 s) until `{url}/healthz` answers 200; fails if the process exits.
    pub async fn until_healthy(&mut self, url: &str) {
        for _ in 0..500 {
            if let Ok(r) = reqwest::get(format!("{url}/healthz")).await
                && r.status().is_success()
            {
                return;
            }
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} did not become healthy within 10 s", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("peercache-test-{}-{what}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
