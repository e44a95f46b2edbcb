//! `twig.sso.v1.SsoService` on the wire. The logic is in [`Domains`],
//! [`Connections`], [`SignInPolicy`] and `signin::admit`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use twig_auth::{Principal, principal};
use twig_email::EmailDomain;
use twig_errors::ApiError;
use twig_proto::sso::v1 as pb;
use twig_proto::timestamp as ts;
use uuid::Uuid;

use twig_auth::{Role, require_internal};
use twig_config::Secret;
use twig_email::Email;
use twig_proto::sessions::v1 as spb;

use crate::browser::start_path;
use crate::connection::{Mapping, OidcSettings, Pilot, Preset, Protocol, Stage, connection_name};
use crate::connections::{Connection, ConnectionSpec, Connections};
use crate::domains::{Domains, txt_record_name, txt_record_value};
use crate::entity::domain;
use crate::policy::SignInPolicy;
use crate::social::{Identities, SocialProviders};
use twig_module::{Needed, Users};

/// The gRPC face of single sign-on.
#[derive(Clone)]
pub struct SsoGrpc {
    domains: Arc<Domains>,
    connections: Arc<Connections>,
    policy: SignInPolicy,
    socials: SocialProviders,
    identities: Arc<Identities>,
    users: Needed<Users>,
}

impl SsoGrpc {
    /// Wraps the services.
    pub fn new(
        domains: Arc<Domains>,
        connections: Arc<Connections>,
        socials: SocialProviders,
        identities: Arc<Identities>,
        users: Needed<Users>,
        policy: SignInPolicy,
    ) -> Self {
        Self {
            policy,
            domains,
            connections,
            socials,
            identities,
            users,
        }
    }

    /// Whether the signed-in user has a password.
    async fn has_password(&self, user: Uuid) -> Result<bool, Status> {
        let Some(Users(users)) = self.users.get() else {
            return Err(ApiError::unavailable(
                "the sessions service is not reachable from this process",
            )
            .into());
        };
        Ok(users.sign_in_facts(user).await?.has_password)
    }
}

fn role_from_pb(raw: i32) -> Option<Role> {
    match spb::Role::try_from(raw).ok()? {
        spb::Role::Owner => Some(Role::Owner),
        spb::Role::Admin => Some(Role::Admin),
        spb::Role::Member => Some(Role::Member),
        spb::Role::Unspecified => None,
    }
}

fn role_to_pb(role: Role) -> i32 {
    (match role {
        Role::Owner => spb::Role::Owner,
        Role::Admin => spb::Role::Admin,
        Role::Member => spb::Role::Member,
    }) as i32
}

fn stage_to_pb(stage: Stage) -> i32 {
    (match stage {
        Stage::Off => pb::ConnectionStage::Off,
        Stage::Pilot => pb::ConnectionStage::Pilot,
        Stage::Enforced => pb::ConnectionStage::Enforced,
    }) as i32
}

fn preset_to_pb(preset: Preset) -> i32 {
    (match preset {
        Preset::Generic => pb::OidcPreset::Generic,
        Preset::GoogleWorkspace => pb::OidcPreset::GoogleWorkspace,
        Preset::MicrosoftEntra => pb::OidcPreset::MicrosoftEntra,
    }) as i32
}

fn connection_to_pb(c: &Connection, connections: &Connections) -> pb::Connection {
    let Protocol::Oidc(oidc) = &c.protocol;
    pb::Connection {
        id: c.id.to_string(),
        organization_id: c.org_id.to_string(),
        name: c.name.clone(),
        stage: stage_to_pb(c.stage),
        protocol: Some(pb::connection::Protocol::Oidc(pb::OidcSettings {
            preset: preset_to_pb(oidc.preset),
            issuer: oidc.issuer(connections.presets()).as_str().to_string(),
            tenant: oidc.tenant.clone().unwrap_or_default(),
            client_id: oidc.client_id.clone(),
            client_secret: String::new(),
            client_secret_set: c.has_secret,
            extra_scopes: oidc.extra_scopes.clone(),
        })),
        mapping: Some(pb::AttributeMapping {
            email_claim: c.mapping.email_claim.clone(),
            name_claim: c.mapping.name_claim.clone(),
            groups_claim: c.mapping.groups_claim.clone(),
            group_roles: c
                .mapping
                .group_roles
                .iter()
                .map(|r| pb::GroupRole {
                    group: r.group.clone(),
                    role: role_to_pb(r.role),
                })
                .collect(),
            default_role: role_to_pb(c.mapping.default_role),
        }),
        pilot: Some(pb::Pilot {
            group: c.pilot.group.clone().unwrap_or_default(),
            emails: c.pilot.emails.iter().cloned().collect(),
        }),
        domains: c.domains.clone(),
        created_at: Some(ts(c.created_at)),
        updated_at: Some(ts(c.updated_at)),
        start_path: start_path(c.id, None),
    }
}

