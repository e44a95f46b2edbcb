//! Connections that hold the server's resources without using them:
//! silent ones (first-byte deadline), idle ones (idle timeout, HTTP/1.1
//! and HTTP/2), thousands at once (the cap sheds the longest-idle first
//! while requests keep their latency), and a process out of descriptors
//! (accept backs off instead of spinning). Live clients are not dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use twig_tests::{Backend, TestApp};

use crate::h2_frames::{hello, read_until_closed};

/// Waits until the server closes `stream` (end of stream or reset);
/// returns how long that took, or `None` if it is open after `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = bound.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the server has closed `stream` (looked at without waiting).
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A connection from `ip` (any address of 127.0.0.0/8).
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(addr).await.expect("connect")
}

async fn health(channel: &Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_first_byte_deadline() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.first_byte_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    for stream in &mut silent {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        let after = closed.expect("a silent connection is closed within 5 s");
        assert!(after < Duration::from_secs(3), "closed after {after:?}");
    }
    // A connection that speaks in time is served.
    assert_eq!(health(&app.channel).await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.idle_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // A plain HTTP/1.1 request, kept alive; its whole answer is read.
    stream
        .write_all(b"GET /no/such/route HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server answers before closing");
        answer.extend_from_slice(&buf[..n]);
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 "), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while answer.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        answer.extend_from_slice(&buf[..n]);
    }
    let started = Instant::now();
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
    let after = closed.expect("an idle keep-alive connection is closed within 5 s");
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_too_slowly_is_cut_off() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.http1_header_read_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // The start of a request, then a header now and then: never the end.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let dribble = async {
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let header = format!("X-Slow-{i}: y\r\n");
            if stream.write_all(header.as_bytes()).await.is_err() {
                break;
            }
        }
    };
    dribble.await;
    let closed = closed_within(&mut stream, Duration::from_secs(2)).await;
    assert!(
        closed.is_some(),
        "a request head still unfinished after {:?} is not cut off",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.idle_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer.write_all(&hello()).await.unwrap();
    let ended = read_until_closed(reader, Duration::from_secs(6))
        .await
        .expect("an idle HTTP/2 connection is closed within 6 s");
    assert_eq!(ended.goaway, Some(0), "GOAWAY NO_ERROR first: {ended:?}");
    assert!(ended.after >= Duration::from_millis(800), "{ended:?}");
    assert!(ended.after < Duration::from_secs(4), "{ended:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_grpc_streams_outlast_the_idle_timeout_and_pings() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| {
            c.server.idle_timeout = Duration::from_secs(1);
            c.server.http2_keepalive_interval = Duration::from_millis(500);
            c.server.http2_keepalive_timeout = Duration::from_millis(500);
        })
        .spawn()
        .await;
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("the current status");
    assert_eq!(first.status, 1);
    // Five idle timeouts and ten ping intervals: a live stream stays.
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    assert!(
        next.is_err(),
        "the stream ended or failed while the client was alive: {next:?}"
    );
    // And the same connection still carries calls.
    assert_eq!(health(&channel).await.unwrap(), 1);
    drop(watch);
    app.stop().await;
}

