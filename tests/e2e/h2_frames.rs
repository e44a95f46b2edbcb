//! Hostile HTTP/2 from a client of our own, frame by frame: rapid reset,
//! a flood of frames that make the server reset streams (CVE-2025-8671,
//! "MadeYouReset"), an endless CONTINUATION, PING and SETTINGS floods,
//! and a client that stops reading and writing. Each connection must be
//! closed by the server within a bound, with the process's memory and CPU
//! bounded, and the server must go on answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use twig_tests::{Backend, TestApp};

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
/// GOAWAY's error code when a peer misbehaves (RFC 9113 §7).
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: the 9-byte header (length, type, flags, stream) + payload.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small payload");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The connection preface and an empty SETTINGS frame.
pub(crate) fn hello() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK header block of literal fields without indexing (new names).
pub(crate) fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The header block of a gRPC call to `path`.
pub(crate) fn grpc_request(path: &str) -> Vec<u8> {
    hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

/// A gRPC message frame of `payload` (uncompressed).
pub(crate) fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How a connection ended, as the client saw it.
#[derive(Debug)]
pub(crate) struct Ended {
    /// The error code of the last GOAWAY, if one came.
    pub(crate) goaway: Option<u32>,
    /// From the start of reading to end of stream or reset.
    pub(crate) after: Duration,
}

/// Reads and parses frames until the server closes the connection
/// (end of stream or reset); `None` if it is still open after `bound`.
pub(crate) async fn read_until_closed(mut reader: OwnedReadHalf, bound: Duration) -> Option<Ended> {
    let start = Instant::now();
    let mut pending = Vec::new();
    let mut goaway = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = bound.checked_sub(start.elapsed())?;
        let n = match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some(Ended {
                    goaway,
                    after: start.elapsed(),
                });
            }
            Ok(Ok(n)) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while pending.len() >= 9 {
            let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            if pending.len() < 9 + len {
                break;
            }
            if pending[3] == GOAWAY && len >= 8 {
                let code = &pending[9 + 4..9 + 8];
                goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
            }
            pending.drain(..9 + len);
        }
    }
}

/// Connects, says hello and starts reading in the background.
pub(crate) async fn open(
    addr: SocketAddr,
    bound: Duration,
) -> (
    tokio::net::tcp::OwnedWriteHalf,
    tokio::task::JoinHandle<Option<Ended>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    writer.write_all(&hello()).await.expect("preface");
    let ended = tokio::spawn(read_until_closed(reader, bound));
    (writer, ended)
}

/// Writes `bytes`, giving up quietly when the server has closed or stops
/// reading for `within`.
pub(crate) async fn send(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
    within: Duration,
) {
    let _ = tokio::time::timeout(within, writer.write_all(bytes)).await;
}

/// This process's CPU time (user + system) and resident memory.
pub(crate) fn cpu_and_rss() -> (Duration, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    (Duration::from_millis(ticks * 10), pages * 4096)
}

/// A server whose idle connections close after 2 s and whose pings go
/// out every second, unanswered for at most a second.
async fn server() -> TestApp {
    TestApp::builder(Backend::Sqlite)
        .config(|c| {
            c.server.idle_timeout = Duration::from_secs(2);
            c.server.http2_keepalive_interval = Duration::from_secs(1);
            c.server.http2_keepalive_timeout = Duration::from_secs(1);
        })
        .spawn()
        .await
}

/// The server still answers a new client.
async fn still_serving(app: &TestApp) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .expect("the server accepts a new client");
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        HealthClient::new(channel).check(HealthCheckRequest::default()),
    )
    .await
    .expect("a health check answers within 5 s")
    .expect("health check")
    .into_inner()
    .status;
    assert_eq!(status, 1, "SERVING");
}

