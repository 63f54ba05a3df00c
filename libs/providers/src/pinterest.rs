//! Pinterest API v5: OAuth with continuous refresh tokens, the user account and boards.
//!
//! Docs: <https://developers.pinterest.com/docs/getting-started/set-up-authentication-and-authorization/>
//! and the OpenAPI description <https://github.com/pinterest/api-description/blob/main/v5/openapi.yaml>.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::http::{self, ErrorBody};
use crate::token::RawTokenResponse;
use crate::{HttpSettings, ProviderError, TokenSet};

const PROVIDER: &str = "pinterest";

/// Production API base.
pub const DEFAULT_BASE_URL: &str = "https://api.pinterest.com/v5";
/// Production authorization page.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://www.pinterest.com/oauth/";
/// Largest page `GET /boards` documents.
const BOARDS_PAGE_SIZE: u32 = 250;
/// Stops a provider that keeps returning bookmarks from looping us forever.
const MAX_BOARD_PAGES: usize = 1000;

/// App credentials and where to reach Pinterest.
#[derive(Debug, Clone)]
pub struct PinterestConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    /// e.g. `boards:read`, `pins:write`, `user_accounts:read`.
    pub scopes: Vec<String>,
    /// [`DEFAULT_BASE_URL`] in production.
    pub api_base: String,
    /// [`DEFAULT_AUTHORIZE_URL`] in production.
    pub authorize_url: String,
}

/// The connected account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinterestAccount {
    pub username: String,
    pub business_name: Option<String>,
    /// Pinterest's numeric account id (the username when Pinterest omits it).
    pub account_id: String,
}

/// Client for Pinterest's token endpoint and the account calls the integration needs.
#[derive(Debug, Clone)]
pub struct PinterestClient {
    config: PinterestConfig,
    api_base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RawAccount {
    #[serde(default)]
    id: Option<String>,
    username: String,
    #[serde(default)]
    business_name: Option<String>,
}

/// One of the account's boards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PinterestBoard {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub pin_count: i64,
}

#[derive(Deserialize)]
struct BoardsPage {
    items: Vec<PinterestBoard>,
    #[serde(default)]
    bookmark: Option<String>,
}

impl PinterestClient {
    /// Builds the client; fails on an unusable base URL or if TLS cannot start.
    pub fn new(config: PinterestConfig, http: &HttpSettings) -> Result<Self, ProviderError> {
        let api_base = http::normalize_base(PROVIDER, &config.api_base)?;
        http::normalize_base(PROVIDER, &config.authorize_url)?;
        Ok(PinterestClient {
            http: http::build_client(PROVIDER, http)?,
            api_base,
            config,
        })
    }

    /// Whether Pinterest documents PKCE for its authorization-code flow.
    ///
    /// It does not: neither the authentication guide nor the v5 OpenAPI `oauth/token` request
    /// schema (`grant_type`, `code`, `redirect_uri`, `continuous_refresh`) mention
    /// `code_challenge`/`code_verifier`, so callers rely on the single-use state instead.
    /// The fake still understands PKCE, and [`Self::authorize_url`] passes a challenge through
    /// when given one.
    pub fn supports_pkce() -> bool {
        false
    }

