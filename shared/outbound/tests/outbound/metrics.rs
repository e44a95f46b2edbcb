//! The metrics: counted per purpose and outcome, never by URL or host.

use crate::common::{Reply, TestServer};
use crate::{client, get, local_config};
use twig_outbound::Purpose;

#[test]
fn requests_are_counted_by_purpose_and_outcome() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let server = TestServer::start(|_, seen| match seen.path.as_str() {
                "/ok" => Reply::ok("fine"),
                _ => Reply::status(404, &[], b""),
            })
            .await;
            let client = client(&local_config());
            client
                .send(Purpose::JWKS, get(&server.url("/ok")))
                .await
                .unwrap();
            client
                .send(Purpose::JWKS, get(&server.url("/ok")))
                .await
                .unwrap();
            client
                .send(Purpose::JWKS, get(&server.url("/missing")))
                .await
                .unwrap();
            client
                .send(Purpose::OIDC_DISCOVERY, get("http://169.254.169.254/"))
                .await
                .unwrap_err();
        });
    });
    let page = handle.render();
    for line in [
        r#"twig_outbound_requests_total{purpose="jwks",outcome="success"} 2"#,
        r#"twig_outbound_requests_total{purpose="jwks",outcome="client_error"} 1"#,
        r#"twig_outbound_requests_total{purpose="oidc_discovery",outcome="forbidden_address"} 1"#,
        r#"twig_outbound_duration_seconds_count{purpose="jwks"} 3"#,
    ] {
        assert!(page.contains(line), "{line} not in\n{page}");
    }
    assert!(
        !page.contains("127.0.0.1") && !page.contains("169.254"),
        "{page}"
    );
}
