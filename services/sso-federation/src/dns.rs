//! DNS TXT lookups for domain proofs.
//!
//! One resolver per process, asking the configured servers
//! (`sso_federation.dns_servers`) or the system's. Nothing is cached: a
//! proof is checked against what DNS says now, so a record published a
//! moment ago is seen and one taken down is not.

use std::sync::Arc;

use futures::future::BoxFuture;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::SsoConfig;

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name has no TXT records (or does not exist).
    #[error("no TXT record at {0}")]
    NotFound(String),
    /// DNS did not answer usefully (timeout, server failure, refused).
    #[error("DNS did not answer for {name}: {reason}")]
    Unavailable {
        /// The name asked.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// TXT lookups (a trait so the domain rules can be tested without DNS).
pub trait TxtLookup: Send + Sync {
    /// Every TXT record at `name` (an ASCII domain name), each record's
    /// strings joined as RFC 7208 §3.3 joins them.
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
}

/// TXT lookups through hickory-resolver.
pub struct HickoryTxt {
    resolver: TokioResolver,
}

impl HickoryTxt {
    /// A resolver for `config`'s servers (or the system's), without a
    /// cache.
    pub fn new(config: &SsoConfig) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.dns_servers.is_empty() {
            Resolver::builder(provider).map_err(|e| {
                format!("cannot read the system's DNS configuration (/etc/resolv.conf): {e}")
            })?
        } else {
            let mut resolvers = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            for server in &config.dns_servers {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                resolvers.add_name_server(name_server);
            }
            Resolver::builder_with_config(resolvers, provider)
        };
        let options = builder.options_mut();
        options.timeout = config.dns_timeout;
        options.attempts = 2;
        options.cache_size = 0;
        options.ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(Self { resolver })
    }

    /// As a shared [`TxtLookup`].
    pub fn shared(self) -> Arc<dyn TxtLookup> {
        Arc::new(self)
    }
}

impl TxtLookup for HickoryTxt {
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            // Fully qualified: no search domains are tried.
            let fqdn = format!("{}.", name.trim_end_matches('.'));
            match self.resolver.txt_lookup(fqdn.as_str()).await {
                Ok(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect()),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                    Err(DnsError::NotFound(name.to_string()))
                }
                Err(e) => Err(DnsError::Unavailable {
                    name: name.to_string(),
                    reason: e.to_string(),
                }),
            }
        })
    }
}
