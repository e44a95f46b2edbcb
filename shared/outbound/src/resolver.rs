//! The DNS resolver reqwest connects through: it resolves a name and
//! hands on only the addresses the [`AddressPolicy`] allows. The address
//! checked is the address connected to, so a name that answers
//! differently the second time (DNS rebinding) gains nothing.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address::{AddressClass, AddressPolicy};

/// A future resolving a host name to addresses.
pub(crate) type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Where names are resolved: the system resolver, or a table in tests.
pub(crate) trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: String) -> LookupFuture;
}

/// The system resolver (`getaddrinfo` on a blocking thread).
pub(crate) struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> LookupFuture {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.collect())
        })
    }
}

/// Every address of a name was refused. Travels inside reqwest's error
/// as its source; [`OutboundError`](crate::OutboundError) finds it there.
#[derive(Debug)]
pub(crate) struct AddressRefused {
    pub(crate) host: String,
    pub(crate) address: IpAddr,
    pub(crate) class: AddressClass,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to {}, {}",
            self.host, self.address, self.class
        )
    }
}

impl std::error::Error for AddressRefused {}

/// The name resolved to no address at all.
#[derive(Debug)]
struct NoAddresses(String);

impl fmt::Display for NoAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has no address", self.0)
    }
}

impl std::error::Error for NoAddresses {}

/// The resolver given to reqwest.
pub(crate) struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    pub(crate) fn new(policy: Arc<AddressPolicy>, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        let lookup = self.lookup.lookup(host.clone());
        Box::pin(async move {
            let resolved = lookup.await?;
            let mut refused = None;
            let mut allowed = Vec::with_capacity(resolved.len());
            for addr in resolved {
                match policy.check(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(class) => {
                        tracing::debug!(%host, address = %addr.ip(), %class, "address refused");
                        refused.get_or_insert((addr.ip(), class));
                    }
                }
            }
            if allowed.is_empty() {
                return Err(match refused {
                    Some((address, class)) => Box::new(AddressRefused {
                        host,
                        address,
                        class,
                    })
                        as Box<dyn std::error::Error + Send + Sync>,
                    None => Box::new(NoAddresses(host)),
                });
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
