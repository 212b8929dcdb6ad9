//! `peercache serve`'s client-authentication flags: the token file and whether
//! `/metrics` needs a token too. (A module of the binary, not of the library.)

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use peercache::auth::Tokens;
use peercache::http::ClientAuth;

/// Client authentication of the HTTP API.
#[derive(Args)]
pub struct AuthArgs {
    /// A file of client tokens, one `ROLE TOKEN` a line (roles read, write, admin; `#`
    /// starts a comment line; tokens at least 16 bytes): HTTP requests then need
    /// `Authorization: Bearer TOKEN`, except /healthz and /metrics. Without it the API
    /// is open.
    #[arg(long, env = "PEERCACHE_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Require an admin token for /metrics too.
    #[arg(long, env = "PEERCACHE_AUTH_METRICS", requires = "auth_file")]
    auth_metrics: bool,
}

impl AuthArgs {
    /// The tokens of --auth-file, read now so that a bad file stops the start.
    pub fn client_auth(&self) -> anyhow::Result<Option<ClientAuth>> {
        let Some(path) = &self.auth_file else {
            return Ok(None);
        };
        let tokens = Tokens::load(path)?;
        tracing::info!(tokens = tokens.len(), file = %path.display(), metrics = self.auth_metrics, "clients authenticate with bearer tokens");
        Ok(Some(ClientAuth {
            tokens: Arc::new(tokens),
            protect_metrics: self.auth_metrics,
        }))
    }
}