/// Runs `attack` against a fresh server and checks the bounds around it:
/// the connection closed (by the time `attack` returns it), at most
/// `max_cpu` of this process's CPU and 200 MB more memory, and the server
/// still serving.
async fn bounded<F, Fut>(max_cpu: Duration, attack: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let app = server().await;
    still_serving(&app).await;
    let (cpu_before, rss_before) = cpu_and_rss();
    attack(app.addr).await;
    let (cpu_after, rss_after) = cpu_and_rss();
    let cpu = cpu_after - cpu_before;
    let grown = rss_after.saturating_sub(rss_before);
    assert!(cpu <= max_cpu, "the attack cost {cpu:?} of CPU");
    assert!(grown < 200 << 20, "memory grew by {} MB", grown >> 20);
    still_serving(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off() {
    bounded(Duration::from_secs(20), |addr| async move {
        let (mut writer, ended) = open(addr, Duration::from_secs(15)).await;
        let block = grpc_request("/grpc.health.v1.Health/Check");
        let mut flood = Vec::new();
        for i in 0..20_000u32 {
            let id = 1 + 2 * i;
            flood.extend(frame(HEADERS, END_HEADERS, id, &block));
            flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        send(&mut writer, &flood, Duration::from_secs(10)).await;
        let ended = ended.await.unwrap().expect("closed within 15 s");
        eprintln!("rapid reset: {ended:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_server_must_reset_are_cut_off_after_1024() {
    bounded(Duration::from_secs(20), |addr| async move {
        let (mut writer, ended) = open(addr, Duration::from_secs(15)).await;
        let block = grpc_request("/grpc.health.v1.Health/Check");
        // Each stream opens, then gets a WINDOW_UPDATE that takes its
        // send window past 2^31-1: a stream error (FLOW_CONTROL_ERROR)
        // the server answers with RST_STREAM.
        let mut flood = Vec::new();
        for i in 0..5_000u32 {
            let id = 1 + 2 * i;
            flood.extend(frame(HEADERS, END_HEADERS, id, &block));
            flood.extend(frame(WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes()));
        }
        send(&mut writer, &flood, Duration::from_secs(10)).await;
        let ended = ended.await.unwrap().expect("closed within 15 s");
        eprintln!("error-reset flood: {ended:?}");
        assert_eq!(ended.goaway, Some(ENHANCE_YOUR_CALM), "{ended:?}");
        assert!(ended.after < Duration::from_secs(2), "{ended:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_continuation_is_cut_off() {
    bounded(Duration::from_secs(20), |addr| async move {
        let (mut writer, ended) = open(addr, Duration::from_secs(15)).await;
        let mut flood = frame(HEADERS, 0, 1, &grpc_request("/grpc.health.v1.Health/Check"));
        let piece = hpack(&[("x-filler", "0123456789")]);
        for _ in 0..100_000 {
            flood.extend(frame(CONTINUATION, 0, 1, &piece));
        }
        send(&mut writer, &flood, Duration::from_secs(10)).await;
        let ended = ended.await.unwrap().expect("closed within 15 s");
        eprintln!("continuation flood: {ended:?}");
    })
    .await;
}

/// A flood of `frame_bytes` from a client that reads nothing: the server
/// must not queue answers without bound, and must close the connection.
async fn unread_flood(addr: SocketAddr, frame_bytes: Vec<u8>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (reader, mut writer) = stream.into_split();
    let mut flood = hello();
    for _ in 0..200_000 {
        flood.extend_from_slice(&frame_bytes);
    }
    let started = Instant::now();
    send(&mut writer, &flood, Duration::from_secs(5)).await;
    // Not read until now; the server must have closed by 8 s.
    let rest = Duration::from_secs(8).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let ended = read_until_closed(reader, Duration::from_secs(2)).await;
    assert!(ended.is_some(), "still open 8 s after the flood began");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_cut_off() {
    bounded(Duration::from_secs(20), |addr| async move {
        unread_flood(addr, frame(PING, 0, 0, &[7; 8])).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_is_cut_off() {
    bounded(Duration::from_secs(20), |addr| async move {
        // SETTINGS_MAX_CONCURRENT_STREAMS = 100, over and over.
        let setting = [0, 3, 0, 0, 0, 100];
        unread_flood(addr, frame(SETTINGS, 0, 0, &setting)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_client_with_a_stream_is_dropped() {
    bounded(Duration::from_secs(10), |addr| async move {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (reader, mut writer) = stream.into_split();
        // A Watch stream stays open on the server: the connection is not
        // idle, so only unanswered pings can find the client gone.
        let mut hello = hello();
        hello.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &grpc_request("/grpc.health.v1.Health/Watch"),
        ));
        hello.extend(frame(DATA, END_STREAM, 1, &grpc_message(&[])));
        writer.write_all(&hello).await.unwrap();
        // Then neither reads nor writes: pings every 1 s, 1 s to answer.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let ended = read_until_closed(reader, Duration::from_secs(2)).await;
        assert!(
            ended.is_some(),
            "still open 6 s after the client went silent"
        );
        drop(writer);
    })
    .await;
}
