//! gRPC-web and gRPC bodies as a browser or any client may send them,
//! through the server's own path (gRPC-web translation, the auth layer,
//! the routes, the health service): every input gets an answer, never a
//! panic or a hang.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use tower::{Layer as _, ServiceExt as _};

type Front = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

fn front() -> &'static (tokio::runtime::Runtime, Front) {
    static FRONT: OnceLock<(tokio::runtime::Runtime, Front)> = OnceLock::new();
    FRONT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = runtime.block_on(async {
            let (_, health) = tonic_health::server::health_reporter();
            let routes = tonic::service::Routes::new(health).prepare();
            let auth = twig_auth::AuthLayer::new(
                Arc::new(NoCredentials),
                &twig_config::AuthConfig::default(),
                Vec::new(),
                Arc::new(twig_auth::AccessPolicy::of_twig_apis().unwrap()),
                None,
            );
            let service = tonic_web::GrpcWebLayer::new().layer(auth.layer(routes));
            let service = tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(
                service,
                |e: std::convert::Infallible| match e {},
            );
            tower::util::BoxCloneSyncService::new(service)
        });
        (runtime, service)
    })
}

struct NoCredentials;

impl twig_auth::Authenticator for NoCredentials {
    fn authenticate<'a>(
        &'a self,
        _bearer: &'a str,
        _client_ip: Option<std::net::IpAddr>,
    ) -> twig_auth::principal::AuthFuture<'a> {
        Box::pin(async { Err(twig_errors::ApiError::unauthenticated("no such credential")) })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = match which % 4 {
        0 => "application/grpc-web+proto",
        1 => "application/grpc-web-text",
        2 => "application/grpc-web",
        _ => "application/grpc",
    };
    let mut request = http::Request::post("http://fuzz/grpc.health.v1.Health/Check")
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("te", "trailers");
    if which & 0x10 != 0 {
        request = request.header("authorization", "Bearer twig_sk_fuzz");
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::copy_from_slice(body),
        )))
        .unwrap();
    let (runtime, service) = front();
    runtime.block_on(async {
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let response = service.clone().oneshot(request).await.unwrap();
            response.into_body().collect().await.map(|_| ())
        })
        .await;
        assert!(answer.is_ok(), "no answer within 5 s");
    });
});
