//! The gRPC edge: checks the caller, calls [`Core`], maps errors to statuses.

use std::sync::Arc;
use std::time::Duration;

use haven_auth::{Principal, principal_of};
use haven_proto::integrations::v1 as pb;
use haven_proto::integrations::v1::integrations_service_server::IntegrationsService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::core::{Core, StepState, parse_provider};
use crate::registry;
use crate::store::StepStatus;
use haven_proto::time::timestamp;

/// Tokens handed out are good for at least this long unless the caller asks for more.
const DEFAULT_MIN_VALID: Duration = Duration::from_secs(300);

pub struct Api {
    core: Arc<Core>,
}

impl Api {
    pub fn new(core: Arc<Core>) -> Self {
        Api { core }
    }

    async fn progress(&self, tenant: Uuid) -> Result<pb::SetupProgress, Status> {
        let (wizard, others) = self.core.setup_progress(tenant).await?;
        let view = |(step, status, at): StepState| pb::SetupStep {
            key: step.key.to_owned(),
            label: step.label.to_owned(),
            provider: step
                .provider
                .map(|p| p.as_str())
                .unwrap_or_default()
                .to_owned(),
            status: pb::SetupStepStatus::from(status) as i32,
            updated_at: at.map(timestamp),
        };
        let steps: Vec<pb::SetupStep> = wizard.into_iter().map(view).collect();
        let completed = steps
            .iter()
            .filter(|s| s.status == pb::SetupStepStatus::Completed as i32)
            .count();
        let complete = steps
            .iter()
            .all(|s| s.status != pb::SetupStepStatus::Pending as i32);
        Ok(pb::SetupProgress {
            completed_count: i32::try_from(completed).unwrap_or(i32::MAX),
            complete,
            steps,
            other_steps: others.into_iter().map(view).collect(),
        })
    }
}

/// The principal of a call under optional authentication, if it sent a token.
fn maybe_principal<T>(request: &Request<T>) -> Option<Principal> {
    request.extensions().get::<Principal>().cloned()
}

