//! The metrics recorder keeps a bounded amount of memory whether or not
//! anything scrapes `/metrics`: a million requests through the
//! [`TraceLayer`] (the metric calls every request makes) with the
//! recorder installed as the binary installs it, and no scrape, leave the
//! resident set within a few MB of where it started.
//!
//! Its own test binary (the recorder is process-wide), with the binary's
//! allocator; nothing else runs in this process while it measures.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use tower::{Layer, Service, ServiceExt};
use twig_server::TraceLayer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The process's resident set in bytes, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

async fn drive<S>(service: &mut S, requests: usize)
where
    S: Service<http::Request<()>, Response = http::Response<()>, Error = Infallible>,
{
    for _ in 0..requests {
        let request = http::Request::builder()
            .method("POST")
            .uri("/grpc.health.v1.Health/Check")
            .header("content-type", "application/grpc")
            .body(())
            .expect("request");
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_requests_without_a_scrape_keep_memory_flat() {
    let handle = twig_server::install_recorder().expect("recorder");
    let mut service = TraceLayer.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "0")
                .body(())
                .expect("response"),
        )
    }));

    // The series exist and the allocator has its pools (and the upkeep
    // has freed its first drained blocks) before measuring.
    drive(&mut service, 500_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = resident_bytes();
    let started = Instant::now();
    drive(&mut service, 1_000_000).await;
    let elapsed = started.elapsed();
    let after = resident_bytes();
    let grown = after.saturating_sub(before);
    eprintln!(
        "1,000,000 requests in {elapsed:?}: resident {} KiB → {} KiB ({} KiB more)",
        before / 1024,
        after / 1024,
        grown / 1024
    );
    // Kept until the first scrape, a million samples grew it by 20 MB
    // here. Folded into their buckets every second, what stays is the last
    // second's samples and drained blocks not yet freed (the recorder
    // frees them through an epoch collector, in batches): 0.5 to 3 MB
    // alone, up to 5 MB with the whole suite running beside it (the
    // upkeep thread then runs late).
    assert!(
        grown < 8 * 1024 * 1024,
        "resident memory grew by {} KiB over a million requests without a scrape",
        grown / 1024
    );

    // The samples were counted, not dropped.
    let page = handle.render();
    assert!(
        page.lines().any(|line| line.starts_with(
            r#"twig_rpc_duration_seconds_count{service="grpc.health.v1.Health",method="Check"} 1500000"#
        )),
        "{page}"
    );
}
