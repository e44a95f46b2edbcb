//! The edge as a module of the suite: `Authorize`, the HTTP/JSON routes,
//! and (composed by the binary) forwarding to services in other
//! processes: their gRPC calls, and their browser routes.

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use twig_module::{Context, CredentialCheck, Module, ModuleError, Port};
use twig_proto::edge::v1::authorize_service_server::AuthorizeServiceServer;
use twig_quota::RequestCounting;

use crate::{Authorizer, CredentialRouter, SERVICE_NAME};

/// The edge: the front door's decisions and HTTP/JSON surface.
pub struct EdgeModule;

/// The module the binary lists.
pub static MODULE: EdgeModule = EdgeModule;

impl Module for EdgeModule {
    fn name(&self) -> &'static str {
        "edge"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn migrate<'a>(&'a self, _db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        // The edge keeps no tables.
        Box::pin(async { Ok(()) })
    }

    fn needs(&self) -> &'static [&'static str] {
        &[CredentialCheck::NAME, RequestCounting::NAME]
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let name = self.name();
            let credentials = CredentialRouter::new(cx.need_all::<CredentialCheck>());
            let quota = cx.need::<RequestCounting>();
            let authorizer = Authorizer::new(credentials, quota, cx.access_policy());
            let max_message = cx.max_message_bytes();
            cx.serve(
                AuthorizeServiceServer::new(crate::grpc::AuthorizeGrpc::new(authorizer))
                    .max_decoding_message_size(max_message),
            );
            // The HTTP/JSON routes call the gRPC routes through the same
            // auth layer, so both surfaces get one and the same decision.
            cx.http_routes(move |grpc| {
                crate::json::router(twig_proto::catalogue::Catalogue::get(), grpc)
                    .map_err(|e| ModuleError::setup(name, "the HTTP/JSON routes", e))
            });
            // The edge is the front door: calls to a service in another
            // process go on there, after the same decision as local ones.
            cx.forward_remote_calls(|service, channel, credential| {
                axum::Router::new().route_service(
                    &format!("/{service}/{{*rest}}"),
                    crate::Forward::new(service, channel, credential),
                )
            });
            // Browser routes of a module in another process go on there
            // over HTTP, with the client as the edge saw it.
            let trust = twig_web::EdgeTrust::new(None, &cx.config().server.trusted_proxies);
            let timeout = cx.config().remote.timeout;
            cx.forward_remote_browser_routes(move |prefix, address, credential| {
                twig_web::BrowserForward::new(address, credential, trust.clone(), timeout)
                    .router(prefix)
            });
            Ok(())
        })
    }
}