/// The spec of a request, checked.
fn spec_from_pb(raw: Option<pb::ConnectionSpec>) -> Result<ConnectionSpec, Status> {
    let raw = raw.ok_or_else(|| ApiError::invalid_field("connection", "is required"))?;
    let name = connection_name(&raw.name)?;
    let (protocol, client_secret) = match raw.protocol {
        Some(pb::connection_spec::Protocol::Oidc(oidc)) => {
            let preset = match pb::OidcPreset::try_from(oidc.preset) {
                Ok(pb::OidcPreset::Generic) => Preset::Generic,
                Ok(pb::OidcPreset::GoogleWorkspace) => Preset::GoogleWorkspace,
                Ok(pb::OidcPreset::MicrosoftEntra) => Preset::MicrosoftEntra,
                _ => {
                    return Err(ApiError::invalid_field(
                        "connection.oidc.preset",
                        "must be GENERIC, GOOGLE_WORKSPACE or MICROSOFT_ENTRA",
                    )
                    .into());
                }
            };
            let settings = OidcSettings::new(
                preset,
                &oidc.issuer,
                &oidc.tenant,
                &oidc.client_id,
                &oidc.extra_scopes,
            )?;
            if oidc.client_secret.len() > 4096 {
                return Err(ApiError::invalid_field(
                    "connection.oidc.client_secret",
                    "must be at most 4096 characters",
                )
                .into());
            }
            let secret = (!oidc.client_secret.is_empty()).then(|| Secret::new(oidc.client_secret));
            (Protocol::Oidc(settings), secret)
        }
        None => {
            return Err(ApiError::invalid_field("connection.oidc", "is required").into());
        }
    };
    let mapping = match raw.mapping {
        None => Mapping::default(),
        Some(m) => Mapping::new(
            &m.email_claim,
            &m.name_claim,
            &m.groups_claim,
            m.group_roles
                .into_iter()
                .map(|r| (r.group, role_from_pb(r.role)))
                .collect(),
            (m.default_role != 0).then(|| role_from_pb(m.default_role)),
        )?,
    };
    let pilot = match raw.pilot {
        None => Pilot::default(),
        Some(p) => Pilot::new(&p.group, &p.emails)?,
    };
    twig_errors::fields::distinct(
        "connection.domains",
        &raw.domains,
        crate::connection::MAX_RULES,
    )?;
    let domains = raw
        .domains
        .iter()
        .map(|d| {
            EmailDomain::parse(d).map_err(|why| ApiError::invalid_field("connection.domains", why))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ConnectionSpec {
        name,
        protocol,
        client_secret,
        mapping,
        pilot,
        domains,
    })
}

fn me<T>(request: &Request<T>) -> Result<Principal, Status> {
    principal(request).cloned().map_err(Status::from)
}

fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid_field(field, "must be a UUID").into())
}

fn domain_to_pb(d: &domain::Model) -> pb::Domain {
    let (record_name, record_value) = match EmailDomain::parse(&d.domain) {
        Ok(name) => (txt_record_name(&name), txt_record_value(&d.token)),
        Err(_) => (String::new(), String::new()),
    };
    pb::Domain {
        id: d.id.to_string(),
        organization_id: d.org_id.to_string(),
        domain: d.domain.clone(),
        state: if d.proved_domain.is_some() {
            pb::DomainState::Verified
        } else {
            pb::DomainState::Pending
        } as i32,
        txt_record_name: record_name,
        txt_record_value: record_value,
        created_at: Some(ts(d.created_at)),
        verified_at: d.verified_at.map(ts),
        last_checked_at: d.last_checked_at.map(ts),
    }
}