/// Latencies of `n` health checks one after another, sorted.
async fn latencies(channel: &Channel, n: usize) -> Vec<Duration> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        assert_eq!(health(channel).await.unwrap(), 1);
        all.push(start.elapsed());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_silent_connections_leave_requests_their_latency() {
    const CAP: u32 = 2_000;
    const SILENT: usize = 2_500;
    // Both ends of each connection live in this process.
    let needed = 2 * SILENT as u64 + 1_000;
    assert!(
        twig_server::descriptor_limit() >= needed,
        "this test needs `ulimit -n` of at least {needed}"
    );
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| {
            c.server.first_byte_timeout = Duration::from_secs(120);
            c.server.max_connections = Some(CAP);
        })
        .spawn()
        .await;
    let before = latencies(&app.channel, 200).await;

    // Silent connections from ten addresses, 250 each (under the
    // per-address cap), oldest first; requests go on meanwhile.
    let addr = app.addr;
    let opener = tokio::spawn(async move {
        let mut silent = Vec::with_capacity(SILENT);
        for i in 0..SILENT {
            let ip = [127, 0, 0, 10 + (i % 10) as u8];
            silent.push(connect_from(ip, addr).await);
        }
        silent
    });
    let mut during = Vec::new();
    while !opener.is_finished() {
        during.extend(latencies(&app.channel, 20).await);
    }
    let silent = opener.await.unwrap();
    during.extend(latencies(&app.channel, 200).await);
    during.sort();

    let (p50_before, p99_before) = (percentile(&before, 0.5), percentile(&before, 0.99));
    let (p50_during, p99_during) = (percentile(&during, 0.5), percentile(&during, 0.99));
    eprintln!(
        "health check before: p50 {p50_before:?} p99 {p99_before:?}; \
         with {SILENT} silent connections: p50 {p50_during:?} p99 {p99_during:?} ({} checks)",
        during.len()
    );
    assert!(
        p50_during <= p50_before * 5 + Duration::from_millis(20),
        "p50 {p50_before:?} → {p50_during:?}"
    );
    assert!(
        p99_during <= p99_before * 5 + Duration::from_millis(200),
        "p99 {p99_before:?} → {p99_during:?}"
    );

    // The cap closed the longest-idle (oldest silent) ones, and only those.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed: Vec<bool> = silent.iter().map(is_closed).collect();
    let shed = closed.iter().filter(|c| **c).count();
    let over = SILENT + 1 - CAP as usize;
    assert!(
        (over..over + 2 * (CAP as usize / 100) + 5).contains(&shed),
        "{shed} closed for {over} over the cap"
    );
    let first_open = closed.iter().position(|c| !c).unwrap();
    assert!(
        closed[first_open..].iter().all(|c| !c),
        "only the oldest are closed: first open at {first_open}, {shed} closed"
    );
    assert_eq!(health(&app.channel).await.unwrap(), 1);
    drop(silent);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| {
            c.server.first_byte_timeout = Duration::from_secs(120);
            c.server.max_connections_per_address = 50;
        })
        .spawn()
        .await;
    let mut silent = Vec::new();
    for _ in 0..80 {
        silent.push(connect_from([127, 0, 0, 77], app.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed: Vec<bool> = silent.iter().map(is_closed).collect();
    assert!(
        closed[..30].iter().all(|c| *c) && closed[30..].iter().all(|c| !c),
        "the 30 oldest of the address give way: {closed:?}"
    );
    // Another address is not touched.
    assert_eq!(health(&app.channel).await.unwrap(), 1);
    app.stop().await;
}

/// `twig-identity serve` with `ulimit -n` lowered to `descriptors`.
fn limited_server(db_url: &str, descriptors: u32) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        &format!("ulimit -n {descriptors} && exec \"$0\" \"$@\""),
    ])
    .arg(crate::twig_binary())
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("DATABASE_URL", db_url)
    .env("RUST_LOG", "error")
    .env("TWIG__SERVER__FIRST_BYTE_TIMEOUT", "120s")
    // Above the descriptor limit on purpose: accept itself must fail.
    .env("TWIG__SERVER__MAX_CONNECTIONS", "5000")
    .env("TWIG__SERVER__MAX_CONNECTIONS_PER_ADDRESS", "5000")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    cmd
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User + system CPU time of process `pid`.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_backs_off_and_recovers() {
    let db = twig_tests::TestDatabase::new(Backend::Sqlite).await;
    let admin = twig_tests::free_addr();
    let mut command = limited_server(&db.url, 256);
    command.env("TWIG__SERVER__ADMIN_LISTEN", admin.to_string());
    let (child, channel, addr) = twig_tests::spawn_serve_at(command, None).await;
    let child = KillOnDrop(child);
    assert_eq!(health(&channel).await.unwrap(), 1);
    let mut silent = Vec::new();
    for _ in 0..400 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => silent.push(s),
            _ => break,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_start = cpu_of(child.0.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_of(child.0.id()) - cpu_start;
    eprintln!("out of descriptors: {cpu:?} of CPU in 3 s");
    assert!(
        cpu < Duration::from_millis(600),
        "out of descriptors, the server used {cpu:?} of CPU in 3 s"
    );
    drop(silent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        health(&channel).await
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), fresh).await;
    assert_eq!(answer.expect("answers within 5 s").unwrap(), 1);
    let metrics = tokio::task::spawn_blocking(move || twig_tests::scrape_metrics(admin))
        .await
        .unwrap();
    drop(child);
    // Failed accepts are counted, and idle connections were closed to
    // free descriptors.
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value(r#"twig_accept_errors_total{kind="descriptors"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(
        value(r#"twig_connections_closed_total{reason="shed"}"#) >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE twig_connections_open gauge"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_connection_is_asked_to_leave_at_its_age() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.max_connection_age = Duration::from_secs(2))
        .spawn()
        .await;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer.write_all(&hello()).await.unwrap();
    let ended = read_until_closed(reader, Duration::from_secs(6))
        .await
        .expect("an old connection is closed within 6 s");
    assert_eq!(ended.goaway, Some(0), "GOAWAY NO_ERROR first: {ended:?}");
    // 2 s ± 10 %, then at most a second for the client to answer.
    assert!(ended.after >= Duration::from_millis(1700), "{ended:?}");
    assert!(ended.after < Duration::from_secs(4), "{ended:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_cap_are_refused_at_once() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.max_requests_in_flight = 2)
        .spawn()
        .await;
    // Two Watch streams stay in flight.
    let mut watches = Vec::new();
    for _ in 0..2 {
        let mut watch = HealthClient::new(app.channel.clone())
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        watch.message().await.unwrap().expect("the current status");
        watches.push(watch);
    }
    let refused = health(&app.channel).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let (status, headers, _) =
        twig_tests::http1(app.addr, "GET /no/such/route HTTP/1.1", b"").await;
    assert!(status.contains("503"), "{status}");
    assert_eq!(twig_tests::header(&headers, "retry-after"), Some("1"));
    // A finished request gives its place back.
    drop(watches);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health(&app.channel).await.unwrap(), 1);
    app.stop().await;
}
