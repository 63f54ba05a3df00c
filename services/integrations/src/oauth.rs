//! OAuth for Shopify and Pinterest: single-use hashed states, Shopify's HMAC check, PKCE,
//! the code exchange and what follows a connection.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use haven_auth::Principal;
use haven_providers::pinterest::PinterestClient;
use haven_providers::pkce;
use haven_shopify::ShopDomain;
use haven_vault::{CredentialKind, Owner};
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::core::{Core, wrong_auth};
use crate::error::{Error, Result};
use crate::machine::{self, Event};
use crate::metadata::{Metadata, PinterestMetadata, ShopifyMetadata};
use crate::registry::{self, Auth, Provider};
use crate::store::{self, IntegrationRow};

/// How long a user has to finish authorizing.
pub const STATE_TTL: Duration = Duration::from_secs(600);
/// Oldest Shopify callback timestamp accepted (and furthest in the future, for clock skew).
pub const SHOPIFY_CALLBACK_MAX_AGE: i64 = 90;

fn hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

impl Core {
    /// Creates a single-use state and returns the provider's authorize URL with its expiry.
    pub async fn begin_oauth(
        &self,
        principal: &Principal,
        provider: Provider,
        shop: &str,
        redirect_uri: &str,
    ) -> Result<(String, DateTime<Utc>)> {
        let info = registry::info(provider);
        if info.auth != Auth::OAuth {
            return Err(wrong_auth(&info));
        }
        let callback = self.callback_url(provider);
        if !redirect_uri.is_empty() && redirect_uri != callback {
            return Err(Error::invalid(format!(
                "redirect_uri: `{redirect_uri}` is not an allowed callback; leave it empty to use {callback}"
            )));
        }
        // The shop (Shopify only) and the PKCE verifier (providers that document PKCE).
        let (shop, verifier) = match provider {
            Provider::Shopify => {
                if shop.trim().is_empty() {
                    return Err(Error::invalid(
                        "shop: required for Shopify, e.g. `my-store.myshopify.com`",
                    ));
                }
                let shop =
                    ShopDomain::parse(shop).map_err(|e| Error::invalid(format!("shop: {e}")))?;
                (Some(shop), None)
            }
            Provider::Pinterest => {
                if !shop.is_empty() {
                    return Err(Error::invalid(format!(
                        "shop: only Shopify takes a shop, not {}",
                        info.name
                    )));
                }
                (None, PinterestClient::supports_pkce().then(pkce::verifier))
            }
            Provider::Klaviyo
            | Provider::DynamicMockups
            | Provider::Resend
            | Provider::SkyPilot => return Err(wrong_auth(&info)),
        };
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let state = URL_SAFE_NO_PAD.encode(bytes);
        let sealed_verifier = verifier.as_ref().map(|v| {
            self.ring.seal(
                v,
                Owner {
                    tenant_id: principal.tenant_id,
                    provider: provider.as_str(),
                    kind: CredentialKind::PkceVerifier,
                },
            )
        });
        let expires_at = Utc::now()
            + chrono::Duration::from_std(STATE_TTL).unwrap_or(chrono::Duration::minutes(10));
        store::insert_state(
            &self.pool,
            &store::NewState {
                hash: &hash(&state),
                tenant: principal.tenant_id,
                user: &principal.user_id,
                provider,
                shop_domain: shop.as_ref().map(ShopDomain::as_str),
                redirect_uri: &callback,
                verifier: sealed_verifier.as_ref(),
                expires_at,
            },
        )
        .await?;
        let mut tx = self.pool.begin().await?;
        let current = store::lock_or_create(&mut tx, principal.tenant_id, provider).await?;
        let status = machine::next(current.status, Event::ConnectAttempt);
        store::set_status(&mut tx, current.id, status).await?;
        tx.commit().await?;
        let url = match shop {
            Some(shop) => self
                .providers
                .shopify
                .authorize_url(shop.as_str(), &state, &callback),
            None => {
                let challenge = verifier.as_ref().map(pkce::challenge_s256);
                self.providers
                    .pinterest
                    .authorize_url(&state, &callback, challenge.as_deref())
            }
        };
        Ok((url, expires_at))
    }