#[tonic::async_trait]
impl IntegrationsService for Api {
    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        principal_of(&request)?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: registry::providers().map(|p| p.to_proto()).collect(),
        }))
    }

    async fn list_integrations(
        &self,
        request: Request<pb::ListIntegrationsRequest>,
    ) -> Result<Response<pb::ListIntegrationsResponse>, Status> {
        let principal = principal_of(&request)?;
        let rows = self.core.list(principal.tenant_id).await?;
        Ok(Response::new(pb::ListIntegrationsResponse {
            integrations: rows.iter().map(pb::Integration::from).collect(),
        }))
    }

    async fn get_integration(
        &self,
        request: Request<pb::GetIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let principal = principal_of(&request)?;
        let provider = parse_provider(&request.get_ref().provider)?;
        let row = self.core.get(principal.tenant_id, provider).await?;
        Ok(Response::new(pb::Integration::from(&row)))
    }

    async fn begin_o_auth(
        &self,
        request: Request<pb::BeginOAuthRequest>,
    ) -> Result<Response<pb::BeginOAuthResponse>, Status> {
        let principal = principal_of(&request)?;
        let r = request.get_ref();
        let provider = parse_provider(&r.provider)?;
        let begun = self
            .core
            .begin_oauth(&principal, provider, &r.shop, &r.redirect_uri)
            .await?;
        Ok(Response::new(pb::BeginOAuthResponse {
            authorize_url: begun.start_url,
            state_expires_at: Some(timestamp(begun.state_expires_at)),
            start_expires_at: Some(timestamp(begun.start_expires_at)),
        }))
    }

    async fn start_o_auth(
        &self,
        request: Request<pb::StartOAuthRequest>,
    ) -> Result<Response<pb::StartOAuthResponse>, Status> {
        let r = request.into_inner();
        let provider = parse_provider(&r.provider)?;
        let started = self
            .core
            .start_oauth(provider, &r.ticket)
            .await
            .inspect_err(
                |e| tracing::info!(provider = provider.as_str(), error = %e, "OAuth start refused"),
            )?;
        Ok(Response::new(pb::StartOAuthResponse {
            authorize_url: started.authorize_url,
            browser_binding: started.browser_binding,
            state_expires_at: Some(timestamp(started.state_expires_at)),
        }))
    }

    async fn complete_o_auth(
        &self,
        request: Request<pb::CompleteOAuthRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let principal = maybe_principal(&request);
        let r = request.into_inner();
        let query: Vec<(String, String)> = r.query.into_iter().collect();
        let provider = parse_provider(&r.provider)?;
        let row = self
            .core
            .complete_oauth(principal.as_ref(), provider, query, &r.browser_binding)
            .await
            .inspect_err(|e| {
                tracing::info!(provider = provider.as_str(), error = %e, "OAuth callback rejected")
            })?;
        Ok(Response::new(pb::Integration::from(&row)))
    }

    async fn connect_api_key(
        &self,
        request: Request<pb::ConnectApiKeyRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let principal = principal_of(&request)?;
        let r = request.get_ref();
        let provider = parse_provider(&r.provider)?;
        let row = self
            .core
            .connect_api_key(&principal, provider, &r.api_key)
            .await?;
        Ok(Response::new(pb::Integration::from(&row)))
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let principal = principal_of(&request)?;
        let provider = parse_provider(&request.get_ref().provider)?;
        let row = self.core.disconnect(&principal, provider).await?;
        Ok(Response::new(pb::Integration::from(&row)))
    }

    async fn get_access_token(
        &self,
        request: Request<pb::GetAccessTokenRequest>,
    ) -> Result<Response<pb::GetAccessTokenResponse>, Status> {
        let principal = principal_of(&request)?;
        if !principal.is_service() {
            return Err(Status::permission_denied(
                "GetAccessToken is for role service only",
            ));
        }
        let r = request.get_ref();
        let tenant: Uuid = r
            .tenant_id
            .parse()
            .map_err(|_| Status::invalid_argument("tenant_id: must be a UUID"))?;
        if !principal.may_act_for(tenant) {
            return Err(Status::permission_denied(
                "tenant_id: this service token is limited to its own tenant; mint one for this tenant or with the all-tenants scope",
            ));
        }
        let min_valid = match r.min_valid_seconds {
            0 => DEFAULT_MIN_VALID,
            s if s > 86_400 => {
                return Err(Status::invalid_argument(
                    "min_valid_seconds: at most 86400 (one day)",
                ));
            }
            s => Duration::from_secs(u64::from(s)),
        };
        let provider = parse_provider(&r.provider)?;
        let token = self.core.access_token(tenant, provider, min_valid).await?;
        tracing::info!(%tenant, provider = provider.as_str(), caller = ?principal.user_id, "access token handed out");
        Ok(Response::new(pb::GetAccessTokenResponse {
            access_token: token.token.expose().to_owned(),
            expires_at: token.expires_at.map(timestamp),
            scopes: token.scopes,
            shop_domain: token.shop_domain.unwrap_or_default(),
        }))
    }

    async fn list_shopify_shops(
        &self,
        request: Request<pb::ListShopifyShopsRequest>,
    ) -> Result<Response<pb::ListShopifyShopsResponse>, Status> {
        let principal = principal_of(&request)?;
        if !principal.is_service() {
            return Err(Status::permission_denied(
                "ListShopifyShops is for role service only",
            ));
        }
        let r = request.get_ref();
        let limit = match r.page_size {
            0 => 500,
            n @ 1..=1000 => i64::from(n),
            _ => {
                return Err(haven_server::invalid_argument("page_size", "at most 1000"));
            }
        };
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<Uuid>().map_err(|_| {
                haven_server::invalid_argument("page_token", "not a token from a previous page")
            })?),
        };
        let tenant = match principal.scope {
            haven_auth::TenantScope::AllTenants => None,
            haven_auth::TenantScope::Tenant => Some(principal.tenant_id),
        };
        let rows = self.core.connected_shops(tenant, after, limit).await?;
        let next_page_token = if rows.len() as i64 == limit {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListShopifyShopsResponse {
            shops: rows
                .into_iter()
                .map(|r| pb::ShopifyShop {
                    tenant_id: r.tenant_id.to_string(),
                    integration_id: r.id.to_string(),
                    shop_domain: r.shop_domain,
                    connected_at: r.connected_at.map(timestamp),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn get_setup_progress(
        &self,
        request: Request<pb::GetSetupProgressRequest>,
    ) -> Result<Response<pb::SetupProgress>, Status> {
        let principal = principal_of(&request)?;
        Ok(Response::new(self.progress(principal.tenant_id).await?))
    }

    async fn update_setup_step(
        &self,
        request: Request<pb::UpdateSetupStepRequest>,
    ) -> Result<Response<pb::SetupProgress>, Status> {
        let principal = principal_of(&request)?;
        let r = request.get_ref();
        let status = match pb::SetupStepStatus::try_from(r.status) {
            Ok(pb::SetupStepStatus::Pending) => StepStatus::Pending,
            Ok(pb::SetupStepStatus::Completed) => StepStatus::Completed,
            Ok(pb::SetupStepStatus::Skipped) => StepStatus::Skipped,
            Ok(pb::SetupStepStatus::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "status: must be PENDING, COMPLETED or SKIPPED",
                ));
            }
        };
        self.core.update_step(&principal, &r.step, status).await?;
        Ok(Response::new(self.progress(principal.tenant_id).await?))
    }

    async fn list_pinterest_boards(
        &self,
        request: Request<pb::ListPinterestBoardsRequest>,
    ) -> Result<Response<pb::ListPinterestBoardsResponse>, Status> {
        let principal = principal_of(&request)?;
        let (boards, synced_at) = self.core.pinterest_boards(principal.tenant_id).await?;
        Ok(Response::new(pb::ListPinterestBoardsResponse {
            boards: boards
                .into_iter()
                .map(|b| pb::PinterestBoard {
                    board_id: b.board_id,
                    name: b.name,
                    pin_count: b.pin_count,
                    synced_at: Some(timestamp(b.synced_at)),
                })
                .collect(),
            synced_at: synced_at.map(timestamp),
        }))
    }

    async fn list_activity(
        &self,
        request: Request<pb::ListActivityRequest>,
    ) -> Result<Response<pb::ListActivityResponse>, Status> {
        let principal = principal_of(&request)?;
        let limit = match request.get_ref().limit {
            0 => 50,
            n @ 1..=200 => i64::from(n),
            _ => return Err(haven_server::invalid_argument("limit", "at most 200")),
        };
        let entries = self.core.activity(principal.tenant_id, limit).await?;
        Ok(Response::new(pb::ListActivityResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::ActivityEntry {
                    id: e.id.to_string(),
                    user_id: e.user_id.unwrap_or_default(),
                    action: e.action.as_str().to_owned(),
                    provider: e.provider.as_str().to_owned(),
                    details_json: e.details.to_string(),
                    at: Some(timestamp(e.at)),
                })
                .collect(),
        }))
    }
}