    /// The consent page URL. Scopes are comma-separated, as Pinterest's examples show.
    /// `code_challenge`, when given, is sent with `code_challenge_method=S256`.
    /// <https://developers.pinterest.com/docs/getting-started/set-up-authentication-and-authorization/#step-1-have-the-user-grant-access>
    pub fn authorize_url(
        &self,
        state: &str,
        redirect_uri: &str,
        code_challenge: Option<&str>,
    ) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", &self.config.scopes.join(","))
            .append_pair("state", state);
        if let Some(challenge) = code_challenge {
            query
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
        }
        let base = &self.config.authorize_url;
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{}", query.finish())
    }

    /// Exchanges the code, asking for a continuous (rotating, 60-day) refresh token.
    /// <https://developers.pinterest.com/docs/api/v5/oauth-token/>
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&SecretString>,
    ) -> Result<TokenSet, ProviderError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("continuous_refresh", "true"),
        ];
        if let Some(v) = code_verifier {
            form.push(("code_verifier", v.expose_secret()));
        }
        let mut secrets = vec![self.config.client_secret.expose_secret()];
        if let Some(v) = code_verifier {
            secrets.push(v.expose_secret());
        }
        self.token_request(&form, None, &secrets).await
    }

    /// Refreshes the access token. With continuous refresh Pinterest rotates the refresh
    /// token: the returned one replaces the old (which is kept only if none came back).
    /// <https://developers.pinterest.com/docs/api/v5/oauth-token/>
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, ProviderError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        let secrets = [
            self.config.client_secret.expose_secret(),
            refresh_token.expose_secret(),
        ];
        self.token_request(&form, Some(refresh_token), &secrets)
            .await
    }

    async fn token_request(
        &self,
        form: &[(&str, &str)],
        previous_refresh: Option<&SecretString>,
        secrets: &[&str],
    ) -> Result<TokenSet, ProviderError> {
        let request = self
            .http
            .post(format!("{}/oauth/token", self.api_base))
            .basic_auth(
                &self.config.client_id,
                Some(self.config.client_secret.expose_secret()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form);
        let response = http::execute(PROVIDER, request, ErrorBody::OAuth, secrets).await?;
        let raw: RawTokenResponse = http::read_json(PROVIDER, response).await?;
        raw.into_token_set(PROVIDER, Utc::now(), previous_refresh)
    }

    fn get(&self, url: String, token: &SecretString) -> reqwest::RequestBuilder {
        self.http
            .get(url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Username, business name and id of the token's account.
    /// <https://developers.pinterest.com/docs/api/v5/user_account-get/>
    pub async fn account(&self, token: &SecretString) -> Result<PinterestAccount, ProviderError> {
        let request = self.get(format!("{}/user_account", self.api_base), token);
        let response =
            http::execute(PROVIDER, request, ErrorBody::Api, &[token.expose_secret()]).await?;
        let raw: RawAccount = http::read_json(PROVIDER, response).await?;
        Ok(PinterestAccount {
            account_id: raw
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| raw.username.clone()),
            business_name: raw.business_name.filter(|n| !n.is_empty()),
            username: raw.username,
        })
    }

    /// Every board of the account, following `bookmark` pagination to the end (the first
    /// page alone would miss boards of accounts with many).
    /// <https://developers.pinterest.com/docs/api/v5/boards-list/>
    pub async fn boards(&self, token: &SecretString) -> Result<Vec<PinterestBoard>, ProviderError> {
        let mut boards = Vec::new();
        let mut bookmark: Option<String> = None;
        for _ in 0..MAX_BOARD_PAGES {
            let mut url = url::Url::parse(&format!("{}/boards", self.api_base)).map_err(|_| {
                ProviderError::Rejected {
                    provider: PROVIDER,
                    status: 0,
                    message: "invalid boards URL".into(),
                }
            })?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("page_size", &BOARDS_PAGE_SIZE.to_string());
                if let Some(b) = &bookmark {
                    q.append_pair("bookmark", b);
                }
            }
            let request = self.get(url.to_string(), token);
            let response =
                http::execute(PROVIDER, request, ErrorBody::Api, &[token.expose_secret()]).await?;
            let page: BoardsPage = http::read_json(PROVIDER, response).await?;
            boards.extend(page.items);
            match page.bookmark.filter(|b| !b.is_empty()) {
                Some(next) if Some(&next) != bookmark.as_ref() => bookmark = Some(next),
                Some(_) => {
                    return Err(ProviderError::Malformed {
                        provider: PROVIDER,
                        message: "boards pagination returned the same bookmark twice".into(),
                    });
                }
                None => return Ok(boards),
            }
        }
        Err(ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("boards pagination did not end after {MAX_BOARD_PAGES} pages"),
        })
    }
}