#[tonic::async_trait]
impl pb::sso_service_server::SsoService for SsoGrpc {
    async fn claim_domain(
        &self,
        request: Request<pb::ClaimDomainRequest>,
    ) -> Result<Response<pb::ClaimDomainResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        twig_errors::fields::exact_text("domain", &r.domain, 300)?;
        let claimed = self.domains.claim(&me, &r.domain).await?;
        Ok(Response::new(pb::ClaimDomainResponse {
            domain: Some(domain_to_pb(&claimed)),
        }))
    }

    async fn verify_domain(
        &self,
        request: Request<pb::VerifyDomainRequest>,
    ) -> Result<Response<pb::VerifyDomainResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("domain_id", &request.get_ref().domain_id)?;
        let proved = self.domains.verify(&me, id).await?;
        Ok(Response::new(pb::VerifyDomainResponse {
            domain: Some(domain_to_pb(&proved)),
        }))
    }

    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        let me = me(&request)?;
        let domains = self.domains.list(&me).await?;
        Ok(Response::new(pb::ListDomainsResponse {
            domains: domains.iter().map(domain_to_pb).collect(),
        }))
    }

    async fn delete_domain(
        &self,
        request: Request<pb::DeleteDomainRequest>,
    ) -> Result<Response<pb::DeleteDomainResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("domain_id", &request.get_ref().domain_id)?;
        self.domains.delete(&me, id).await?;
        Ok(Response::new(pb::DeleteDomainResponse {}))
    }

    async fn create_connection(
        &self,
        request: Request<pb::CreateConnectionRequest>,
    ) -> Result<Response<pb::CreateConnectionResponse>, Status> {
        let me = me(&request)?;
        let spec = spec_from_pb(request.into_inner().connection)?;
        let made = self.connections.create(&me, spec).await?;
        Ok(Response::new(pb::CreateConnectionResponse {
            connection: Some(connection_to_pb(&made, &self.connections)),
        }))
    }

    async fn update_connection(
        &self,
        request: Request<pb::UpdateConnectionRequest>,
    ) -> Result<Response<pb::UpdateConnectionResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let id = parse_id("connection_id", &r.connection_id)?;
        let spec = spec_from_pb(r.connection)?;
        let changed = self.connections.update(&me, id, spec).await?;
        Ok(Response::new(pb::UpdateConnectionResponse {
            connection: Some(connection_to_pb(&changed, &self.connections)),
        }))
    }

    async fn get_connection(
        &self,
        request: Request<pb::GetConnectionRequest>,
    ) -> Result<Response<pb::GetConnectionResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("connection_id", &request.get_ref().connection_id)?;
        let found = self.connections.get(&me, id).await?;
        Ok(Response::new(pb::GetConnectionResponse {
            connection: Some(connection_to_pb(&found, &self.connections)),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let me = me(&request)?;
        let all = self.connections.list(&me).await?;
        Ok(Response::new(pb::ListConnectionsResponse {
            connections: all
                .iter()
                .map(|c| connection_to_pb(c, &self.connections))
                .collect(),
        }))
    }

    async fn delete_connection(
        &self,
        request: Request<pb::DeleteConnectionRequest>,
    ) -> Result<Response<pb::DeleteConnectionResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("connection_id", &request.get_ref().connection_id)?;
        self.connections.delete(&me, id).await?;
        Ok(Response::new(pb::DeleteConnectionResponse {}))
    }

    async fn set_connection_stage(
        &self,
        request: Request<pb::SetConnectionStageRequest>,
    ) -> Result<Response<pb::SetConnectionStageResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let id = parse_id("connection_id", &r.connection_id)?;
        let stage = match pb::ConnectionStage::try_from(r.stage) {
            Ok(pb::ConnectionStage::Off) => Stage::Off,
            Ok(pb::ConnectionStage::Pilot) => Stage::Pilot,
            Ok(pb::ConnectionStage::Enforced) => Stage::Enforced,
            _ => {
                return Err(
                    ApiError::invalid_field("stage", "must be OFF, PILOT or ENFORCED").into(),
                );
            }
        };
        let changed = self.connections.set_stage(&me, id, stage).await?;
        Ok(Response::new(pb::SetConnectionStageResponse {
            connection: Some(connection_to_pb(&changed, &self.connections)),
        }))
    }

    async fn test_mapping(
        &self,
        request: Request<pb::TestMappingRequest>,
    ) -> Result<Response<pb::TestMappingResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let id = parse_id("connection_id", &r.connection_id)?;
        if r.claims_json.len() > 64 * 1024 {
            return Err(ApiError::invalid_field("claims_json", "must be at most 64 KiB").into());
        }
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.claims_json).map_err(|e| {
                ApiError::invalid_field("claims_json", format!("must be a JSON object: {e}"))
            })?;
        let connection = self.connections.get(&me, id).await?;
        let mut answer = pb::TestMappingResponse::default();
        // What the mapping reads, whatever the decision.
        let mapping = &connection.mapping;
        answer.email = claims
            .get(&mapping.email_claim)
            .and_then(|v| v.as_str())
            .map(|e| {
                Email::parse(e)
                    .map(|e| e.as_str().to_string())
                    .unwrap_or_else(|_| e.to_string())
            })
            .unwrap_or_default();
        match crate::signin::admit(&connection, &claims) {
            Ok(mapped) => {
                answer.email = mapped.email.as_str().to_string();
                answer.name = mapped.name;
                answer.groups = mapped.groups;
                answer.role = role_to_pb(mapped.role);
                answer.accepted = true;
            }
            Err(refusal) => {
                answer.refusal = refusal.to_string();
            }
        }
        Ok(Response::new(answer))
    }

    async fn discover_sign_in(
        &self,
        request: Request<pb::DiscoverSignInRequest>,
    ) -> Result<Response<pb::DiscoverSignInResponse>, Status> {
        let raw = &request.get_ref().email;
        twig_errors::fields::exact_text("email", raw, 320)?;
        let email = Email::parse(raw).map_err(|why| ApiError::invalid_field("email", why))?;
        let found = self.policy.discover(&email).await?;
        Ok(Response::new(pb::DiscoverSignInResponse {
            method: if found.use_sso {
                pb::SignInMethod::Sso
            } else {
                pb::SignInMethod::Password
            } as i32,
            start_path: found.sso_start.unwrap_or_default(),
            password_allowed: found.password_allowed,
        }))
    }

    async fn list_sign_in_providers(
        &self,
        _request: Request<pb::ListSignInProvidersRequest>,
    ) -> Result<Response<pb::ListSignInProvidersResponse>, Status> {
        Ok(Response::new(pb::ListSignInProvidersResponse {
            providers: self
                .socials
                .all()
                .map(|p| pb::SignInProvider {
                    name: p.name.clone(),
                    display_name: p.display_name.clone(),
                    start_path: crate::social::start_path(&p.name),
                })
                .collect(),
        }))
    }

    async fn list_sign_in_methods(
        &self,
        request: Request<pb::ListSignInMethodsRequest>,
    ) -> Result<Response<pb::ListSignInMethodsResponse>, Status> {
        let me = me(&request)?;
        let linked = self.identities.of(me.user_id).await?;
        Ok(Response::new(pb::ListSignInMethodsResponse {
            has_password: self.has_password(me.user_id).await?,
            linked: linked
                .iter()
                .map(|i| pb::LinkedIdentity {
                    id: i.id.to_string(),
                    provider: i.provider.clone(),
                    email: i.email.clone(),
                    created_at: Some(ts(i.created_at)),
                    last_used_at: i.last_used_at.map(ts),
                })
                .collect(),
        }))
    }

    async fn remove_sign_in_method(
        &self,
        request: Request<pb::RemoveSignInMethodRequest>,
    ) -> Result<Response<pb::RemoveSignInMethodResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("method_id", &request.get_ref().method_id)?;
        let has_password = self.has_password(me.user_id).await?;
        self.identities
            .remove(me.user_id, me.org_id, id, has_password)
            .await?;
        Ok(Response::new(pb::RemoveSignInMethodResponse {}))
    }

    async fn check_password_sign_in(
        &self,
        request: Request<pb::CheckPasswordSignInRequest>,
    ) -> Result<Response<pb::CheckPasswordSignInResponse>, Status> {
        require_internal(&request)?;
        use twig_module::{PasswordPolicy as _, PasswordSignIn};
        let answer = self
            .policy
            .password_sign_in(&request.get_ref().email)
            .await?;
        Ok(Response::new(match answer {
            PasswordSignIn::Allowed => pb::CheckPasswordSignInResponse {
                allowed: true,
                start_path: String::new(),
                organization_id: String::new(),
            },
            PasswordSignIn::UseSso { org_id, start_path } => pb::CheckPasswordSignInResponse {
                allowed: false,
                start_path,
                organization_id: org_id.to_string(),
            },
        }))
    }
}
