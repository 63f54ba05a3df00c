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
use subtle::ConstantTimeEq;

use crate::core::{Core, wrong_auth};
use crate::error::{Error, Result};
use crate::machine::{self, Event};
use crate::metadata::{Metadata, PinterestMetadata, ShopifyMetadata};
use crate::registry::{self, Auth, Provider};
use crate::store::{self, IntegrationRow};

/// How long a user has to finish authorizing.
pub const STATE_TTL: Duration = Duration::from_secs(600);
/// How long the start link works (once): enough for a page to navigate to it at once, too
/// short to be passed on to someone else.
pub const START_TTL: Duration = Duration::from_secs(60);
/// Oldest Shopify callback timestamp accepted (and furthest in the future, for clock skew).
pub const SHOPIFY_CALLBACK_MAX_AGE: i64 = 90;

fn hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

/// 256 random bits, base64url: states, start tickets and browser bindings.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn after(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(1))
}

/// Where StartOAuth sends the browser, and what the gateway sets as its cookie.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: String,
    pub browser_binding: String,
    pub state_expires_at: DateTime<Utc>,
}

/// What BeginOAuth hands out: the gateway's one-time start link.
#[derive(Debug)]
pub struct Begun {
    pub start_url: String,
    pub state_expires_at: DateTime<Utc>,
    pub start_expires_at: DateTime<Utc>,
}

impl Core {
    /// Creates a single-use state and returns the one-time start link that binds it to the
    /// browser that opens it. The state that travels to the provider is only made then.
    pub async fn begin_oauth(
        &self,
        principal: &Principal,
        provider: Provider,
        shop: &str,
        redirect_uri: &str,
    ) -> Result<Begun> {
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
        // A placeholder state, never revealed: StartOAuth replaces it.
        let placeholder = random_token();
        let ticket = random_token();
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
        let expires_at = after(STATE_TTL);
        let start_expires_at = after(START_TTL);
        store::insert_state(
            &self.pool,
            &store::NewState {
                hash: &hash(&placeholder),
                tenant: principal.tenant_id,
                user: &principal.user_id,
                provider,
                shop_domain: shop.as_ref().map(ShopDomain::as_str),
                redirect_uri: &callback,
                verifier: sealed_verifier.as_ref(),
                expires_at,
                ticket_hash: &hash(&ticket),
                ticket_expires_at: start_expires_at,
            },
        )
        .await?;
        let mut tx = self.pool.begin().await?;
        let current = store::lock_or_create(&mut tx, principal.tenant_id, provider).await?;
        let status = machine::next(current.status, Event::ConnectAttempt);
        store::set_status(&mut tx, current.id, status).await?;
        tx.commit().await?;
        Ok(Begun {
            start_url: format!("{}?ticket={ticket}", self.start_url(provider)),
            state_expires_at: expires_at,
            start_expires_at,
        })
    }

    /// The attempt's PKCE verifier, opened, when it has one.
    fn verifier_of(
        &self,
        stored: &store::OAuthState,
        provider: Provider,
    ) -> Result<Option<haven_vault::Secret>> {
        let Some(sealed) = stored.verifier() else {
            return Ok(None);
        };
        Ok(Some(self.ring.open(
            &sealed,
            Owner {
                tenant_id: stored.tenant_id,
                provider: provider.as_str(),
                kind: CredentialKind::PkceVerifier,
            },
        )?))
    }

    /// Uses up a start link's ticket: makes the state that goes to the provider, binds it to
    /// a new browser secret (the gateway's cookie; only its hash is kept) and returns the
    /// provider's authorize URL.
    pub async fn start_oauth(&self, provider: Provider, ticket: &str) -> Result<Started> {
        if ticket.is_empty() {
            return Err(Error::invalid("ticket: is required"));
        }
        let mut tx = self.pool.begin().await?;
        let found = store::lock_ticket(&mut tx, &hash(ticket))
            .await?
            .ok_or_else(|| Error::PermissionDenied("ticket: unknown start link".into()))?;
        if found.state.provider != provider {
            return Err(Error::PermissionDenied(format!(
                "ticket: this start link is for {}, not {provider}",
                found.state.provider
            )));
        }
        if found.started_at.is_some() {
            return Err(Error::PermissionDenied(
                "ticket: this start link was already used; start connecting again".into(),
            ));
        }
        if found.ticket_expires_at.is_none_or(|t| t <= Utc::now())
            || found.state.expires_at <= Utc::now()
            || found.state.consumed_at.is_some()
        {
            return Err(Error::PermissionDenied(format!(
                "ticket: this start link expired ({} s); start connecting again",
                START_TTL.as_secs()
            )));
        }
        let state = random_token();
        let binding = random_token();
        store::start_state(&mut tx, &found.state_hash, &hash(&state), &hash(&binding)).await?;
        let stored = &found.state;
        let verifier = self.verifier_of(stored, provider)?;
        tx.commit().await?;
        let callback = &stored.redirect_uri;
        let authorize_url = match (provider, &stored.shop_domain) {
            (Provider::Shopify, Some(shop)) => {
                self.providers.shopify.authorize_url(shop, &state, callback)
            }
            (Provider::Pinterest, _) => {
                let challenge = verifier.as_deref().map(pkce::challenge_s256);
                self.providers
                    .pinterest
                    .authorize_url(&state, callback, challenge.as_deref())
            }
            (Provider::Shopify, None) => {
                return Err(Error::FailedPrecondition(
                    "ticket: the stored Shopify state has no shop".into(),
                ));
            }
            (
                Provider::Klaviyo
                | Provider::DynamicMockups
                | Provider::Resend
                | Provider::SkyPilot,
                _,
            ) => return Err(wrong_auth(&registry::info(provider))),
        };
        Ok(Started {
            authorize_url,
            browser_binding: binding,
            state_expires_at: stored.expires_at,
        })
    }

    /// Finishes OAuth from the callback's query. The state authenticates the call; when a
    /// principal is present it must be the state's tenant.
    pub async fn complete_oauth(
        &self,
        principal: Option<&Principal>,
        provider: Provider,
        query: Vec<(String, String)>,
        browser_binding: &str,
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
        // The browser that opened the start link, and no other, may finish. Checked before
        // the state is consumed: a callback without the cookie stores nothing.
        let bound = stored.browser_hash.as_deref().is_some_and(|expected| {
            !browser_binding.is_empty()
                && bool::from(expected.ct_eq(hash(browser_binding).as_slice()))
        });
        if !bound {
            return Err(Error::PermissionDenied(
                "browser: this callback did not come from the browser that started connecting; start again from the integrations page in this browser".into(),
            ));
        }
        let verifier = self.verifier_of(&stored, provider)?;
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
                    boards: None,
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
            .boards(&tokens.access_token)
            .await
            .map_err(|e| Error::provider("Pinterest boards could not be read", e))?;
        self.store_connection(
            store::Connected {
                tenant,
                provider: Provider::Pinterest,
                user,
                // As seed 001 stores them: the business name else the username, and the
                // username as the account id.
                metadata: Metadata::Pinterest(PinterestMetadata {
                    account_name: account
                        .business_name
                        .clone()
                        .unwrap_or_else(|| account.username.clone()),
                    account_id: account.username.clone(),
                    board_count: u32::try_from(boards.len()).unwrap_or(u32::MAX),
                }),
                scopes: tokens.scopes.clone(),
                shop_domain: None,
                token_expires_at: tokens.expires_at,
                boards: Some(boards),
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
