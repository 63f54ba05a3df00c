//! What the export service asks the integrations service (role service): every connected
//! Shopify shop and a shop's token (the daily statistics), and a tenant's Resend key
//! (scheduled exports by email).

use haven_auth::ServiceCredentials;
use haven_proto::integrations::v1 as ipb;
use haven_proto::integrations::v1::integrations_service_client::IntegrationsServiceClient;
use haven_shopify::ShopDomain;
use secrecy::{ExposeSecret, SecretString};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::statistics::StatError;

/// A connected shop.
#[derive(Debug, Clone)]
pub struct Shop {
    pub tenant: Uuid,
    pub domain: ShopDomain,
}

/// A shop's token, fetched when it is needed (tokens expire; the service refreshes them).
pub struct ShopToken {
    pub token: SecretString,
    pub domain: ShopDomain,
}

#[derive(Clone)]
pub struct Integrations {
    channel: Channel,
    credentials: ServiceCredentials,
}

impl Integrations {
    pub fn new(channel: Channel, credentials: ServiceCredentials) -> Self {
        Integrations {
            channel,
            credentials,
        }
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, StatError> {
        let mut request = tonic::Request::new(message);
        let value = self
            .credentials
            .authorization()
            .map_err(|e| StatError::Integrations(format!("no service credential: {e}")))?;
        let value = value.expose_secret().parse().map_err(|_| {
            StatError::Integrations("the service token is not a header value".into())
        })?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    /// Every connected Shopify shop, of every tenant.
    pub async fn all(&self) -> Result<Vec<Shop>, StatError> {
        let mut client = IntegrationsServiceClient::new(self.channel.clone());
        let mut shops = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_shopify_shops(self.request(ipb::ListShopifyShopsRequest {
                    page_size: 500,
                    page_token,
                })?)
                .await
                .map_err(|s| StatError::Integrations(format!("ListShopifyShops: {}", s.message())))?
                .into_inner();
            for shop in page.shops {
                let (Ok(tenant), Ok(domain)) = (
                    shop.tenant_id.parse::<Uuid>(),
                    ShopDomain::parse(&shop.shop_domain),
                ) else {
                    tracing::warn!(shop = %shop.shop_domain, tenant = %shop.tenant_id, "skipping a shop the integrations service listed with an invalid id or domain");
                    continue;
                };
                shops.push(Shop { tenant, domain });
            }
            if page.next_page_token.is_empty() {
                return Ok(shops);
            }
            page_token = page.next_page_token;
        }
    }

    /// The tenant's Shopify token and the shop it is for; NotFound-like errors say the
    /// tenant has no connected shop.
    pub async fn token(&self, tenant: Uuid) -> Result<ShopToken, StatError> {
        let mut client = IntegrationsServiceClient::new(self.channel.clone());
        let response = client
            .get_access_token(self.request(ipb::GetAccessTokenRequest {
                tenant_id: tenant.to_string(),
                provider: "shopify".into(),
                min_valid_seconds: 300,
            })?)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
                    StatError::NoShop(s.message().to_owned())
                }
                _ => StatError::Integrations(format!("GetAccessToken: {}", s.message())),
            })?
            .into_inner();
        let domain = ShopDomain::parse(&response.shop_domain).map_err(|e| {
            StatError::Integrations(format!("GetAccessToken named an invalid shop: {e}"))
        })?;
        Ok(ShopToken {
            token: SecretString::from(response.access_token),
            domain,
        })
    }

    /// The tenant's Resend API key; `None` when the tenant has not connected Resend.
    pub async fn resend_key(&self, tenant: Uuid) -> Result<Option<SecretString>, StatError> {
        let mut client = IntegrationsServiceClient::new(self.channel.clone());
        match client
            .get_access_token(self.request(ipb::GetAccessTokenRequest {
                tenant_id: tenant.to_string(),
                provider: "resend".into(),
                min_valid_seconds: 0,
            })?)
            .await
        {
            Ok(r) => Ok(Some(SecretString::from(r.into_inner().access_token))),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                Ok(None)
            }
            Err(s) => Err(StatError::Integrations(format!(
                "GetAccessToken: {}",
                s.message()
            ))),
        }
    }
}
