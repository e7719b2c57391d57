//! The GitHub login connector: an OAuth App (GitHub's web application flow).
//!
//! The browser goes to `<web_url>/login/oauth/authorize` with `state` and a PKCE challenge; the
//! callback's code is exchanged at `<web_url>/login/oauth/access_token` (client id and secret in
//! the form, JSON answer), then the API is read with that token: `GET /user`, `GET /user/emails`
//! (the primary verified address when the profile hides it), `GET /user/orgs` and
//! `GET /user/teams` (groups `org` and `org/team`). The token is used for these calls only and
//! then dropped. Both base URLs are configurable for GitHub Enterprise and for the tests' stand-in.

use super::{LoginSecrets, UpstreamError, fetch_json, http_client};
use crate::config;
use crate::store::User;
use serde::Deserialize;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

/// The GitHub connector.
#[derive(Debug)]
pub struct GithubConnector {
    config: config::Upstream,
    http: reqwest::Client,
}

impl GithubConnector {
    /// A connector for `config`.
    pub fn new(config: config::Upstream) -> Result<GithubConnector, UpstreamError> {
        Ok(GithubConnector {
            config,
            http: http_client()?,
        })
    }

    fn web(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.config.github_url.as_str().trim_end_matches('/')
        )
    }

    /// GitHub's authorization URL for this login.
    pub fn authorization_url(&self, secrets: &LoginSecrets, redirect_uri: &str) -> String {
        let mut url = self.web("/login/oauth/authorize");
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &secrets.state)
            .append_pair("code_challenge", &secrets.challenge())
            .append_pair("code_challenge_method", "S256")
            .append_pair("allow_signup", "false")
            .finish();
        url.push('?');
        url.push_str(&query);
        url
    }

    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        path: &str,
        token: &str,
    ) -> Result<T, UpstreamError> {
        let url = format!(
            "{}{path}",
            self.config.github_api_url.as_str().trim_end_matches('/')
        );
        let request = self
            .http
            .get(url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        fetch_json(step, request).await
    }

    /// An API list that may be withheld: empty (and a debug line) when it cannot be read.
    async fn optional<T: serde::de::DeserializeOwned + Default>(
        &self,
        step: &'static str,
        path: &str,
        token: &str,
    ) -> T {
        self.api(step, path, token).await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "GitHub {step} not readable; continuing without");
            T::default()
        })
    }

    /// Exchanges the code and reads the user, their e-mail, organisations and teams.
    pub async fn finish(
        &self,
        code: &str,
        secrets: &LoginSecrets,
        redirect_uri: &str,
    ) -> Result<User, UpstreamError> {
        let request = self
            .http
            .post(self.web("/login/oauth/access_token"))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("client_id", self.config.client_id.as_str()),
                (
                    "client_secret",
                    self.config
                        .client_secret
                        .as_ref()
                        .map_or("", |s| s.expose()),
                ),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &secrets.verifier),
            ]);
        // GitHub answers a bad code with 200 and an `error` field.
        let answer: TokenResponse = fetch_json("token", request).await?;
        let token = match (answer.access_token, answer.error) {
            (Some(token), None) => token,
            (_, error) => {
                return Err(UpstreamError::Refused(
                    error.unwrap_or_else(|| "no access token".into()),
                ));
            }
        };
        let user: GithubUser = self.api("user", "/user", &token).await?;
        // E-mails, organisations and teams need scopes a user or an organisation's policy may
        // withhold (GitHub answers 403/404 then). Without them the user simply has no e-mail or
        // fewer groups: the allow-list can only refuse more, never let in more.
        let email = match user.email {
            Some(email) => Some(email),
            None => self
                .optional::<Vec<Email>>("emails", "/user/emails", &token)
                .await
                .into_iter()
                .find(|e| e.primary && e.verified)
                .map(|e| e.email),
        };
        let orgs: Vec<Org> = self.optional("orgs", "/user/orgs", &token).await;
        let teams: Vec<Team> = self.optional("teams", "/user/teams", &token).await;
        let mut groups: Vec<String> = orgs.into_iter().map(|o| o.login).collect();
        for team in teams {
            if !groups.contains(&team.organization.login) {
                groups.push(team.organization.login.clone());
            }
            groups.push(format!("{}/{}", team.organization.login, team.slug));
        }
        Ok(User {
            sub: format!("github:{}", user.id),
            login: Some(user.login),
            name: user.name,
            email,
            groups,
        })
    }
}
