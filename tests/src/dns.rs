//! A DNS server of a test's own: Debian's dnsmasq on a free port of
//! 127.0.0.1, answering only the TXT records the test gives it (and "no
//! such name" for everything else). `scripts/test` installs dnsmasq.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq; stopped when dropped.
pub struct DnsPeer {
    addr: SocketAddr,
    child: Option<Child>,
    folder: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("DNSMASQ").unwrap_or_else(|_| "/usr/sbin/dnsmasq".into())
}

impl DnsPeer {
    /// A server with no records yet, ready to answer.
    pub async fn start() -> Self {
        let mut folder = tempfile::tempdir().expect("dnsmasq folder");
        let mut last = String::new();
        for _ in 0..3 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free UDP port")
                .port();
            let mut peer = Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child: None,
                folder,
            };
            match peer.run(&[]).await {
                Ok(()) => return peer,
                Err(log) => {
                    last = log;
                    folder = peer.take_folder();
                }
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    fn take_folder(mut self) -> tempfile::TempDir {
        self.stop();
        std::mem::replace(&mut self.folder, tempfile::tempdir().expect("folder"))
    }

    /// The address to ask (`sso_federation.dns_servers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves exactly these TXT records (name, value) from now on: the
    /// server is restarted on the same port with them. Commas in a value
    /// split it into several character-strings of one record.
    pub async fn set_txt(&mut self, records: &[(&str, &str)]) {
        self.stop();
        if let Err(log) = self.run(records).await {
            panic!("dnsmasq did not restart with {records:?}: {log}");
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn run(&mut self, records: &[(&str, &str)]) -> Result<(), String> {
        let log_path = self.folder.path().join("dnsmasq.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(binary());
        command
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                "--pid-file=",
                "--log-facility=-",
                // Every name is local: what is not listed does not exist.
                "--local=/#/",
            ])
            .arg(format!("--port={}", self.addr.port()));
        for (name, value) in records {
            assert!(!name.contains(','), "a record name has no commas");
            command.arg(format!("--txt-record={name},{value}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {} (scripts/test installs it): {e}", binary()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("started, version") {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                self.stop();
                return Err(log);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DnsPeer {
    fn drop(&mut self) {
        self.stop();
    }
}
