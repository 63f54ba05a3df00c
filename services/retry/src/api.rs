//! The gRPC API: enqueue and the error-management calls. Everything is scoped to the
//! caller's tenant; platform admins may look across tenants.

use chrono::Utc;
use haven_auth::{Principal, principal_of};
use haven_proto::retry::v1 as pb;
use haven_proto::retry::v1::retry_service_server::RetryService;
use haven_server::pagination;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::admission::{Admission, Refused};
use crate::consumers::EnqueueBatcher;
use crate::model::Status as ItemStatus;
use crate::store::{Scope, Store, StoreError};
use crate::validate;

pub const DEFAULT_PAGE_SIZE: i32 = 50;

pub struct Api {
    pub store: Store,
    pub enqueue: EnqueueBatcher,
    pub admission: std::sync::Arc<Admission>,
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Status::not_found(format!("retry item {id} not found")),
            StoreError::Precondition(m) => Status::failed_precondition(m),
            StoreError::Unreadable(e) => {
                tracing::error!(error = %e, "unreadable row in the retry store");
                Status::internal(format!(
                    "the retry store holds a row this version cannot read: {e}"
                ))
            }
            StoreError::Db(e) => {
                tracing::error!(error = %e, "database error");
                Status::unavailable("the retry store is unavailable; try again")
            }
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| Status::invalid_argument(format!("id: `{id}` is not a UUID")))
}

/// The tenants a read may cover: one's own; admins any tenant or, with "-", all.
fn read_scope(principal: &Principal, requested: &str) -> Result<Scope, Status> {
    match requested {
        "" => Ok(Scope::Tenant(principal.tenant_id)),
        _ if !principal.is_admin() => Err(Status::permission_denied(
            "tenant_id: only platform admins may read other tenants",
        )),
        "-" => Ok(Scope::All),
        t => Ok(Scope::Tenant(Uuid::parse_str(t).map_err(|_| {
            Status::invalid_argument(format!("tenant_id: `{t}` is not a UUID"))
        })?)),
    }
}

/// Single-item calls: admins reach any item, everyone else only their tenant's.
fn item_scope(principal: &Principal) -> Scope {
    if principal.is_admin() {
        Scope::All
    } else {
        Scope::Tenant(principal.tenant_id)
    }
}

#[tonic::async_trait]
impl RetryService for Api {
    async fn enqueue(
        &self,
        request: Request<pb::EnqueueRequest>,
    ) -> Result<Response<pb::EnqueueResponse>, Status> {
        let principal = principal_of(&request)?;
        // Other services hand failed work to the queue; people act through those services'
        // own APIs, so a user token cannot queue, say, another tenant's token refresh.
        if !principal.is_service() {
            return Err(Status::permission_denied(
                "Enqueue is for role service: users act through the owning service's API",
            ));
        }
        let item = validate::new_item(
            principal.tenant_id,
            Some(principal.user_id.clone()),
            request.get_ref(),
            None,
            Utc::now(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self
            .admission
            .admit(principal.tenant_id, &item.operation_type)
            .await
        {
            Ok(()) => {}
            Err(e @ Refused::NotAllowed(_)) => {
                return Err(Status::permission_denied(e.to_string()));
            }
            Err(e @ Refused::Backlog { .. }) => {
                return Err(Status::resource_exhausted(e.to_string()));
            }
            Err(Refused::Store(e)) => return Err(e.into()),
        }
        match self.enqueue.submit(item).await {
            Ok(Some((row, created))) => Ok(Response::new(pb::EnqueueResponse {
                item: Some(row.to_proto()),
                created,
            })),
            Ok(None) => Err(Status::aborted(
                "a duplicate finished while enqueueing; try again",
            )),
            Err(e) => {
                tracing::error!(error = %e, "enqueue failed");
                Err(Status::unavailable(
                    "the retry store is unavailable; try again",
                ))
            }
        }
    }

    async fn list_retry_items(
        &self,
        request: Request<pb::ListRetryItemsRequest>,
    ) -> Result<Response<pb::ListRetryItemsResponse>, Status> {
        let principal = principal_of(&request)?;
        let req = request.into_inner();
        let status = ItemStatus::from_proto(req.status).map_err(Status::invalid_argument)?;
        let page_size = pagination::page_size(req.page_size, DEFAULT_PAGE_SIZE)?;
        if !req.operation_type.is_empty() {
            validate::operation_type(&req.operation_type)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let scope = read_scope(&principal, &req.tenant_id)?;
        let cursor = pagination::decode(&req.page_token)?;
        let op = (!req.operation_type.is_empty()).then_some(req.operation_type.as_str());
        let page = self
            .store
            .list(scope, status, op, page_size, cursor)
            .await?;
        Ok(Response::new(pb::ListRetryItemsResponse {
            items: page.items.iter().map(|i| i.to_proto()).collect(),
            next_page_token: page
                .next
                .map(|(at, id)| pagination::encode(at, id))
                .unwrap_or_default(),
            total: page.total,
            counts: Some(page.counts.to_proto()),
        }))
    }

    async fn get_retry_item(
        &self,
        request: Request<pb::GetRetryItemRequest>,
    ) -> Result<Response<pb::RetryItem>, Status> {
        let principal = principal_of(&request)?;
        let id = parse_id(&request.get_ref().id)?;
        let (item, attempts) = self.store.get(item_scope(&principal), id).await?;
        let mut out = item.to_proto();
        out.attempt_history = attempts.iter().map(|a| a.to_proto()).collect();
        Ok(Response::new(out))
    }

    async fn retry_now(
        &self,
        request: Request<pb::RetryNowRequest>,
    ) -> Result<Response<pb::RetryItem>, Status> {
        let principal = principal_of(&request)?;
        let id = parse_id(&request.get_ref().id)?;
        let item = self.store.retry_now(item_scope(&principal), id).await?;
        Ok(Response::new(item.to_proto()))
    }

    async fn cancel_retry_item(
        &self,
        request: Request<pb::CancelRetryItemRequest>,
    ) -> Result<Response<pb::RetryItem>, Status> {
        let principal = principal_of(&request)?;
        let id = parse_id(&request.get_ref().id)?;
        let item = self.store.cancel(item_scope(&principal), id).await?;
        Ok(Response::new(item.to_proto()))
    }

    async fn get_retry_stats(
        &self,
        request: Request<pb::GetRetryStatsRequest>,
    ) -> Result<Response<pb::GetRetryStatsResponse>, Status> {
        let principal = principal_of(&request)?;
        let scope = read_scope(&principal, &request.get_ref().tenant_id)?;
        let stats = self.store.stats(scope).await?;
        let mut totals = crate::model::Counts::default();
        let operation_types = stats
            .into_iter()
            .map(|s| {
                totals.pending += s.counts.pending;
                totals.processing += s.counts.processing;
                totals.resolved += s.counts.resolved;
                totals.failed += s.counts.failed;
                totals.cancelled += s.counts.cancelled;
                pb::OperationTypeStats {
                    operation_type: s.operation_type,
                    counts: Some(s.counts.to_proto()),
                    total_attempts: s.total_attempts,
                    oldest_pending_created_at: s.oldest_pending.map(haven_proto::time::timestamp),
                    last_error: s.last_error.unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::GetRetryStatsResponse {
            operation_types,
            totals: Some(totals.to_proto()),
        }))
    }
}
