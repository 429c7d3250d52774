//! Connections counted on the wire: tcpdump on the loopback interface, counting the SYNs
//! (connection opens) sent to one port. Independent of the service's own counters.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running capture of the connections opened to a port.
pub struct SynCounter {
    child: Child,
    opened: Arc<AtomicU64>,
    reader: Option<JoinHandle<()>>,
}

impl SynCounter {
    /// Starts tcpdump and returns once it captures (it has said "listening on").
    pub fn start(port: u16) -> SynCounter {
        let filter =
            format!("tcp dst port {port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn");
        let mut child = Command::new("tcpdump")
            // A bigger buffer and no batching: 200 SYNs at once overflowed the default.
            .args([
                "-i",
                "lo",
                "-nn",
                "-l",
                "-U",
                "--immediate-mode",
                "-B",
                "65536",
                &filter,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (Debian's tcpdump package; .ci/run installs it) must run as root");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).expect("tcpdump stderr");
            assert!(
                n > 0,
                "tcpdump stopped before capturing: {:?}",
                child.wait()
            );
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || for _ in stderr.lines() {});
        let opened = Arc::new(AtomicU64::new(0));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let count = opened.clone();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines() {
                if line.is_ok_and(|l| l.contains("Flags [S]")) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        SynCounter {
            child,
            opened,
            reader: Some(reader),
        }
    }

    /// Connections opened so far (packets reach the counter within milliseconds: wait
    /// for them with [`SynCounter::settled`]).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::SeqCst)
    }

    /// The count once it has stopped changing for 300 ms.
    pub async fn settled(&self) -> u64 {
        let mut last = self.opened();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.opened();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for SynCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