    /// Finishes OAuth from the callback's query. The state authenticates the call; when a
    /// principal is present it must be the state's tenant.
    pub async fn complete_oauth(
        &self,
        principal: Option<&Principal>,
        provider: Provider,
        query: Vec<(String, String)>,
    ) -> Result<IntegrationRow> {
        let info = registry::info(provider);
        let params: BTreeMap<&str, &str> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match provider {
            Provider::Shopify => {
                // Checked before the state is touched, so a forged callback cannot burn it.
                if !params.contains_key("hmac") {
                    return Err(Error::invalid("query: the Shopify callback has no hmac"));
                }
                if !haven_shopify::verify_callback(&query, &self.providers.shopify_secret) {
                    return Err(Error::PermissionDenied(
                        "query: the Shopify callback's hmac does not verify".into(),
                    ));
                }
                let ts: i64 = params
                    .get("timestamp")
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| {
                        Error::invalid("query: the Shopify callback has no valid timestamp")
                    })?;
                let age = Utc::now().timestamp() - ts;
                if !(-SHOPIFY_CALLBACK_MAX_AGE..=SHOPIFY_CALLBACK_MAX_AGE).contains(&age) {
                    return Err(Error::PermissionDenied(format!(
                        "query: the Shopify callback is {age} s old; at most {SHOPIFY_CALLBACK_MAX_AGE} s is accepted, start connecting again"
                    )));
                }
            }
            // Pinterest signs nothing: the state alone authenticates its callback.
            Provider::Pinterest => {}
            Provider::Klaviyo
            | Provider::DynamicMockups
            | Provider::Resend
            | Provider::SkyPilot => {
                return Err(Error::invalid(format!(
                    "provider: {} does not use OAuth",
                    info.name
                )));
            }
        }
        let state = params
            .get("state")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid("query: state is missing"))?;
        let state_hash = hash(state);

        let mut tx = self.pool.begin().await?;
        let stored = store::lock_state(&mut tx, &state_hash)
            .await?
            .ok_or_else(|| Error::PermissionDenied("state: unknown OAuth state".into()))?;
        if stored.provider != provider {
            return Err(Error::PermissionDenied(format!(
                "state: this OAuth state was issued for {}, not {provider}",
                stored.provider
            )));
        }
        if let Some(p) = principal
            && p.tenant_id != stored.tenant_id
        {
            return Err(Error::PermissionDenied(
                "state: this OAuth state belongs to another tenant".into(),
            ));
        }
        if stored.consumed_at.is_some() {
            return Err(Error::PermissionDenied(
                "state: this OAuth state was already used; start connecting again".into(),
            ));
        }
        if stored.expires_at <= Utc::now() {
            return Err(Error::PermissionDenied(
                "state: this OAuth state expired (10 minutes); start connecting again".into(),
            ));
        }
        let verifier = match stored.verifier() {
            Some(sealed) => Some(self.ring.open(
                &sealed,
                Owner {
                    tenant_id: stored.tenant_id,
                    provider: provider.as_str(),
                    kind: CredentialKind::PkceVerifier,
                },
            )?),
            None => None,
        };
        store::consume_state(&mut tx, &state_hash).await?;
        tx.commit().await?;

        let tenant = stored.tenant_id;
        let user = stored.user_id.as_str();
        let outcome = async {
            if let Some(error) = params.get("error") {
                let detail = params.get("error_description").copied().unwrap_or(error);
                return Err(Error::FailedPrecondition(format!(
                    "{} authorization was not granted: {detail}",
                    info.name
                )));
            }
            let code = params
                .get("code")
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::invalid("query: code is missing"))?;
            match provider {
                Provider::Shopify => {
                    let shop = params
                        .get("shop")
                        .ok_or_else(|| Error::invalid("query: shop is missing"))?;
                    let shop = ShopDomain::parse(shop)
                        .map_err(|e| Error::invalid(format!("query: shop: {e}")))?;
                    if stored.shop_domain.as_deref() != Some(shop.as_str()) {
                        return Err(Error::PermissionDenied(format!(
                            "query: the callback is for {shop}, but connecting began for {}",
                            stored.shop_domain.as_deref().unwrap_or("another shop")
                        )));
                    }
                    self.finish_shopify(tenant, user, &shop, code).await
                }
                Provider::Pinterest => {
                    self.finish_pinterest(
                        tenant,
                        user,
                        code,
                        &stored.redirect_uri,
                        verifier.as_deref(),
                    )
                    .await
                }
                Provider::Klaviyo
                | Provider::DynamicMockups
                | Provider::Resend
                | Provider::SkyPilot => Err(wrong_auth(&info)),
            }
        }
        .await;
        match outcome {
            Ok(row) => Ok(row),
            Err(e) => {
                let message = match &e {
                    Error::Db(_) | Error::Bus(_) | Error::Vault(_) => {
                        format!("connecting {} failed on our side; try again", info.name)
                    }
                    other => other.to_string(),
                };
                self.fail_connection(tenant, provider, Some(user), &message)
                    .await?;
                Err(e)
            }
        }
    }

    async fn finish_shopify(
        &self,
        tenant: uuid::Uuid,
        user: &str,
        shop_domain: &ShopDomain,
        code: &str,
    ) -> Result<IntegrationRow> {
        let shop = shop_domain.as_str();
        let client = &self.providers.shopify;
        let tokens = client
            .exchange_code(shop, code)
            .await
            .map_err(|e| Error::provider("Shopify refused the authorization code", e))?;
        let info = client
            .shop(shop, &tokens.access_token)
            .await
            .map_err(|e| Error::provider("Shopify shop details could not be read", e))?;
        let scopes = client
            .access_scopes(shop, &tokens.access_token)
            .await
            .map_err(|e| Error::provider("Shopify access scopes could not be read", e))?;
        let row = self
            .store_connection(
                store::Connected {
                    tenant,
                    provider: Provider::Shopify,
                    user,
                    metadata: Metadata::Shopify(ShopifyMetadata {
                        shop_domain: shop_domain.to_string(),
                        shop_name: info.name,
                        access_scopes: scopes.clone(),
                    }),
                    scopes,
                    shop_domain: Some(shop_domain.to_string()),
                    token_expires_at: tokens.expires_at,
                },
                &token_secrets(&tokens),
            )
            .await?;
        self.register_webhooks(&row, &tokens.access_token).await?;
        Ok(row)
    }

    async fn finish_pinterest(
        &self,
        tenant: uuid::Uuid,
        user: &str,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&SecretString>,
    ) -> Result<IntegrationRow> {
        let client = &self.providers.pinterest;
        let tokens = client
            .exchange_code(code, redirect_uri, verifier)
            .await
            .map_err(|e| Error::provider("Pinterest refused the authorization code", e))?;
        let account = client
            .account(&tokens.access_token)
            .await
            .map_err(|e| Error::provider("Pinterest account details could not be read", e))?;
        let boards = client
            .board_count(&tokens.access_token)
            .await
            .map_err(|e| Error::provider("Pinterest boards could not be read", e))?;
        self.store_connection(
            store::Connected {
                tenant,
                provider: Provider::Pinterest,
                user,
                metadata: Metadata::Pinterest(PinterestMetadata {
                    account_name: account
                        .business_name
                        .clone()
                        .unwrap_or_else(|| account.username.clone()),
                    account_id: account.account_id.clone(),
                    board_count: boards,
                }),
                scopes: tokens.scopes.clone(),
                shop_domain: None,
                token_expires_at: tokens.expires_at,
            },
            &token_secrets(&tokens),
        )
        .await
    }
}

fn token_secrets(
    tokens: &haven_providers::TokenSet,
) -> Vec<(CredentialKind, &SecretString, Option<DateTime<Utc>>)> {
    let mut out = vec![(
        CredentialKind::AccessToken,
        &tokens.access_token,
        tokens.expires_at,
    )];
    if let Some(r) = &tokens.refresh_token {
        out.push((
            CredentialKind::RefreshToken,
            r,
            tokens.refresh_token_expires_at,
        ));
    }
    out
}
